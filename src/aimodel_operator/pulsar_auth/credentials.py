"""A token per model, granted only what its workers need (SPEC §9).

For an AIModel ``<ns>/<name>`` naming model ``<m>`` the operator keeps two roles:

- ``aimodel:<ns>:<name>`` (its workers): ``consume`` on ``model-<m>``, ``produce`` and
  ``consume`` on ``model-<m>-DLQ`` (the client's dead-letter producer creates the letters'
  subscription), ``produce`` on ``RES_TOPIC_NAME``;
- ``aimodel-stats:<ns>:<name>`` (KEDA): ``consume`` on ``model-<m>``, the least that reads a
  topic's stats (Pulsar checks GET_STATS as "may produce or consume"; nothing narrower exists).

Tokens carry an expiry and are renewed once a third of their life is left. Grants whose model is
gone (or no longer holds its name, or names another model) are revoked by a periodic pass over
the topics' permissions; roles without these prefixes are never touched.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aimodel_contract as contract

from ..builders import SECRET_PULSAR_TOKEN, SECRET_STATS_TOKEN, ModelTokens, spec_of
from ..logs import fields
from ..objects import Manifest
from . import tokens
from .admin import PulsarAdmin, PulsarAdminError

log = logging.getLogger(__name__)

WORKER_PREFIX = "aimodel:"
STATS_PREFIX = "aimodel-stats:"
OUR_PREFIXES = (WORKER_PREFIX, STATS_PREFIX)
CONSUME = frozenset({"consume"})
PRODUCE = frozenset({"produce"})
BOTH = frozenset({"produce", "consume"})

# (topic, role) -> actions
Grants = dict[tuple[str, str], frozenset[str]]


def full_topic(name: str) -> str:
    """A topic as the Pulsar client resolves it: a short name is in public/default."""
    return name if "://" in name else f"{contract.TOPIC_PREFIX}{name}"


def namespace_of(topic: str) -> str:
    """``tenant/namespace`` of a full topic name."""
    return "/".join(topic.partition("://")[2].split("/")[:2])


def roles(namespace: str, name: str) -> tuple[str, str]:
    return f"{WORKER_PREFIX}{namespace}:{name}", f"{STATS_PREFIX}{namespace}:{name}"


def wanted(model: Manifest, res_topic: str) -> Grants:
    """The grants a model's two roles should have, and no others."""
    meta = model["metadata"]
    worker, stats = roles(meta["namespace"], meta["name"])
    name = spec_of(model)["model"]
    return {
        (contract.topic(name), worker): CONSUME,
        (contract.dead_letter_topic(name), worker): BOTH,
        (full_topic(res_topic), worker): PRODUCE,
        (contract.topic(name), stats): CONSUME,
    }


@dataclass(frozen=True)
class Issued:
    tokens: ModelTokens
    renew_in: float  # seconds until the next renewal is due


def _held(secret: Manifest | None, key: str) -> str:
    raw = ((secret or {}).get("data") or {}).get(key)
    try:
        return base64.b64decode(raw).decode() if isinstance(raw, str) else ""
    except (binascii.Error, UnicodeDecodeError):
        return ""


