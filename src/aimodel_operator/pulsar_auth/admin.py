"""The few calls of Pulsar's admin API (v2, REST) the operator makes with its admin token: topics,
the workers' subscription, and per-topic grants. Every failure is a ``PulsarAdminError`` whose
message names the Pulsar admin, the call and what it answered."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable
from urllib.parse import quote

import aiohttp

from .. import metrics

# Grants of one Pulsar namespace live in one policies record: two changes at once can answer
# 409 (a concurrent modification). Tried again this many times.
CONFLICT_RETRIES = 5
TIMEOUT_SECONDS = 10.0


class PulsarAdminError(Exception):
    """The Pulsar admin API could not do what was asked."""


def rest(topic: str) -> str:
    """``persistent://tenant/ns/name`` as the admin API's path: ``persistent/tenant/ns/name``."""
    scheme, _, rest_of = topic.partition("://")
    return f"{scheme}/" + "/".join(quote(part, safe="") for part in rest_of.split("/"))


def _actions(found: object) -> dict[str, frozenset[str]]:
    """Role -> actions, from the admin's ``{"role": ["consume", ...]}`` (anything else dropped)."""
    if not isinstance(found, dict):
        return {}
    return {
        role: frozenset(a for a in actions if isinstance(a, str))
        for role, actions in found.items()
        if isinstance(role, str) and isinstance(actions, list)
    }


class PulsarAdmin:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _call(self, method: str, path: str, body: object = None, ok: Iterable[int] = ()) -> object:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS))
        for attempt in range(CONFLICT_RETRIES + 1):
            outcome = "unreachable"
            try:
                # Pulsar's admin refuses a PUT or POST without a JSON content type (415), body or not.
                data = json.dumps(body).encode() if body is not None else b""
                headers = {**self._headers, "Content-Type": "application/json"}
                async with self._session.request(method, f"{self.url}{path}", data=data, headers=headers) as resp:
                    text = await resp.text()
                    outcome = str(resp.status)
                    if resp.status < 300 or resp.status in ok:
                        return json.loads(text) if text and resp.status < 300 else None
                    if resp.status == 409 and not ok and attempt < CONFLICT_RETRIES:
                        await asyncio.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
                        continue
                    raise PulsarAdminError(
                        f"the Pulsar admin at {self.url} answered {method} {path} with {resp.status}: {text[:300]}"
                    )
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                raise PulsarAdminError(
                    f"the Pulsar admin at {self.url} could not be reached for {method} {path}: "
                    f"{type(err).__name__} {err}".rstrip()
                ) from err
            finally:
                metrics.PULSAR_ADMIN_REQUESTS.labels(method, outcome).inc()
        raise AssertionError("unreachable")

    async def create_topic(self, topic: str) -> None:
        """A non-partitioned topic, as a producer would create it (409: it exists)."""
        await self._call("PUT", f"/admin/v2/{rest(topic)}", ok=(409,))

    async def create_subscription(self, topic: str, subscription: str) -> None:
        await self._call("PUT", f"/admin/v2/{rest(topic)}/subscription/{quote(subscription, safe='')}", ok=(409,))

    async def topics(self, namespace: str) -> list[str]:
        """The persistent topics of ``tenant/namespace``, as full names."""
        found = await self._call("GET", f"/admin/v2/persistent/{namespace}")
        return [t for t in found if isinstance(t, str)] if isinstance(found, list) else []

    async def namespace_grants(self, namespace: str) -> dict[str, dict[str, frozenset[str]]]:
        """Topic -> role -> actions for every topic-level grant in ``tenant/namespace``: Pulsar keeps
        them in the namespace's policies record, so one read gives them all."""
        found = await self._call("GET", f"/admin/v2/namespaces/{namespace}")
        auth = found.get("auth_policies") if isinstance(found, dict) else None
        topics = auth.get("destination_auth") if isinstance(auth, dict) else None
        if not isinstance(topics, dict):
            return {}
        return {topic: _actions(grants) for topic, grants in topics.items() if isinstance(topic, str)}

    async def grant(self, topic: str, role: str, actions: frozenset[str]) -> None:
        """Exactly ``actions`` for ``role`` on ``topic`` (a grant replaces the role's actions there)."""
        await self._call("POST", f"/admin/v2/{rest(topic)}/permissions/{quote(role, safe='')}", sorted(actions))

    async def revoke(self, topic: str, role: str) -> None:
        await self._call("DELETE", f"/admin/v2/{rest(topic)}/permissions/{quote(role, safe='')}", ok=(404,))
