"""A network namespace joined to the host by a veth pair: addresses that are not loopback
but never leave this machine.

An APIService's Service endpoint cannot be a loopback address (EndpointSlices
refuse 127.0.0.0/8), so KEDA's metrics adapter listens on the namespace's end
of the pair, as it would on a pod IP. The pair is a /30 out of 10.253.0.0/16;
deleting the namespace removes both ends.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass

from .base import ClusterError, log

SUPERNET = ipaddress.ip_network("10.253.0.0/16")


@dataclass(frozen=True)
class Netns:
    name: str
    host_ip: str  # the host's end of the pair (root namespace)
    inner_ip: str  # the namespace's end

    def exec_prefix(self) -> list[str]:
        """Prefix an argv with this to run it inside the namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and res.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def usable() -> str:
    """'' if this machine can create network namespaces, else why not."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    return ""


def _taken() -> set[ipaddress.IPv4Network]:
    out = _ip("-o", "-4", "addr", "show").stdout
    nets = set()
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.add(ipaddress.ip_interface(parts[parts.index("inet") + 1]).network)
    return nets


def create(key: str) -> Netns:
    """Create (afresh) the namespace for ``key`` (e.g. a cluster's state directory) and its veth pair."""
    why = usable()
    if why:
        raise ClusterError(f"KEDA's metrics adapter runs in a network namespace, but {why}")
    tag = hashlib.sha256(key.encode()).hexdigest()[:8]
    name = f"devcluster-{tag}"
    delete(name)
    taken = _taken()
    subnets = list(SUPERNET.subnets(new_prefix=30))
    start = int(tag, 16) % len(subnets)
    subnet = next(
        (
            subnets[(start + i) % len(subnets)]
            for i in range(len(subnets))
            if not any(subnets[(start + i) % len(subnets)].overlaps(t) for t in taken)
        ),
        None,
    )
    if subnet is None:
        raise ClusterError(f"no free /30 left in {SUPERNET}")
    host_ip, inner_ip = (str(h) for h in list(subnet.hosts())[:2])
    host_if, inner_if = f"dc{tag}h", f"dc{tag}n"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", inner_if, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", name, "addr", "add", f"{inner_ip}/30", "dev", inner_if)
        _ip("-n", name, "link", "set", inner_if, "up")
        _ip("-n", name, "link", "set", "lo", "up")
    except ClusterError:
        delete(name)
        raise
    log(f"network namespace {name}: {inner_ip} (host end {host_ip})")
    return Netns(name, host_ip, inner_ip)


def delete(name: str) -> None:
    """Remove the namespace ``name`` and with it its veth pair; nothing if it does not exist."""
    if not name or usable():
        return
    # `ip netns list` prints "name (id: N)" per line.
    if name in (line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()):
        _ip("netns", "delete", name)
