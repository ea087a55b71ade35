"""``python -m devcluster up|down|status|build|pulsar-token`` (PYTHONPATH=hack)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import pulsar
from .cluster import DEFAULT_DIR, Cluster, ClusterError, build_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build", "pulsar-token"])
    parser.add_argument("--role", default=os.environ.get("ROLE", ""), help="pulsar-token: the role (or ROLE=)")
    parser.add_argument(
        "--ttl", type=float, default=None, help="pulsar-token: seconds until the token expires (default: never)"
    )
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("DEVCLUSTER_DIR", DEFAULT_DIR)))
    parser.add_argument(
        "--keda",
        action="store_true",
        default=os.environ.get("KEDA", "") not in ("", "0"),
        help="also build and start KEDA (operator and metrics adapter) with its CRDs (or KEDA=1)",
    )
    parser.add_argument(
        "--pulsar",
        action="store_true",
        default=os.environ.get("PULSAR", "") not in ("", "0"),
        help="also start Apache Pulsar standalone (Java, jars from Maven) for KEDA to read (or PULSAR=1)",
    )
    parser.add_argument(
        "--helm", action="store_true", default=os.environ.get("HELM", "") not in ("", "0"), help="build: helm too"
    )
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    try:
        if args.command == "up":
            cluster.up(keda=args.keda, pulsar=args.pulsar)
        elif args.command == "down":
            cluster.down()
        elif args.command == "status":
            return cluster.status()
        elif args.command == "pulsar-token":
            if not args.role:
                raise ClusterError("pulsar-token needs a role: --role NAME or ROLE=NAME")
            if not cluster.fact("pulsar_token_key"):
                raise ClusterError("Pulsar is not running in this cluster (make cluster-up PULSAR=1)")
            print(pulsar.token(cluster.procs, args.role, args.ttl))
        else:
            build_all(keda_too=args.keda, pulsar_too=args.pulsar, helm_too=args.helm)
    except ClusterError as err:  # BuildError included: a message, not a traceback
        print(f"[devcluster] error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[devcluster] interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
