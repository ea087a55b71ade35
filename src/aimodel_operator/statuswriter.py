"""Writing an AIModel's status: at most once per change, batched when it is not urgent.

A change users wait for (the state, a new generation, a condition flipping)
is written at once. Counters and messages that move are batched: the first
such change opens a batch that is written ``batch_seconds`` later with
whatever the status is by then. While such changes keep coming (a worker
reporting ever new messages, pods flapping), each batch is twice as long as
the one before, up to ``max_batch_seconds``: a flood of any length costs a
handful of writes. A quiet spell resets the batch.

Writes that change neither the state nor the generation (a condition
flipping, counters, messages) are also spread over time: across all models
at most ``writes_per_second`` of them, after a burst of ``burst``. When the
pods of a thousand models change readiness at once (a node failing), their
statuses follow at that pace instead of all at once, while a worker's error
report (a state change) and a spec change (a new generation) never wait.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any, NamedTuple

from . import api
from . import status as status_mod
from .kube import AIMODELS, Conflict, Kube, NotFound
from .logs import fields
from .objects import Key, Manifest

log = logging.getLogger(__name__)


class Written(enum.Enum):
    UNCHANGED = "unchanged"
    DEFERRED = "deferred"
    WRITTEN = "written"
    # Refused because the AIModel is no longer the one we read (changed, replaced or deleted).
    STALE = "stale"


class Write(NamedTuple):
    """What a status write did: its result, the API's answer when written, and when deferred, the
    seconds after which the model should be looked at again (the writer never queues anything)."""

    result: Written
    answer: Manifest | None = None
    again_in: float | None = None


class StatusWriter:
    def __init__(
        self,
        kube: Kube,
        batch_seconds: float = 1.0,
        max_batch_seconds: float = 30.0,
        writes_per_second: float = 100.0,
        burst: int = 200,
    ) -> None:
        self.kube = kube
        self.batch_seconds = batch_seconds
        self.max_batch_seconds = max_batch_seconds
        # When the last status write happened, or the first batch of a new model opened.
        self._last: dict[Key, float] = {}
        # The current batch length of each model whose batches follow each other.
        self._batch: dict[Key, float] = {}
        self.writes_per_second = writes_per_second
        self.burst = burst
        # Spreading: the time the next spread write may go, and the times models were given.
        self._next_slot = float("-inf")
        self._slots: dict[Key, float] = {}

    def forget(self, key: Key) -> None:
        self._last.pop(key, None)
        self._batch.pop(key, None)
        self._slots.pop(key, None)

    def _spread(self, key: Key, now: float) -> float:
        """Seconds until ``key`` may write a spread write (0: now). A model keeps the slot it got."""
        slot = self._slots.get(key)
        if slot is not None:
            if slot - now > 0.005:
                return slot - now
            del self._slots[key]
            return 0.0
        if self.writes_per_second <= 0:
            return 0.0
        interval = 1.0 / self.writes_per_second
        # Idle time builds up credit for a burst, no more.
        self._next_slot = max(self._next_slot, now - self.burst * interval) + interval
        if self._next_slot <= now:
            return 0.0
        self._slots[key] = self._next_slot
        return self._next_slot - now

    def _batch_for(self, key: Key, now: float) -> float:
        batch = self._batch.get(key, self.batch_seconds)
        last = self._last.get(key)
        if last is not None and now - last > 2 * batch:
            # Quiet for a while since the last write: back to short batches.
            batch = self.batch_seconds
        return batch

    async def write(self, key: Key, model: Manifest, new: dict[str, Any]) -> Write:
        """Write ``new`` if it differs from the model's status, now or (deferred) later."""
        current = model.get("status")
        if not status_mod.differs(current, new):
            return Write(Written.UNCHANGED)
        batched = not status_mod.urgent(current, new)
        if batched:
            now = time.monotonic()
            batch = self._batch_for(key, now)
            # A batch opens with the first change seen after the last write.
            opened = self._last.setdefault(key, now)
            wait = opened + batch - now
            if wait > 0:
                return Write(Written.DEFERRED, again_in=wait)
        if current and not critical(current, new):
            wait = self._spread(key, time.monotonic())
            if wait > 0:
                return Write(Written.DEFERRED, again_in=wait)
        meta = model["metadata"]
        body = {
            "apiVersion": api.API_VERSION,
            "kind": api.KIND,
            # The resourceVersion makes the write conditional: a status computed from what we read
            # never lands on a newer spec, nor on a same-named successor (the status subresource
            # ignores a uid in the request, but not a resourceVersion).
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "status": new,
        }
        try:
            result = await self.kube.apply(body, AIMODELS, subresource="status")
        except (NotFound, Conflict):
            return Write(Written.STALE)
        now = time.monotonic()
        if batched:
            # Batches that follow each other grow: the next one is twice as long.
            self._batch[key] = min(self.max_batch_seconds, 2 * self._batch_for(key, now))
        else:
            self._batch.pop(key, None)
        self._last[key] = now
        changed = sorted(k for k in new if (current or {}).get(k) != new[k])
        log.info("status", extra=fields(namespace=key[0], name=key[1], state=new["state"], changed=",".join(changed)))
        return Write(Written.WRITTEN, result)


def critical(current: dict[str, Any], new: dict[str, Any]) -> bool:
    """Never spread: the state (a worker's report, a recovery) or the generation the status is for."""
    return any(current.get(f) != new.get(f) for f in status_mod.URGENT_FIELDS)
