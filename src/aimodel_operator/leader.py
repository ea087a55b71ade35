"""Lease-based leader election, so two operator replicas never both act.

It follows client-go's rules:

- a lease held by another is taken only after it has not changed for its
  whole duration *as measured by our own monotonic clock* from the moment we
  saw it change; the holder's ``renewTime`` is never compared with our
  clock, so a skewed clock cannot steal a live lease;
- the leader may write only until ``renew_deadline`` after the start of its
  last successful renewal (shorter than the lease duration); every write
  checks that, and its timeout ends there, so no write of an old leader can
  land after a follower could have taken over;
- renewals use their own connection, so a burst of reconciles cannot delay them.

A leader that cannot renew in time stops writing at once and ends the process.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from typing import Any

from .kube import LEASES, Conflict, Kube, describe
from .logs import fields

log = logging.getLogger(__name__)


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseTaken(Exception):
    """Another instance holds the lease we believed ours."""


class LeaderElector:
    def __init__(
        self,
        namespace: str,
        name: str,
        identity: str,
        on_lost: Callable[[], None],
        lease_seconds: float = 15,
        renew_deadline: float = 10,
        retry_period: float = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert renew_deadline < lease_seconds
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.on_lost = on_lost
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock
        self.leading = asyncio.Event()
        self._kube: Kube | None = None
        self._task: asyncio.Task[Any] | None = None
        # The last lease record seen, and when (our clock) we saw it change.
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        # Start of our last successful renewal: writes are allowed until it plus renew_deadline.
        self._renewed_at: float | None = None

    def write_window(self) -> float:
        """Seconds this instance may still write (0 or less: it may not)."""
        if not self.leading.is_set() or self._renewed_at is None:
            return 0.0
        return self._renewed_at + self.renew_deadline - self.clock()

    def start(self, kube: Kube) -> None:
        """Run the election on ``kube``, a client of its own (not shared with reconciles)."""
        self._kube = kube
        self._task = asyncio.create_task(self._run(), name="leader-election")

    @property
    def task(self) -> asyncio.Task[Any] | None:
        return self._task

    def _observe(self, spec: dict[str, Any]) -> None:
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed = record
            self._observed_at = self.clock()

    async def _try(self) -> bool:
        assert self._kube is not None
        started = self.clock()
        lease = await self._kube.get(LEASES, self.namespace, self.name)
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        self._observe(spec)
        duration = spec.get("leaseDurationSeconds") or self.lease_seconds
        if holder and holder != self.identity:
            if self.leading.is_set():
                # Someone else holds it: we lead no more, whatever our window says.
                raise LeaseTaken(f"lease held by {holder}")
            if self.clock() < self._observed_at + duration:
                return False
        now = _fmt(dt.datetime.now(dt.UTC))
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_seconds),
            "renewTime": now,
            "acquireTime": spec.get("acquireTime") if holder == self.identity else now,
            "leaseTransitions": (spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1),
        }
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": new_spec,
        }
        try:
            if lease is None:
                await self._kube.create(LEASES, self.namespace, body)
            else:
                # resourceVersion makes the write conditional: a concurrent taker wins, we retry.
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                await self._kube.replace(LEASES, body)
        except Conflict:
            return False
        self._observe(new_spec)
        self._renewed_at = started
        return True

    async def _run(self) -> None:
        while True:
            if self.leading.is_set() and self.write_window() <= 0:
                # The renew deadline passed without a renewal (a stalled or frozen process): we
                # lead no more, even if nobody took the lease yet (client-go's rule).
                self._lost("renew deadline passed")
                return
            try:
                # A renewal slower than the retry period is a failed one.
                async with asyncio.timeout(max(self.retry_period, 1.0)):
                    ok = await self._try()
            except asyncio.CancelledError:
                raise
            except LeaseTaken as err:
                self._lost(str(err))
                return
            except Exception as err:
                log.warning("lease renewal failed: %s", describe(err))
                ok = False
            if ok and not self.leading.is_set():
                log.info(
                    "leader election: acquired",
                    extra=fields(lease=f"{self.namespace}/{self.name}", identity=self.identity),
                )
                self.leading.set()
            elif self.leading.is_set() and self.write_window() <= 0:
                self._lost("renewals failed until the renew deadline")
                return
            await asyncio.sleep(self.retry_period)

    def _lost(self, why: str) -> None:
        log.error("leader election: lost lease, stopping", extra=fields(lease=f"{self.namespace}/{self.name}", why=why))
        # Workers wait on this before every reconcile, and every write checks the window.
        self._renewed_at = None
        self.leading.clear()
        self.on_lost()

    async def release(self, safe: bool = True) -> None:
        """Hand the lease back on shutdown, if we still hold it and may still write.

        Not ``safe`` (a write was cancelled on its way and may still land): the lease
        is left to lapse, so no successor starts before that write is surely over.
        """
        if self._task is not None:
            self._task.cancel()
        if self._kube is None or self.write_window() <= 0:
            return
        if not safe:
            log.info("leader election: lease left to lapse (a write may still be on its way)")
            self.leading.clear()
            return
        try:
            lease = await self._kube.get(LEASES, self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await self._kube.replace(LEASES, lease)
        except Exception as err:
            log.warning("lease release failed: %s", describe(err))
        self.leading.clear()
