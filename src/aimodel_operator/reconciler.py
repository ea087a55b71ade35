"""The reconcile of one AIModel, the Controller's half that runs it (controller.py holds the caches,
the inputs and the running): read the caches, compute the desired children, apply what differs,
write status once, and say when to look again (loop.Result).
"""

from __future__ import annotations

import logging
import time

from . import builders, conditions, metrics
from . import status as status_mod
from .announcer import Announcer
from .builders import Capabilities
from .children import ChildApplier
from .informer import Informer
from .intake import Intake
from .kube import AIMODELS, ApiError, Kube, NotLeading
from .logs import fields
from .loop import DONE, Failed, Result
from .objects import Key, Manifest
from .pulsar_auth.admin import PulsarAdminError
from .pulsar_auth.credentials import Issued
from .refs import SecretRefs
from .scoped import Scoped
from .settings import Settings
from .statusview import StatusView
from .statuswriter import StatusWriter, Written
from .tenants import PULSAR_ADMIN_UNAVAILABLE, Tenants

log = logging.getLogger(__name__)

# A name taken by someone else, or held by a deleted namesake, is looked at again (a read, never a
# write) after 0.5 s, 1 s, 2 s, ... and at most this far apart.
LOOK_AGAIN_MAX_SECONDS = 30.0
# A reconcile refused by the leader's write fence is tried again after about a renewal period.
NOT_LEADING_RETRY_SECONDS = 2.0


