"""Ports for the local cluster's servers: free, never from the kernel's ephemeral range (where any
outgoing connection may take a port between our pick and the server's bind), never handed out twice."""

from __future__ import annotations

import socket

from devcluster.base import ephemeral_range, free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable():
    low, _ = ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= p < low for p in ports), ports
    for port in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_taken_port_is_not_handed_out():
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        taken = held.getsockname()[1]
        assert all(free_port() != taken for _ in range(200))


def test_the_range_file_unreadable_means_linux_defaults(tmp_path):
    assert ephemeral_range(str(tmp_path / "missing")) == (32768, 60999)
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ephemeral_range(str(tmp_path / "range")) == (40000, 50000)
