"""A keyed work queue: one reconcile per key at a time, repeated triggers collapse into one.

Like client-go's rate-limited queue it also holds each key's retry state:
``add_rate_limited`` re-queues after a delay that doubles with every failure
in a row, ``forget`` clears it after a success, ``num_requeues`` tells it.

``add_urgent`` puts a key ahead of every ordinary one (a worker's error
report): when a thousand models are queued at once (a node failing, a
resync), the report does not wait behind them.
"""

from __future__ import annotations

import asyncio
from collections import deque

from aimodel_contract import backoff

from . import metrics
from .objects import Key


class WorkQueue:
    def __init__(self, base_delay: float = 0.5, max_delay: float = 300.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[Key, int] = {}
        # One ticket per queued key; the key itself is taken from _urgent first, then _items.
        self._tickets: asyncio.Queue[None] = asyncio.Queue()
        self._items: deque[Key] = deque()
        self._urgent: deque[Key] = deque()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._dirty: set[Key] = set()
        self._dirty_urgent: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}

    def add(self, key: Key) -> None:
        if key in self._active:
            # Picked up again as soon as the running reconcile of this key ends.
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._items.append(key)
            self._tickets.put_nowait(None)
            metrics.QUEUE_DEPTH.set(len(self._queued))

    def add_urgent(self, key: Key) -> None:
        """Queue ``key`` ahead of every key queued by ``add``."""
        if key in self._active:
            self._dirty.add(key)
            self._dirty_urgent.add(key)
            return
        if key in self._queued:
            if key in self._urgent:
                return
            self._items.remove(key)
        else:
            self._queued.add(key)
            self._tickets.put_nowait(None)
            metrics.QUEUE_DEPTH.set(len(self._queued))
        self._urgent.append(key)

    def add_after(self, key: Key, delay: float) -> None:
        timer = self._timers.get(key)
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if timer is not None and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> Key:
        await self._tickets.get()
        key = self._urgent.popleft() if self._urgent else self._items.popleft()
        self._queued.discard(key)
        self._active.add(key)
        metrics.QUEUE_DEPTH.set(len(self._queued))
        return key

    def done(self, key: Key) -> None:
        self._active.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            if key in self._dirty_urgent:
                self._dirty_urgent.discard(key)
                self.add_urgent(key)
            else:
                self.add(key)

    def add_rate_limited(self, key: Key, max_delay: float | None = None) -> float:
        """Re-queue after a failure; the delay doubles with each failure in a row. Returns the delay."""
        attempt = self._failures.get(key, 0)
        self._failures[key] = attempt + 1
        delay = backoff.delay(attempt, self.base_delay, max_delay or self.max_delay, jitter=0)
        self.add_after(key, delay)
        return delay

    def num_requeues(self, key: Key) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: Key) -> None:
        """The key succeeded: its next failure starts from the base delay again."""
        self._failures.pop(key, None)

    def drop(self, key: Key) -> None:
        """The object is gone: no retry state, no pending delayed add."""
        self._failures.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def __len__(self) -> int:
        return len(self._queued)
