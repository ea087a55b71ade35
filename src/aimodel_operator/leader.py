"""Lease-based leader election, so two operator replicas never both act.

Followers keep their caches warm and take over within one lease duration.
A leader that cannot renew stops the process: acting on a lost lease would
let two replicas write at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from .kube import LEASES, ApiError, Kube

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _fmt(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


class LeaderElector:
    def __init__(
        self,
        namespace: str,
        name: str,
        identity: str,
        on_lost: Callable[[], None],
        lease_seconds: int = 15,
        renew_seconds: float = 5,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.on_lost = on_lost
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.leading = asyncio.Event()
        self._kube: Kube | None = None
        self._task: asyncio.Task | None = None

    def start(self, kube: Kube) -> None:
        self._kube = kube
        self._task = asyncio.create_task(self._run(), name="leader-election")

    async def _try(self) -> bool:
        assert self._kube is not None
        lease = await self._kube.get(LEASES, self.namespace, self.name)
        now = _now()
        spec = (lease or {}).get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or self.lease_seconds
        if holder and holder != self.identity and renewed and (now - renewed).total_seconds() < duration:
            return False
        new_spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": _fmt(now),
            "acquireTime": spec.get("acquireTime") if holder == self.identity else _fmt(now),
            "leaseTransitions": (spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1),
        }
        body = {
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
                await self._kube.request("PUT", LEASES.path(self.namespace, self.name), body=body)
        except ApiError as err:
            if err.status == 409:
                return False
            raise
        return True

    async def _run(self) -> None:
        last_renew = None
        while True:
            try:
                # A renewal slower than the renew period is a failed one: the lease must not
                # lapse while we still believe we lead.
                ok = await asyncio.wait_for(self._try(), timeout=self.renew_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("lease renewal failed: %r", err)
                ok = False
            now = asyncio.get_running_loop().time()
            if ok:
                last_renew = now
                if not self.leading.is_set():
                    log.info(
                        "leader election: acquired lease=%s/%s identity=%s", self.namespace, self.name, self.identity
                    )
                    self.leading.set()
            elif self.leading.is_set() and (last_renew is None or now - last_renew > self.lease_seconds * 0.66):
                log.error("leader election: lost lease=%s/%s; stopping", self.namespace, self.name)
                # Workers wait on this before every reconcile: none starts from now on.
                self.leading.clear()
                self.on_lost()
                return
            await asyncio.sleep(self.renew_seconds if self.leading.is_set() else self.renew_seconds / 2)

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if not self.leading.is_set() or self._kube is None:
            return
        try:
            lease = await self._kube.get(LEASES, self.namespace, self.name)
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = ""
                lease["spec"]["leaseDurationSeconds"] = 1
                await self._kube.request("PUT", LEASES.path(self.namespace, self.name), body=lease)
        except Exception as err:
            log.warning("lease release failed: %r", err)
