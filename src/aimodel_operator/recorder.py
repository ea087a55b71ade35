"""Kubernetes Events on AIModels: what the operator did and why, for humans."""

from __future__ import annotations

import asyncio
import logging
import secrets

from . import api
from .builders import Manifest
from .kube import EVENTS, ApiError, Kube
from .settings import COMPONENT
from .status import bound, now

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, kube: Kube, instance: str) -> None:
        self.kube = kube
        self.instance = instance
        self._tasks: set[asyncio.Task] = set()

    def event(self, model: Manifest, kind: str, reason: str, message: str) -> None:
        """Post an Event in the background: it must never delay or fail a reconcile."""
        task = asyncio.create_task(self._post(model, kind, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, model: Manifest, kind: str, reason: str, message: str) -> None:
        meta = model["metadata"]
        stamp = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": api.API_VERSION,
                "kind": api.KIND,
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": kind,
            "reason": reason,
            "message": bound(message),
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.kube.create(EVENTS, meta["namespace"], body)
        except (TimeoutError, ApiError, OSError) as err:
            log.warning(
                "event not posted namespace=%s name=%s reason=%s: %s", meta["namespace"], meta["name"], reason, err
            )

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