class Reconciler:
    """What the reconcile reads and writes; the Controller builds them all."""

    kube: Kube
    settings: Settings
    models: Informer | Scoped
    children: dict[str, Informer | Scoped]
    refs: SecretRefs
    tenants: Tenants
    applier: ChildApplier
    announcer: Announcer
    intake: Intake
    view: StatusView
    status_writer: StatusWriter
    # Per AIModel whose children were all in place at the last reconcile: the model's
    # resourceVersion then, and the problem its status showed. Until something the children
    # depend on changes (an event at Speed.FULL), a report or a pod change only needs the status written.
    _settled: dict[Key, tuple[str, status_mod.Condition | None]]

    @property
    def caps(self) -> Capabilities:
        raise NotImplementedError

    def _model_gone(self, key: Key) -> None:
        raise NotImplementedError

    async def reconcile(self, key: Key) -> Result:
        """Reconcile one AIModel; the result says when to look at it again (loop.py). Raises for
        what is to be retried with growing pauses."""
        try:
            # A model's own Pulsar tokens are renewed on time, whatever else the reconcile found.
            return self.tenants.on_time(key, await self._reconcile(key))
        except Exception as err:
            cause = err.cause if isinstance(err, Failed) else err
            if isinstance(cause, NotLeading):
                # Refused by the write fence: if leadership is really lost the process stops; if
                # not (a renewal is on its way), the work must not be dropped.
                log.debug("not leading: reconcile put off", extra=fields(namespace=key[0], name=key[1]))
                return Result(requeue_after=NOT_LEADING_RETRY_SECONDS)
            if isinstance(cause, ApiError) and cause.namespace_terminating:
                # The namespace, and with it the model, is going away: no retry, no noise.
                log.debug("namespace terminating", extra=fields(namespace=key[0], name=key[1]))
                return DONE
            raise

    async def _reconcile(self, key: Key) -> Result:
        model = self.models.get(*key)
        if model is None or model["metadata"].get("deletionTimestamp"):
            return DONE
        settled = None if self.tenants.renewal_due(key) else self._settled.get(key)
        if settled is not None and settled[0] == model["metadata"].get("resourceVersion"):
            # Only a report or the workers' pods changed: the status is all there is to write.
            return await self._write_status(key, model, settled[1])
        await self.refs.load(model)
        ref_hash = self.refs.key_hash(model)
        started = None
        if ref_hash is None and builders.spec_of(model).get("apiKeySecretRef"):
            started = builders.started_secret_hash(self.view.deployment(model))
        held = self.tenants.held_elsewhere(model)
        if held is not None:
            # Another namespace holds the model name: no workers, no queue credential, no scaling.
            desired = builders.access_children(model)
            self.tenants.forget(key)
        else:
            model_tokens = None
            if self.tenants.credentials is not None:
                model_tokens = (await self._credentials(key, model)).tokens
            desired = builders.children(model, self.settings, self.caps, ref_hash, started, model_tokens)
        outcome = await self.applier.apply_all(model, desired)
        removed: list[str] = []
        if outcome.complete:
            # Only once everything wanted is in place: a Deployment still using the Secret being
            # replaced must not lose it because its successor was refused.
            removed = await self.applier.remove_stale(model, {(c["kind"], c["metadata"]["name"]) for c in desired})
        if outcome.applied or removed:
            self.announcer.changed(model, outcome.applied, removed)
        problem = (
            held
            or conditions.child_conflicts(outcome.conflicts)
            or conditions.apply_failed(outcome.refused)
            or conditions.not_applied(outcome.missing, outcome.errors)
            or conditions.api_key_secret(model, self.refs.keys(model))
        )
        if outcome.complete:
            self._settled[key] = (model["metadata"].get("resourceVersion", ""), problem)
        else:
            self._settled.pop(key, None)
        result = await self._write_status(key, model, problem)
        if outcome.errors:
            raise Failed(outcome.errors[0], result.requeue_after)
        if outcome.conflicts or outcome.pending:
            # Nothing tells us when a stranger's object goes away (it is not in our caches), nor
            # when garbage collection is done with a namesake's: look again (reads only, the
            # conflict already said in status), with growing pauses.
            return Result(requeue_after=result.requeue_after, backoff_cap=LOOK_AGAIN_MAX_SECONDS)
        return result

    async def _credentials(self, key: Key, model: Manifest) -> Issued:
        """The model's Pulsar grants made and its tokens (kept while good); when the Pulsar admin
        fails, the status says so and the reconcile is retried (nothing applied meanwhile)."""
        meta = model["metadata"]
        secret = self.children["Secret"].get(meta["namespace"], builders.secret_name(meta["name"]))
        try:
            return await self.tenants.issue(key, model, secret)
        except PulsarAdminError as err:
            self._settled.pop(key, None)
            problem = status_mod.Condition(status_mod.READY, False, PULSAR_ADMIN_UNAVAILABLE, str(err))
            result = await self._write_status(key, model, problem)
            raise Failed(err, result.requeue_after) from err

    async def _write_status(self, key: Key, model: Manifest, problem: status_mod.Condition | None) -> Result:
        new, again = self.view.compute(key, model, problem)
        sent = time.monotonic()
        result, answer, again_in = await self.status_writer.write(key, model, new)
        if result is Written.STALE:
            return (await self._refresh(key)).sooner(again)
        if result is Written.UNCHANGED:
            self.intake.arrived.pop(key, None)
        if result is Written.WRITTEN:
            self.intake.shown(key, sent, time.monotonic())
            self.announcer.written(key, model, new)
            if answer is not None:
                self.models.remember(answer)
                settled = self._settled.get(key)
                if settled is not None:
                    # Our own status write changed nothing the children are built from.
                    self._settled[key] = (answer["metadata"].get("resourceVersion", ""), settled[1])
        return Result(requeue_after=again_in).sooner(again)

    async def _refresh(self, key: Key) -> Result:
        """The AIModel is not what we read: read it (the watch may lag), forget it if it is gone.

        Read with a list narrowed to its name: the operator's RBAC grants list and watch on
        AIModels, not get (a GET here was refused with 403 under config/default's RBAC).
        """
        live = await self.kube.find(AIMODELS, *key)
        if live is None:
            # Gone: whatever the watch missed, forget it now.
            log.info("gone", extra=fields(namespace=key[0], name=key[1]))
            self._model_gone(key)
            return DONE
        if self.models.remember(live):
            # What the watch has not brought yet: reconciled again in full, at once.
            self._settled.pop(key, None)
            metrics.MODELS.set(len(self.models))
            return Result(requeue_after=0)
        # The cache already holds what the API has: try again a little later.
        return Result(backoff_cap=LOOK_AGAIN_MAX_SECONDS)
