"""What every part of the local cluster shares: its log line, its errors, free ports, the cache."""

from __future__ import annotations

import os
import socket
from pathlib import Path


class ClusterError(RuntimeError):
    """The local cluster cannot do what was asked; the message says why (shown without a traceback)."""


class BuildError(ClusterError):
    """A component could not be built or fetched; the message ends with the tool's own output."""


def log(msg: str) -> None:
    print(f"[devcluster] {msg}", flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cache_root() -> Path:
    """Where built binaries and fetched jars are kept between runs ($AIMODEL_CACHE_DIR to override)."""
    explicit = os.environ.get("AIMODEL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aimodel-operator"


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
