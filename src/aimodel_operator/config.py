"""The operator's configuration, from flags and the environment, in one place.

``load(argv, environ)`` is the only reader of either: the flags, the
environment variables that stand in for some of them (set by the Deployment:
``POD_NAME``, ``POD_NAMESPACE``, ``WATCH_NAMESPACES``, ...), and the settings
passed on to the workers (``Settings``, settings.py). The rest of the operator
is handed the ``Config`` it returns.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from .settings import Settings


@dataclass(frozen=True)
class Config:
    command: str = "run"
    bind_address: str = "127.0.0.1"
    health_port: int = 8081
    metrics_port: int = 8080
    metrics_secure: bool = False
    metrics_cert_dir: str = ""
    workers: int = 32
    resync: float = 300.0
    status_writes_per_second: float = 100.0
    leader_elect: bool = False
    leader_election_namespace: str = "default"
    # Seconds of silence after which a watch is taken for dead (None: never).
    watch_idle: float | None = 90.0
    namespaces: tuple[str, ...] = ()
    log_format: str = "plain"
    verbose: bool = False
    # This replica's name (leader election, the Events it sends): the pod's, else the host's.
    instance: str = ""
    # What the workers are configured with.
    worker: Settings = field(default_factory=Settings)
    # A token per model (pulsar_auth): given a Pulsar admin token and the token signing key.
    tenancy: Tenancy | None = None


@dataclass(frozen=True)
class Tenancy:
    admin_token: str
    signing_key: bytes
    # Lifetime of a model's tokens; renewed when a third is left.
    token_ttl: float = 86400.0
    # Seconds between passes that revoke the grants of models that are gone.
    collect_every: float = 300.0


def tenancy(env: Mapping[str, str], fail: Callable[[str], NoReturn]) -> Tenancy | None:
    """Per-model Pulsar credentials, when both PULSAR_ADMIN_TOKEN and PULSAR_TOKEN_SIGNING_KEY_FILE
    are set; ``fail`` says what is wrong with them."""
    from .pulsar_auth.tokens import TokenError, load_key

    admin_token, key_file = env.get("PULSAR_ADMIN_TOKEN", ""), env.get("PULSAR_TOKEN_SIGNING_KEY_FILE", "")
    if not (admin_token or key_file):
        return None
    if not (admin_token and key_file):
        fail("a token per model needs both PULSAR_ADMIN_TOKEN and PULSAR_TOKEN_SIGNING_KEY_FILE")
    if not env.get("PULSAR_ADMIN_URL"):
        fail("a token per model needs PULSAR_ADMIN_URL (the grants are made through the admin API)")
    try:
        with open(key_file, "rb") as f:
            key = load_key(f.read())
    except OSError as err:
        fail(f"PULSAR_TOKEN_SIGNING_KEY_FILE {key_file}: {err.strerror}")
    except TokenError as err:
        fail(f"PULSAR_TOKEN_SIGNING_KEY_FILE {key_file}: {err}")
    try:
        ttl = float(env.get("PULSAR_TOKEN_TTL_SECONDS", "86400"))
        collect = float(env.get("PULSAR_GRANT_COLLECT_SECONDS", "300"))
    except ValueError as err:
        fail(f"PULSAR_TOKEN_TTL_SECONDS / PULSAR_GRANT_COLLECT_SECONDS: {err}")
    if ttl < 30 or collect <= 0:
        fail("PULSAR_TOKEN_TTL_SECONDS must be at least 30 and PULSAR_GRANT_COLLECT_SECONDS positive")
    return Tenancy(admin_token, key, ttl, collect)


def load(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    cli = parser(env)
    args = cli.parse_args(argv)
    if args.command != "run":
        return Config(command=args.command)
    return Config(
        command="run",
        bind_address=args.bind_address,
        health_port=args.health_port,
        metrics_port=args.metrics_port,
        metrics_secure=args.metrics_secure,
        metrics_cert_dir=args.metrics_cert_dir,
        workers=args.workers,
        resync=args.resync,
        status_writes_per_second=args.status_writes_per_second,
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace,
        watch_idle=args.watch_idle_timeout or None,
        namespaces=args.namespaces,
        log_format=args.log_format,
        verbose=args.verbose,
        instance=env.get("POD_NAME") or socket.gethostname(),
        worker=Settings.from_env(env),
        tenancy=tenancy(env, cli.error),
    )


def parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aimodel-operator", description="Kubernetes operator for uplion AI models.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster credentials")
    run.add_argument(
        "--bind-address",
        default=env.get("BIND_ADDRESS", "127.0.0.1"),
        help="address of the health and metrics endpoints (env BIND_ADDRESS)",
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
        default=env.get("POD_NAMESPACE", "default"),
        help="namespace of the leader-election Lease (env POD_NAMESPACE)",
    )
    run.add_argument(
        "--watch-idle-timeout",
        type=float,
        default=float(env.get("WATCH_IDLE_TIMEOUT", "90")),
        help="seconds without a byte (not even a bookmark) after which a watch is taken for dead and "
        "watched again (0: never; env WATCH_IDLE_TIMEOUT)",
    )
    run.add_argument(
        "--namespaces",
        type=namespace_list,
        default=env.get("WATCH_NAMESPACES", ""),
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
