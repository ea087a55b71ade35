"""Build Go commands from published modules into the versioned cache, with progress lines.

k8s.io/kubernetes, etcd and KEDA carry ``replace`` directives in their go.mod,
so ``go install pkg@version`` refuses them. Each is built from a small wrapper
module of our own that requires the upstream module and replaces every local
path with the matching published module. Each wrapper lives in its own
directory so the dependency graphs never mix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .base import BuildError, cache_root, log


def tool_dir(name: str, version: str) -> Path:
    """``<cache>/<name>-<version>``: one directory per tool and version."""
    return cache_root() / f"{name}-{version}"


def go_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The checksum database is not reachable from our machines; the module
    # proxy is the only source, so module checksums are taken from it as-is.
    env["GOSUMDB"] = "off"
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env["CGO_ENABLED"] = "0"
    env.setdefault("GOTOOLCHAIN", "local")
    env.update(extra)
    return env


def _go_output(args: list[str], cwd: Path) -> str:
    if shutil.which("go") is None:
        raise BuildError("Go is needed to build the local cluster and `go` is not on PATH")
    res = subprocess.run(["go", *args], cwd=cwd, env=go_env(), capture_output=True, text=True)
    if res.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed in {cwd}:\n{res.stderr.strip()[-3000:]}")
    return res.stdout


def run_go(args: list[str], cwd: Path, label: str, **env: str) -> None:
    """Run a go command, printing a progress line every 100 compiled packages."""
    if shutil.which("go") is None:
        raise BuildError("Go is needed to build the local cluster and `go` is not on PATH")
    start = time.monotonic()
    proc = subprocess.Popen(
        ["go", *args], cwd=cwd, env=go_env(**env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    tail: list[str] = []
    for count, line in enumerate(proc.stdout, start=1):
        tail = [*tail, line.rstrip()][-40:]
        if count % 100 == 0:
            log(f"{label}: {count} packages, {time.monotonic() - start:.0f}s")
    if proc.wait() != 0:
        output = "\n".join(tail)
        raise BuildError(f"{label}: go {' '.join(args[:2])} failed in {cwd}; its last lines:\n{output}")
    log(f"{label}: done in {time.monotonic() - start:.0f}s")


def module_gomod(module: str, version: str, cwd: Path) -> Path:
    """The go.mod file of ``module@version`` as the proxy serves it."""
    cwd.mkdir(parents=True, exist_ok=True)
    return Path(json.loads(_go_output(["mod", "download", "-json", f"{module}@{version}"], cwd))["GoMod"])


def module_source(module: str, version: str, cwd: Path) -> Path:
    """Where the source of ``module@version`` was unpacked (downloaded if needed)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return Path(json.loads(_go_output(["mod", "download", "-json", f"{module}@{version}"], cwd))["Dir"])


def module_dir(module: str, cwd: Path) -> Path:
    """Where the source of ``module`` (as required by the module in ``cwd``) was unpacked."""
    return Path(_go_output(["list", "-m", "-f", "{{.Dir}}", module], cwd).strip())


def replace_block(gomod: Path) -> dict[str, str]:
    """``replace`` directives of a go.mod file: module -> target (``path version`` or a local path)."""
    replaces: dict[str, str] = {}
    text = gomod.read_text()
    in_block = False
    for raw in text.splitlines():
        line = raw.split("//")[0].strip()
        if line.startswith("replace ("):
            in_block = True
            continue
        if in_block and line == ")":
            in_block = False
            continue
        if line.startswith("replace "):
            line = line[len("replace ") :]
        elif not in_block:
            continue
        if "=>" in line:
            left, right = (part.strip() for part in line.split("=>"))
            replaces[left.split()[0]] = right
    return replaces


def write_wrapper(src: Path, name: str, requires: dict[str, str], replaces: dict[str, str]) -> None:
    """A go.mod of our own in ``src`` that requires ``requires`` with ``replaces`` applied."""
    src.mkdir(parents=True, exist_ok=True)
    lines = [f"module devcluster/{name}", "", "go 1.25.0", "", "require ("]
    lines += [f"\t{m} {v}" for m, v in requires.items()]
    lines += [")", "", "replace ("]
    lines += [f"\t{m} => {target}" for m, target in replaces.items()]
    lines += [")", ""]
    (src / "go.mod").write_text("\n".join(lines))


def staging_dir(dest: Path) -> Path:
    """A fresh directory next to ``dest`` to build into; ``publish`` moves it into place."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(dest: Path, tmp: Path) -> Path:
    """Move a finished build into place by a rename: a half-built directory is never taken for a cache hit."""
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return dest
