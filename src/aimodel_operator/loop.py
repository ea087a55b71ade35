"""The reconcile loop: keys from the work queue to a reconcile, and its result back to the queue.

The split of controller-runtime (``reconcile.Result`` and the controller's ``reconcileHandler``):
a reconcile reads the caches, acts, and *says* when it wants to run again; only this loop touches
the queue. Nothing here knows what is reconciled.

- a ``Result`` with ``requeue_after``: run again after that long (a timer, not a failure: the
  key's failure count is cleared);
- a ``Result`` with ``backoff_cap``: run again with growing pauses (0.5 s, 1 s, 2 s, ... up to the
  cap) for as long as the reconcile keeps answering so (waiting for something no event announces);
- an exception: a failure, run again with growing pauses up to the queue's maximum (``Failed``:
  and after its ``requeue_after`` at the latest);
- ``Result()``: done until an event queues the key again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import metrics
from .objects import Key
from .workqueue import WorkQueue


@dataclass(frozen=True)
class Result:
    requeue_after: float | None = None
    backoff_cap: float | None = None

    def sooner(self, seconds: float | None) -> Result:
        """This result, run again after ``seconds`` at the latest."""
        if seconds is None or (self.requeue_after is not None and self.requeue_after <= seconds):
            return self
        return Result(requeue_after=seconds, backoff_cap=self.backoff_cap)


DONE = Result()


class Failed(Exception):
    """A failure of a reconcile that had also learned when to look again (a deferred status
    write, a grace period): retried with growing pauses, and after ``requeue_after`` at the latest."""

    def __init__(self, cause: Exception, requeue_after: float | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.requeue_after = requeue_after


class Flag(Protocol):
    """What the loop waits on: an asyncio.Event, or several read as one (scoped.AllSet)."""

    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


Reconcile = Callable[[Key], Awaitable[Result]]
# Told of a failed reconcile: the key, the error, the pause before the next try, and whether it
# is the first failure in a row.
OnError = Callable[[Key, Exception, float, bool], None]


class Loop:
    def __init__(
        self,
        queue: WorkQueue,
        reconcile: Reconcile,
        on_error: OnError,
        gate: Flag | None = None,
        ready: Flag | None = None,
    ) -> None:
        """``gate``: reconcile only while it is set (leadership); ``ready``: wait for it before each
        reconcile (the caches being current)."""
        self.queue = queue
        self.reconcile = reconcile
        self.on_error = on_error
        self.gate = gate
        self.ready = ready

    async def run(self) -> None:
        """One worker: take a key, reconcile it, requeue it as its result says; forever."""
        while True:
            key = await self.queue.get()
            if self.gate is not None and not self.gate.is_set():
                # Leadership lost: act no more (the process is stopping).
                self.queue.done(key)
                await self.gate.wait()
                continue
            if self.ready is not None and not self.ready.is_set():
                await self.ready.wait()
            try:
                await self.handle(key)
            finally:
                self.queue.done(key)

    async def handle(self, key: Key) -> None:
        started = time.monotonic()
        try:
            result = await self.reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            first = self.queue.num_requeues(key) == 0
            delay = self.queue.add_rate_limited(key)
            if isinstance(err, Failed) and err.requeue_after is not None:
                self.queue.add_after(key, err.requeue_after)
            metrics.RECONCILES.labels(result="error").inc()
            self.on_error(key, err.cause if isinstance(err, Failed) else err, delay, first)
        else:
            metrics.RECONCILES.labels(result="ok").inc()
            self.requeue(key, result)
        finally:
            metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

    def requeue(self, key: Key, result: Result) -> None:
        if result.backoff_cap is not None:
            self.queue.add_rate_limited(key, result.backoff_cap)
        else:
            self.queue.forget(key)
        if result.requeue_after is not None:
            self.queue.add_after(key, result.requeue_after)
