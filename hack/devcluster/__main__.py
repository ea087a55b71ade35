"""``python -m devcluster up|down|status|build`` (PYTHONPATH=hack)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import build
from .cluster import DEFAULT_DIR, Cluster, ClusterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "build"])
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("DEVCLUSTER_DIR", DEFAULT_DIR)))
    parser.add_argument(
        "--keda",
        action="store_true",
        default=os.environ.get("KEDA", "") not in ("", "0"),
        help="also build and start the KEDA operator with its CRDs (or KEDA=1)",
    )
    parser.add_argument(
        "--pulsar",
        action="store_true",
        default=os.environ.get("PULSAR", "") not in ("", "0"),
        help="also start Apache Pulsar standalone (Java, jars from Maven) for KEDA to read (or PULSAR=1)",
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
        else:
            build.build_all(keda=args.keda)
            if args.pulsar:
                from . import pulsar

                pulsar.build_pulsar()
    except ClusterError as err:
        print(f"[devcluster] error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
