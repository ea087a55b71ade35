"""``aimodel-operator``: run the operator, or print its CRD."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from . import api
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
    run.add_argument("--health-port", type=int, default=8081, help="serves /healthz")
    run.add_argument("--metrics-port", type=int, default=8080, help="serves Prometheus /metrics (0 disables)")
    run.add_argument("--workers", type=int, default=32, help="AIModels reconciled concurrently")
    run.add_argument("--resync", type=float, default=300.0, help="seconds between full resyncs")
    run.add_argument("--leader-elect", action="store_true", help="elect a leader among replicas through a Lease")
    run.add_argument(
        "--leader-election-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the leader-election Lease",
    )
    run.add_argument("--log-format", choices=["plain", "json"], default="plain")
    run.add_argument("--verbose", action="store_true")
    sub.add_parser("crd", help="print the AIModel CustomResourceDefinition as YAML")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "crd":
        sys.stdout.write(api.crd_yaml())
        return 0
    return run(args)


def run(args: argparse.Namespace) -> int:
    import kopf

    from . import handlers  # noqa: F401 - registers the kopf handlers
    from .leader import LeaderElector

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
        log_prefix=False,
    )
    # kopf logs every handler call and probe at INFO, aiohttp every /healthz request;
    # the operator logs what it does itself and is quiet when nothing happens.
    for name in ("kopf.objects", "kopf.activities.probe", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    instance = os.environ.get("POD_NAME") or socket.gethostname()
    stop = asyncio.Event()
    exit_code = 0

    def lost() -> None:
        nonlocal exit_code
        exit_code = 1
        stop.set()

    memo = kopf.Memo(
        settings=Settings.from_env(),
        instance=instance,
        workers=args.workers,
        resync=args.resync,
        elector=LeaderElector(args.leader_election_namespace, "aimodel-operator-leader", instance, lost)
        if args.leader_elect
        else None,
    )
    if args.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.bind_address)

    async def main_async() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await kopf.operator(
            clusterwide=True,
            standalone=True,
            memo=memo,
            stop_flag=stop,
            liveness_endpoint=f"http://{args.bind_address}:{args.health_port}/healthz",
        )

    asyncio.run(main_async())
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
