"""The operator's TLS connections hold small read buffers (memory.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from devcluster import certs

CONNECTIONS = 40

# A TLS server on loopback and CONNECTIONS clients, each of which has read an answer; prints the
# resident memory the connections added (KiB). argv: pki directory, "tuned" or "default", how many.
SCRIPT = textwrap.dedent(
    """
    import asyncio, ssl, sys
    from aimodel_operator import memory

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

    pki, mode = sys.argv[1], sys.argv[2]
    if mode == "tuned":
        memory.tune()

    async def main():
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(f"{pki}/serving.crt", f"{pki}/serving.key")
        client_ctx = ssl.create_default_context(cafile=f"{pki}/ca.crt")

        async def answer(reader, writer):
            await reader.readline()
            writer.write(b"ok\\n")
            await writer.drain()
            await reader.read()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        # One connection first: what every TLS connection needs once (the library's state) is not counted.
        conns = [await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")]
        conns[0][1].write(b"hello\\n")
        await conns[0][0].readline()
        before = rss()
        for _ in range(int(sys.argv[3])):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
            )
            writer.write(b"hello\\n")
            assert await reader.readline() == b"ok\\n"
            conns.append((reader, writer))
        print(rss() - before)

    asyncio.run(main())
    """
)


def _added_kib(pki: Path, mode: str) -> int:
    argv = [sys.executable, "-c", SCRIPT, str(pki), mode, str(CONNECTIONS)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_each_tls_connection_costs_a_fraction_of_the_default_buffer(tmp_path):
    certs.generate(tmp_path)
    default, tuned = _added_kib(tmp_path, "default"), _added_kib(tmp_path, "tuned")
    # Each connection holds a client's and a server's buffer in this process: 2 x 256 KiB by
    # default, 2 x 32 KiB tuned.
    saved_per_connection = (default - tuned) / CONNECTIONS
    assert saved_per_connection > 300, f"default {default} KiB, tuned {tuned} KiB for {CONNECTIONS} connections"
