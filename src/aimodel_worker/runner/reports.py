"""The worker's error reports, bounded: the same error at most once per REPORT_INTERVAL, and all
together within a global rate. Requests are written by anyone who can publish; however many
different errors they provoke, the API server and the AIModel's status see a bounded stream."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from ..reasons import Reason

log = logging.getLogger("aimodel_worker")

# The same (reason, message) is reported at most this often; the Event's count says how often it recurred.
REPORT_INTERVAL = 30.0
# How many distinct errors are remembered for that (the oldest is forgotten first).
REPORTS_REMEMBERED = 256
# All reports together: a burst of this many, then one per REPORT_PERIOD seconds.
REPORT_BURST = 5
REPORT_PERIOD = 6.0

ReportFn = Callable[[Reason, str], Awaitable[Any]]


class Reports:
    def __init__(self, send: ReportFn | None) -> None:
        self._send_fn = send
        self.reported: OrderedDict[tuple[Reason, str], float] = OrderedDict()
        self._tokens = float(REPORT_BURST)
        self._refilled = time.monotonic()
        self._sending: set[asyncio.Task[Any]] = set()

    def report(self, reason: Reason, message: str) -> None:
        """Report in the background, unless the same error was reported within REPORT_INTERVAL or
        the global rate is spent (it is logged either way)."""
        log.warning("reporting %s: %s", reason.value, message)
        now = time.monotonic()
        key = (reason, message)
        if self._send_fn is None or now - self.reported.get(key, -REPORT_INTERVAL) < REPORT_INTERVAL:
            return
        self._tokens = min(REPORT_BURST, self._tokens + (now - self._refilled) / REPORT_PERIOD)
        self._refilled = now
        if self._tokens < 1:
            log.warning("not reported (more than %d reports in %.0f s)", REPORT_BURST, REPORT_BURST * REPORT_PERIOD)
            return
        self._tokens -= 1
        self.reported[key] = now
        self.reported.move_to_end(key)
        while len(self.reported) > REPORTS_REMEMBERED:
            self.reported.popitem(last=False)
        task = asyncio.create_task(self._send(reason, message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, reason: Reason, message: str) -> None:
        assert self._send_fn is not None
        try:
            await self._send_fn(reason, message)
        except Exception as exc:  # a report that cannot be sent must not stop the work
            log.error("could not report %s: %s", reason.value, exc)

    async def flush(self, timeout: float = 15.0) -> None:
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)
