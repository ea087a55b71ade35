"""Kubernetes Events on AIModels: what the operator did and why, for humans."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from . import api
from .kube import EVENTS, Kube, NotLeading
from .logs import fields
from .objects import Manifest
from .settings import COMPONENT
from .status import bound, now

log = logging.getLogger(__name__)


class Recorder:
    """Posts Events from a bounded queue with few senders.

    Events are for humans: they must never delay or fail a reconcile, nor
    compete with the writes that make models converge. When a burst
    overflows the queue, the surplus is dropped (and logged).
    """

    def __init__(self, kube: Kube, instance: str, senders: int = 2, capacity: int = 2000) -> None:
        self.kube = kube
        self.instance = instance
        self.senders = senders
        self._queue: asyncio.Queue[tuple[Manifest, str, str, str]] = asyncio.Queue(capacity)
        self._tasks: list[asyncio.Task[Any]] = []

    @property
    def tasks(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send(), name=f"events-{n}") for n in range(self.senders)]

    def event(self, model: Manifest, kind: str, reason: str, message: str) -> None:
        try:
            self._queue.put_nowait((model, kind, reason, message))
        except asyncio.QueueFull:
            meta = model["metadata"]
            log.warning("event dropped", extra=fields(namespace=meta["namespace"], name=meta["name"], reason=reason))

    async def _send(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._post(*item)
            finally:
                self._queue.task_done()

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
        except asyncio.CancelledError:
            raise
        except NotLeading:
            log.debug("event not posted (not leading)", extra=fields(namespace=meta["namespace"], name=meta["name"]))
        except Exception as err:
            log.warning(
                "event not posted",
                extra=fields(namespace=meta["namespace"], name=meta["name"], reason=reason, error=str(err)),
            )

    async def stop(self, timeout: float = 5) -> None:
        """Send what is queued (for at most ``timeout``), then stop the senders."""
        if self._tasks:
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
