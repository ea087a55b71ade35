"""Build the control-plane binaries from Go modules, once, into a versioned cache.

k8s.io/kubernetes, etcd and KEDA carry ``replace`` directives in their go.mod,
so ``go install pkg@version`` refuses them. Each is built from a small wrapper
module of our own that requires the upstream module and replaces every local
path with the matching published module. Each wrapper lives in its own
directory so the dependency graphs never mix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from . import versions


def cache_root() -> Path:
    explicit = os.environ.get("AIMODEL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aimodel-operator"


def _log(msg: str) -> None:
    print(f"[devcluster] {msg}", flush=True)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The checksum database is not reachable from our machines; the module
    # proxy is the only source, so module checksums are taken from it as-is.
    env["GOSUMDB"] = "off"
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def _run_go(args: list[str], cwd: Path, label: str) -> None:
    """Run a go command, printing a progress line every 100 compiled packages."""
    start = time.monotonic()
    proc = subprocess.Popen(
        ["go", *args],
        cwd=cwd,
        env=_go_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for count, line in enumerate(proc.stdout, start=1):
        tail = [*tail, line.rstrip()][-40:]
        if count % 100 == 0:
            _log(f"{label}: {count} packages, {time.monotonic() - start:.0f}s")
    if proc.wait() != 0:
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(f"[devcluster] {label}: go {' '.join(args[:2])} failed in {cwd}")
    _log(f"{label}: done in {time.monotonic() - start:.0f}s")


def _gomod_path(module: str, version: str, cwd: Path) -> Path:
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd,
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Path(json.loads(out)["GoMod"])


def _write_wrapper(src: Path, module: str, requires: dict[str, str], replaces: dict[str, str]) -> None:
    src.mkdir(parents=True, exist_ok=True)
    lines = [f"module devcluster/{module}", "", "go 1.25.0", "", "require ("]
    lines += [f"\t{m} {v}" for m, v in requires.items()]
    lines += [")", "", "replace ("]
    lines += [f"\t{m} => {target}" for m, target in replaces.items()]
    lines += [")", ""]
    (src / "go.mod").write_text("\n".join(lines))


def _finish(dest: Path, tmp_bin: Path) -> None:
    # Publish atomically: a half-built directory is never taken for a cache hit.
    if dest.exists():
        shutil.rmtree(dest)
    tmp_bin.rename(dest)


def kubernetes_bin() -> Path:
    return cache_root() / f"kubernetes-{versions.KUBERNETES}" / "bin"


def etcd_bin() -> Path:
    return cache_root() / f"etcd-{versions.ETCD}" / "bin"


def kwok_bin() -> Path:
    return cache_root() / f"kwok-{versions.KWOK}" / "bin"


def keda_dir() -> Path:
    return cache_root() / f"keda-{versions.KEDA}"


KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")


def build_kubernetes() -> Path:
    dest = kubernetes_bin()
    if all((dest / c).exists() for c in KUBE_COMMANDS):
        return dest
    work = dest.parent
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    _log(f"building Kubernetes {versions.KUBERNETES} (first time only; 15-30 min on 2 cores)")
    gomod = _gomod_path("k8s.io/kubernetes", versions.KUBERNETES, src)
    staging = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", gomod.read_text(), re.M)
    if not staging:
        raise SystemExit(f"[devcluster] no staging replaces found in {gomod}")
    _write_wrapper(
        src,
        "kubernetes",
        {"k8s.io/kubernetes": versions.KUBERNETES},
        {m: f"{m} {versions.KUBERNETES_STAGING}" for m in staging},
    )
    major, minor = versions.KUBERNETES.lstrip("v").split(".")[:2]
    xs = {
        "gitVersion": versions.KUBERNETES,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    ldflags = " ".join(
        f"-X {pkg}.{k}={v}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for k, v in xs.items()
    )
    tmp_bin = work / "bin.tmp"
    tmp_bin.mkdir(exist_ok=True)
    _run_go(
        ["build", "-v", "-trimpath", "-ldflags", f"-s -w {ldflags}", "-o", str(tmp_bin)]
        + [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS],
        src,
        f"kubernetes {versions.KUBERNETES}",
    )
    _finish(dest, tmp_bin)
    return dest


def build_etcd() -> Path:
    dest = etcd_bin()
    if (dest / "etcd").exists():
        return dest
    work = dest.parent
    src = work / "src"
    _log(f"building etcd {versions.ETCD}")
    siblings = ["api/v3", "client/pkg/v3", "client/v3", "pkg/v3"]
    _write_wrapper(
        src,
        "etcd",
        {"go.etcd.io/etcd/server/v3": versions.ETCD},
        {f"go.etcd.io/etcd/{s}": f"go.etcd.io/etcd/{s} {versions.ETCD}" for s in siblings},
    )
    tmp_bin = work / "bin.tmp"
    tmp_bin.mkdir(exist_ok=True)
    _run_go(
        ["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(tmp_bin / "etcd"), "go.etcd.io/etcd/server/v3"],
        src,
        f"etcd {versions.ETCD}",
    )
    _finish(dest, tmp_bin)
    return dest


def build_kwok() -> Path:
    dest = kwok_bin()
    if (dest / "kwok").exists():
        return dest
    work = dest.parent
    work.mkdir(parents=True, exist_ok=True)
    _log(f"building kwok {versions.KWOK}")
    tmp_bin = work / "bin.tmp"
    tmp_bin.mkdir(exist_ok=True)
    env_bin = {"GOBIN": str(tmp_bin)}
    os.environ.update(env_bin)
    try:
        _run_go(
            ["install", "-v", "-trimpath", "-ldflags", "-s -w", f"sigs.k8s.io/kwok/cmd/kwok@{versions.KWOK}"],
            work,
            "kwok",
        )
    finally:
        os.environ.pop("GOBIN", None)
    _finish(dest, tmp_bin)
    return dest


def build_all(keda: bool = False) -> None:
    build_etcd()
    build_kwok()
    build_kubernetes()
    if keda:
        from . import keda as keda_mod

        keda_mod.build_keda()


if __name__ == "__main__":
    build_all(keda="--keda" in sys.argv)
