"""kopf wiring: thin handlers that feed the controller.

Only an event-watching handler is used for AIModels: it needs no finalizer,
no annotations and no status of kopf's own, so the operator writes nothing
but what the reconciler decides to write.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from . import api
from .kube import Kube, load_configuration
from .reconciler import Controller

log = logging.getLogger(__name__)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's own Kubernetes events describe kopf's handlers, not the AIModels.
    settings.posting.enabled = False
    # kopf's scanning of CRDs stays on: an operator started before its CRD was
    # installed usually begins serving AIModels when it appears (kopf rescans the
    # API on CRD events, and can miss it if discovery lags behind the last one).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    cfg = await load_configuration()
    kube = Kube(cfg)
    controller = Controller(kube, memo.settings, instance=memo.instance, workers=memo.workers, resync=memo.resync)
    memo.kube = kube
    memo.controller = controller
    if memo.elector is not None:
        memo.elector.start(kube)
    await controller.start(gate=memo.elector.leading if memo.elector is not None else None)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    controller: Controller | None = memo.get("controller")
    if controller is not None:
        await controller.stop()
    if memo.elector is not None:
        await memo.elector.release()
    if memo.get("kube") is not None:
        await memo.kube.close()


# Async on purpose: kopf runs sync handlers in a thread pool, and the controller's
# queue and caches belong to the event loop.
@kopf.on.event(api.GROUP, api.VERSION, api.PLURAL)
async def aimodel_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    controller: Controller = memo.controller
    kind = event.get("type") or "ADDED"
    controller.model_event(kind, event["object"])


@kopf.on.probe(id="caches")
def caches_synced(memo: kopf.Memo, **_: Any) -> bool:
    controller: Controller | None = memo.get("controller")
    if controller is None or not controller.synced.is_set():
        raise kopf.PermanentError("caches are not synced yet")
    failed = controller.failed_tasks()
    if failed:
        # Liveness fails and the kubelet restarts the operator: better than running half-dead.
        raise kopf.PermanentError(f"background tasks ended: {', '.join(failed)}")
    return True
