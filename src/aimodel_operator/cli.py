"""``aimodel-operator``: run the operator, or print its CRD."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Any

from . import api
from .logs import fields
from .settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aimodel-operator", description="Kubernetes operator for uplion AI models.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster credentials")
    run.add_argument(
        "--bind-address",
        default=os.environ.get("BIND_ADDRESS", "127.0.0.1"),
        help="address of the health and metrics endpoints",
    )
    run.add_argument("--health-port", type=int, default=8081, help="serves /healthz (alive) and /readyz (synced)")
    run.add_argument("--metrics-port", type=int, default=8080, help="serves Prometheus /metrics (0 disables)")
    run.add_argument(
        "--metrics-secure",
        action="store_true",
        help="serve /metrics over HTTPS, only to callers whose token the API server authenticates and "
        "authorizes for get on /metrics (TokenReview, SubjectAccessReview), as kubebuilder does",
    )
    run.add_argument(
        "--metrics-cert-dir",
        default="",
        help="with --metrics-secure: directory of tls.crt and tls.key (re-read when renewed); "
        "default: a self-signed certificate made at start",
    )
    run.add_argument("--workers", type=int, default=32, help="AIModels reconciled concurrently")
    run.add_argument("--resync", type=float, default=300.0, help="seconds between full resyncs")
    run.add_argument(
        "--status-writes-per-second",
        type=float,
        default=100.0,
        help="pace of status writes that change neither state nor generation (conditions, counters) across "
        "all models, after a burst of twice as many; reports and spec changes never wait (0: no limit)",
    )
    run.add_argument("--leader-elect", action="store_true", help="elect a leader among replicas through a Lease")
    run.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the leader-election Lease",
    )
    run.add_argument(
        "--watch-idle-timeout",
        type=float,
        default=float(os.environ.get("WATCH_IDLE_TIMEOUT", "90")),
        help="seconds without a byte (not even a bookmark) after which a watch is taken for dead and "
        "watched again (0: never)",
    )
    run.add_argument(
        "--namespaces",
        type=namespace_list,
        default=os.environ.get("WATCH_NAMESPACES", ""),
        help="comma-separated namespaces to watch, e.g. team-a,team-b (env WATCH_NAMESPACES); "
        "every kind, Secrets included, is read only there, so namespaced Roles suffice. Default: all",
    )
    run.add_argument("--log-format", choices=["plain", "json"], default="plain")
    run.add_argument("--verbose", action="store_true")
    sub.add_parser("crd", help="print the AIModel CustomResourceDefinition as YAML")
    return parser


def namespace_list(text: str) -> tuple[str, ...]:
    """``a, b,a`` -> ("a", "b"); a name that cannot be a namespace is refused, naming it."""
    names: list[str] = []
    for raw in text.split(","):
        name = raw.strip()
        if not name:
            continue
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name):
            raise argparse.ArgumentTypeError(f"{name!r} is not a namespace name")
        if name not in names:
            names.append(name)
    return tuple(names)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "crd":
        sys.stdout.write(api.crd_yaml())
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    from . import logs

    logs.configure(args.log_format, args.verbose)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0


async def _run(args: argparse.Namespace) -> int:
    """Serve health first, then fill the caches, then (as leader) reconcile, until a signal or a lost lease."""
    from .controller import Controller
    from .health import HealthServer
    from .kube import KEEP_WARM, Kube, describe, load_configuration
    from .leader import LeaderElector
    from .metrics_server import Authorizer, MetricsServer

    log = logging.getLogger("aimodel_operator")
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    log.info("watching", extra=fields(namespaces=",".join(args.namespaces) or "(all)"))
    stop = asyncio.Event()
    exit_code = 0

    def lost() -> None:
        nonlocal exit_code
        exit_code = 1
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    controller: Controller | None = None
    elector = (
        LeaderElector(args.leader_election_namespace, "aimodel-operator-leader", instance, lost)
        if args.leader_elect
        else None
    )

    def alive() -> str | None:
        tasks = [] if controller is None else controller.failed_tasks()
        if elector is not None and elector.task is not None and elector.task.done() and not stop.is_set():
            tasks.append("leader-election")
        # Liveness fails and the kubelet restarts the operator: better than running half-dead.
        return f"background tasks ended: {', '.join(tasks)}" if tasks else None

    def ready() -> str | None:
        if controller is None or not controller.synced.is_set():
            return "caches are not synced yet"
        return alive()

    health = HealthServer(args.bind_address, args.health_port, alive, ready)
    await health.start()

    cfg = await load_configuration()
    metrics: MetricsServer | None = None
    review_kube: Kube | None = None
    if args.metrics_port:
        authorizer = None
        if args.metrics_secure:
            # Its own small pool, outside the leader's write window: every replica answers scrapes.
            review_kube = Kube(cfg, pool_size=2)
            authorizer = Authorizer(review_kube)
        metrics = MetricsServer(args.bind_address, args.metrics_port, authorizer, args.metrics_cert_dir or None)
        await metrics.start()
    kube = Kube(cfg, write_gate=elector.write_window if elector is not None else None, keep_warm=KEEP_WARM)
    # Lease renewals get a connection of their own: a burst of reconciles cannot delay them.
    lease_kube = Kube(cfg, pool_size=2) if elector is not None else None
    controller = Controller(
        kube,
        Settings.from_env(),
        instance=instance,
        workers=args.workers,
        resync=args.resync,
        watch_idle=args.watch_idle_timeout or None,
        namespaces=args.namespaces,
        status_writes_per_second=args.status_writes_per_second,
    )
    if elector is not None and lease_kube is not None:
        elector.start(lease_kube)
    starting = asyncio.create_task(controller.start(gate=elector.leading if elector is not None else None))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([starting, stopping], return_when=asyncio.FIRST_COMPLETED)
    failed = starting.exception() if starting.done() else None
    if failed is not None:
        log.error("start failed: %s", describe(failed))
        exit_code = 1
    else:
        await stop.wait()
    log.info("stopping")
    starting.cancel()
    # Each step bounded: a stuck connection must not keep a stopping operator alive.
    await _step("controller", controller.stop())
    if elector is not None:
        await _step("lease release", elector.release(safe=kube.writes_cancelled == 0))
    await _step("API client", kube.close())
    if lease_kube is not None:
        await _step("lease API client", lease_kube.close())
    if metrics is not None:
        await _step("metrics server", metrics.stop())
    if review_kube is not None:
        await _step("metrics review API client", review_kube.close())
    await _step("health server", health.stop())
    log.info("stopped")
    return exit_code


async def _step(what: str, step: Coroutine[Any, Any, Any], timeout: float = 10) -> None:
    log = logging.getLogger("aimodel_operator")
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
