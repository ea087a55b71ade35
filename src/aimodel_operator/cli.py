"""``aimodel-operator``: run the operator, or print its CRD."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from . import crd
from .config import Config, load
from .logs import fields

if TYPE_CHECKING:
    from aimodel_worker.credentials import Credentials

    from .controller import Controller
    from .health import HealthServer
    from .kube import Kube
    from .leader import LeaderElector
    from .metrics_server import MetricsServer

log = logging.getLogger("aimodel_operator")


def main(argv: Sequence[str] | None = None) -> int:
    config = load(argv)
    if config.command == "crd":
        sys.stdout.write(crd.crd_yaml())
        return 0
    return run(config)


def run(config: Config) -> int:
    from . import logs, memory

    logs.configure(config.log_format, config.verbose)
    memory.tune()
    try:
        return asyncio.run(Operator(config).run())
    except KeyboardInterrupt:
        return 0


class Operator:
    """Serve health first, then fill the caches, then (as leader) reconcile, until a signal or a
    lost lease; then stop every part, each within a bound."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.exit_code = 0
        self.controller: Controller | None = None
        self.elector: LeaderElector | None = None
        self.health: HealthServer | None = None
        self.metrics: MetricsServer | None = None
        # API clients: the controller's; the lease's and the metrics reviews' (small pools of their own).
        self.kube: Kube | None = None
        self.lease_kube: Kube | None = None
        self.review_kube: Kube | None = None

    def _lost(self) -> None:
        self.exit_code = 1
        self.stop.set()

    def alive(self) -> str | None:
        tasks = [] if self.controller is None else self.controller.failed_tasks()
        elector = self.elector
        if elector is not None and elector.task is not None and elector.task.done() and not self.stop.is_set():
            tasks.append("leader-election")
        # Liveness fails and the kubelet restarts the operator: better than running half-dead.
        return f"background tasks ended: {', '.join(tasks)}" if tasks else None

    def ready(self) -> str | None:
        if self.controller is None or not self.controller.synced.is_set():
            return "caches are not synced yet"
        return self.alive()

    async def run(self) -> int:
        from aimodel_worker.errors import ConfigError

        from .health import HealthServer
        from .kube import load_configuration
        from .leader import LeaderElector

        config = self.config
        log.info("watching", extra=fields(namespaces=",".join(config.namespaces) or "(all)"))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        if config.leader_elect:
            self.elector = LeaderElector(
                config.leader_election_namespace, "aimodel-operator-leader", config.instance, self._lost
            )
        self.health = HealthServer(config.bind_address, config.health_port, self.alive, self.ready)
        await self.health.start()
        try:
            creds = await load_configuration()
        except ConfigError as err:
            # Said once, not retried: nothing will change until the pod or kubeconfig does.
            log.error("%s", err)
            self.exit_code = 1
            await self._shutdown()
            return self.exit_code
        await self._serve_metrics(creds)
        controller = self._connect(creds)
        await self._until_stopped(controller)
        await self._shutdown()
        return self.exit_code

    async def _serve_metrics(self, creds: Credentials) -> None:
        from .kube import Kube
        from .metrics_server import Authorizer, MetricsServer

        config = self.config
        if not config.metrics_port:
            return
        authorizer = None
        if config.metrics_secure:
            # Its own small pool, outside the leader's write window: every replica answers scrapes.
            self.review_kube = Kube(creds, pool_size=2)
            authorizer = Authorizer(self.review_kube)
        self.metrics = MetricsServer(
            config.bind_address, config.metrics_port, authorizer, config.metrics_cert_dir or None
        )
        await self.metrics.start()

    def _connect(self, creds: Credentials) -> Controller:
        from .controller import Controller
        from .kube import KEEP_WARM, Kube

        config, elector = self.config, self.elector
        self.kube = Kube(creds, write_gate=elector.write_window if elector is not None else None, keep_warm=KEEP_WARM)
        self.controller = Controller(
            self.kube,
            config.worker,
            instance=config.instance,
            workers=config.workers,
            resync=config.resync,
            watch_idle=config.watch_idle,
            namespaces=config.namespaces,
            status_writes_per_second=config.status_writes_per_second,
            tenancy=config.tenancy,
        )
        if elector is not None:
            # Lease renewals get a connection of their own: a burst of reconciles cannot delay them.
            self.lease_kube = Kube(creds, pool_size=2)
            elector.start(self.lease_kube)
        return self.controller

    async def _until_stopped(self, controller: Controller) -> None:
        from .kube import describe

        gate = self.elector.leading if self.elector is not None else None
        starting = asyncio.create_task(controller.start(gate=gate))
        stopping = asyncio.create_task(self.stop.wait())
        await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
        failed = starting.exception() if starting.done() else None
        if failed is not None:
            log.error("start failed: %s", describe(failed))
            self.exit_code = 1
        else:
            await self.stop.wait()
        starting.cancel()

    async def _shutdown(self) -> None:
        """Each step bounded: a stuck connection must not keep a stopping operator alive."""
        log.info("stopping")
        if self.controller is not None:
            await _step("controller", self.controller.stop())
        if self.elector is not None and self.kube is not None:
            await _step("lease release", self.elector.release(safe=self.kube.writes_cancelled == 0))
        steps = (
            ("API client", self.kube.close if self.kube else None),
            ("lease API client", self.lease_kube.close if self.lease_kube else None),
            ("metrics server", self.metrics.stop if self.metrics else None),
            ("metrics review API client", self.review_kube.close if self.review_kube else None),
            ("health server", self.health.stop if self.health else None),
        )
        # Each coroutine made only when its turn comes: none is left un-awaited if one step is cut short.
        for what, stop in steps:
            if stop is not None:
                await _step(what, stop())
        log.info("stopped")


async def _step(what: str, step: Coroutine[Any, Any, Any], timeout: float = 10) -> None:
    log.debug("stopping %s", what)
    try:
        async with asyncio.timeout(timeout):
            await step
    except TimeoutError:
        log.warning("stopping %s took longer than %.0fs; going on", what, timeout)
    except Exception as err:
        from .kube import describe

        log.warning("stopping %s failed: %s", what, describe(err))


if __name__ == "__main__":
    sys.exit(main())
