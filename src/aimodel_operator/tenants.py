"""What keeps tenants apart on the shared queue (SPEC §9), as the controller uses it.

- Model names: which namespace holds each ``spec.model`` (claims.py decides, from the AIModel
  cache's by-model-name index); when the holder changes, every namesake is woken in full.
- Per-model credentials (only with a Pulsar admin credential and a signing key): the grants made,
  the tokens kept while good and when each is due for renewal, and the periodic pass that
  revokes the grants of models that are gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aimodel_contract as contract

from . import builders, caches, claims
from . import status as status_mod
from .config import Tenancy
from .informer import Informer
from .logs import fields
from .loop import Result
from .objects import Key, Manifest, is_controlled_by
from .pulsar_auth import credentials as credentials_mod
from .pulsar_auth.admin import PulsarAdmin, PulsarAdminError
from .pulsar_auth.credentials import Credentials, Issued
from .scoped import Scoped

log = logging.getLogger(__name__)

# Ready's reason while the Pulsar admin cannot make a model's grants.
PULSAR_ADMIN_UNAVAILABLE = "PulsarAdminUnavailable"


class Tenants:
    def __init__(
        self,
        models: Informer | Scoped,
        res_topic: str,
        admin_url: str,
        tenancy: Tenancy | None,
        wake: Callable[[Key], None],
    ) -> None:
        """``wake``: reconcile a model in full. ``tenancy``: None is the single-token mode."""
        self.models = models
        self.res_topic = res_topic
        self.tenancy = tenancy
        self._wake = wake
        # Per model name: the namespace that holds it, to wake its namesakes when that changes.
        self._holders: dict[str, str] = {}
        models.add_index(caches.BY_MODEL_NAME, caches.model_name, changed=self._namesakes_changed)
        self.credentials: Credentials | None = None
        if tenancy is not None:
            admin = PulsarAdmin(admin_url, tenancy.admin_token)
            self.credentials = Credentials(admin, tenancy.signing_key, tenancy.token_ttl, res_topic)
        # Per model with tokens of its own: when they are due for renewal (epoch seconds).
        self._renew_at: dict[Key, float] = {}

    # -- model names -------------------------------------------------------------

    def holder_namespace(self, name: str) -> str | None:
        keys = self.models.by_index(caches.BY_MODEL_NAME, name)
        return claims.holder_namespace(m for k in keys if (m := self.models.get(*k)) is not None)

    def held_elsewhere(self, model: Manifest) -> status_mod.Condition | None:
        """Ready=False ModelNameInUse when another namespace holds the model's name."""
        return claims.in_use(model, self.holder_namespace(builders.spec_of(model).get("model", "")))

    def _namesakes_changed(self, name: str) -> None:
        """An AIModel began or stopped naming model ``name``: if another namespace holds it now,
        every namesake is reconciled in full (one takes over, or gives up its workers)."""
        holder = self.holder_namespace(name)
        if holder == self._holders.get(name):
            return
        if holder is None:
            del self._holders[name]
            return
        self._holders[name] = holder
        for key in self.models.by_index(caches.BY_MODEL_NAME, name):
            self._wake(key)

    # -- per-model credentials ---------------------------------------------------

    def renewal_due(self, key: Key, now: float | None = None) -> bool:
        due = self._renew_at.get(key)
        return due is not None and (time.time() if now is None else now) >= due

    def on_time(self, key: Key, result: Result) -> Result:
        """``result``, brought forward to when the model's tokens are due for renewal."""
        due = self._renew_at.get(key)
        return result if due is None else result.sooner(max(0.0, due - time.time()))

    def forget(self, key: Key) -> None:
        """The model is gone or holds no credential now (its grants go with the next collection)."""
        self._renew_at.pop(key, None)

    async def issue(self, key: Key, model: Manifest, secret: Manifest | None) -> Issued:
        """The model's grants made and its tokens (those in its Secret, ``secret``, kept while
        good). Raises PulsarAdminError when the admin cannot make the grants."""
        assert self.credentials is not None
        await self.credentials.grant(model)
        meta = model["metadata"]
        if secret is not None and not is_controlled_by(secret, meta["uid"]):
            secret = None
        issued = self.credentials.issue(model, secret)
        self._renew_at[key] = time.time() + issued.renew_in
        return issued

    def wanted_grants(self) -> credentials_mod.Grants:
        """Every grant the models that hold their names should have."""
        out: credentials_mod.Grants = {}
        for key in self.models:
            model = self.models.get(*key)
            if model is None or not builders.spec_of(model).get("model"):
                continue
            if self.held_elsewhere(model) is None:
                out.update(credentials_mod.wanted(model, self.res_topic))
        return out

    async def collect_forever(self) -> None:
        """Level-triggered cleanup of the Pulsar grants of models that are gone (no finalizer)."""
        assert self.credentials is not None and self.tenancy is not None
        namespace = contract.TOPIC_PREFIX.removeprefix("persistent://").rstrip("/")
        while True:
            await asyncio.sleep(self.tenancy.collect_every)
            try:
                await self.credentials.collect(namespace, self.wanted_grants)
            except PulsarAdminError as err:
                log.warning("pulsar grants not collected", extra=fields(error=str(err)))

    async def close(self) -> None:
        if self.credentials is not None:
            await self.credentials.admin.close()