class Credentials:
    def __init__(self, admin: PulsarAdmin, key: bytes, ttl: float, res_topic: str) -> None:
        self.admin = admin
        self.key = key
        self.ttl = ttl
        self.renew_before = ttl / 3
        self.res_topic = res_topic
        # What Pulsar holds, as far as this process knows: read once per Pulsar namespace (its
        # topics, and its policies record, which holds every topic's grants: two reads however
        # many models), then kept with every topic created and every grant made or revoked, and
        # refreshed by each collection. A restart costs two reads, not a few calls per model.
        self._loaded: set[str] = set()
        self._exists: set[str] = set()
        self._known: dict[str, dict[str, frozenset[str]]] = {}
        # One change at a time: a Pulsar namespace's grants share one policies record.
        self._lock = asyncio.Lock()

    async def _load(self, namespace: str) -> None:
        if namespace not in self._loaded:
            await self._refresh(namespace)

    async def _refresh(self, namespace: str) -> dict[str, dict[str, frozenset[str]]]:
        """Read a Pulsar namespace's topics and grants again (two reads), replacing what was known
        of it: a topic deleted, or a grant revoked, by someone else. Returns its grants."""
        topics = set(await self.admin.topics(namespace))
        grants = await self.admin.namespace_grants(namespace)
        self._exists = {t for t in self._exists if namespace_of(t) != namespace} | topics
        self._known = {t: p for t, p in self._known.items() if namespace_of(t) != namespace} | grants
        self._loaded.add(namespace)
        return grants

    async def grant(self, model: Manifest) -> None:
        """Make Pulsar hold the model's grants (calls only for what it does not hold yet)."""
        async with self._lock:
            try:
                await self._grant(model)
            except PulsarAdminError:
                # What this process knew may be what made the call fail (a topic deleted behind
                # its back): read it all again on the next try.
                self._forget()
                raise

    def _forget(self) -> None:
        self._loaded.clear()
        self._exists.clear()
        self._known.clear()

    async def _grant(self, model: Manifest) -> None:
        wanted_now = wanted(model, self.res_topic)
        for namespace in sorted({namespace_of(topic) for topic, _ in wanted_now}):
            await self._load(namespace)
        missing = {
            (topic, role): actions
            for (topic, role), actions in wanted_now.items()
            if self._known.get(topic, {}).get(role) != actions
        }
        if not missing:
            return
        # A grant on a topic that does not exist is refused: create them first, as the gateway's
        # producer would (topics are not in the policies record: at once, not one by one).
        fresh = sorted({topic for topic, _ in missing} - self._exists)
        await asyncio.gather(*(self.admin.create_topic(topic) for topic in fresh))
        self._exists.update(fresh)
        name = spec_of(model)["model"]
        worker, _ = roles(model["metadata"]["namespace"], model["metadata"]["name"])
        first = (contract.topic(name), worker) in missing
        # The workers' subscription, made with their first grant so that KEDA finds a backlog before
        # any worker subscribed, beside the grants (one policies record: those go one at a time).
        calls = [self._grant_each(missing)]
        if first:
            calls.append(self.admin.create_subscription(contract.topic(name), contract.subscription(name)))
        await asyncio.gather(*calls)

    async def _grant_each(self, missing: Grants) -> None:
        for (topic, role), actions in missing.items():
            await self.admin.grant(topic, role, actions)
            self._known.setdefault(topic, {})[role] = actions

    def issue(self, model: Manifest, secret: Manifest | None, now: float | None = None) -> Issued:
        """The model's tokens: those its Secret holds while they are good, else new ones."""
        now = time.time() if now is None else now
        meta = model["metadata"]
        worker_role, stats_role = roles(meta["namespace"], meta["name"])
        out = []
        for role, key in ((worker_role, SECRET_PULSAR_TOKEN), (stats_role, SECRET_STATS_TOKEN)):
            held = _held(secret, key)
            if held and tokens.still_good(held, self.key, role, self.renew_before, now):
                out.append(held)
            else:
                out.append(tokens.mint(self.key, role, int(now + self.ttl)))
        expiries = [c.expires_at for t in out if (c := tokens.read(t, self.key)) and c.expires_at is not None]
        renew_in = max(0.0, min(expiries, default=now + self.ttl) - self.renew_before - now)
        return Issued(ModelTokens(worker=out[0], stats=out[1]), renew_in)

    async def collect(self, namespace: str, still_wanted: Callable[[], Grants]) -> int:
        """Revoke the grants of our roles that no model wants anymore; returns how many.

        ``still_wanted`` is read under the lock, so a model granted meanwhile is not revoked.
        """
        revoked = 0
        async with self._lock:
            keep = still_wanted()
            for pulsar_ns in sorted(self._loaded | {namespace}):
                grants = await self._refresh(pulsar_ns)
                revoked += await self._revoke_unwanted(grants, keep)
        return revoked

    async def _revoke_unwanted(self, grants: dict[str, dict[str, frozenset[str]]], keep: Grants) -> int:
        revoked = 0
        for topic, perms in grants.items():
            for role in list(perms):
                if role.startswith(OUR_PREFIXES) and (topic, role) not in keep:
                    await self.admin.revoke(topic, role)
                    del perms[role]
                    revoked += 1
                    log.info("pulsar grant revoked", extra=fields(topic=topic, role=role))
        return revoked
