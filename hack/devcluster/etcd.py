"""etcd, built from its Go module, as the cluster's store."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from . import gobuild, versions
from .base import free_port, log
from .procs import Component, Supervisor, flag

NAME = "etcd"


def bin_dir() -> Path:
    return gobuild.tool_dir("etcd", versions.ETCD) / "bin"


def build() -> Path:
    """go.etcd.io/etcd/server/v3 is ``package main`` at its module root and replaces its siblings with ../<dir>."""
    dest = bin_dir()
    if (dest / "etcd").exists():
        return dest
    work = dest.parent
    log(f"building etcd {versions.ETCD}")
    siblings = ["api/v3", "client/pkg/v3", "client/v3", "pkg/v3"]
    gobuild.write_wrapper(
        work / "src",
        "etcd",
        {"go.etcd.io/etcd/server/v3": versions.ETCD},
        {f"go.etcd.io/etcd/{s}": f"go.etcd.io/etcd/{s} {versions.ETCD}" for s in siblings},
    )
    tmp = gobuild.staging_dir(dest)
    gobuild.run_go(
        ["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp / "etcd"), "go.etcd.io/etcd/server/v3"],
        work / "src",
        f"etcd {versions.ETCD}",
    )
    return gobuild.publish(dest, tmp)


def healthy(comp: Component) -> bool:
    url = flag(comp.argv, "--advertise-client-urls").split(",")[0].rstrip("/")
    with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
        return resp.status == 200


def start(procs: Supervisor, data_dir: Path) -> str:
    """Start etcd on free loopback ports; returns its client URL."""
    client, peer = free_port(), free_port()
    comp = procs.spawn(
        NAME,
        [
            str(bin_dir() / "etcd"),
            "--name=devcluster",
            f"--data-dir={data_dir}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=devcluster=http://127.0.0.1:{peer}",
            "--listen-metrics-urls=",
            "--unsafe-no-fsync",
            "--quota-backend-bytes=4294967296",
            "--log-level=warn",
        ],
    )
    procs.wait("etcd health", lambda: healthy(comp), comp)
    return f"http://127.0.0.1:{client}"
