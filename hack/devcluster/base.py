"""What every part of the local cluster shares: its log line, its errors, free ports, the cache."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path


class ClusterError(RuntimeError):
    """The local cluster cannot do what was asked; the message says why (shown without a traceback)."""


class BuildError(ClusterError):
    """A component could not be built or fetched; the message ends with the tool's own output."""


def log(msg: str) -> None:
    print(f"[devcluster] {msg}", flush=True)


_LOWEST_PORT = 10000
_handed_out: set[int] = set()


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The ports the kernel hands out for outgoing connections and port-0 binds."""
    try:
        low, high = (int(x) for x in Path(path).read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free now and stays free until a server binds it: chosen below the kernel's
    ephemeral range, so no outgoing connection can take it in the meantime (a port-0 pick could be
    reused by any client socket before our server binds it, and was, once a run)."""
    low, _ = ephemeral_range()
    top = max(low, _LOWEST_PORT + 1000)
    for _ in range(200):
        port = random.randrange(_LOWEST_PORT, top)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise ClusterError(f"no free port on {host} in {_LOWEST_PORT}-{top}")


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
