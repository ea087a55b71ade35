"""Process-wide memory settings, applied once when the operator starts.

asyncio's TLS transport reads each connection's ciphertext into a buffer of its own, allocated
whole when the connection opens: 256 KiB by default (``asyncio.sslproto.SSLProtocol.max_size``).
The operator holds a connection per watch and, after a burst, a warm pool of request connections:
with 1000 AIModels and their worker pods that was about 16 MiB of buffers, a fifth of the process,
almost all of it never written (a TLS record is at most 16 KiB, and the answers are small).
The class attribute is the only hook: aiohttp opens its connections through
``loop.create_connection``, which builds the protocol itself.
"""

from __future__ import annotations

from asyncio import sslproto

# Two TLS records: a large answer (a list page) takes more reads of the socket, each as cheap.
TLS_READ_BUFFER = 32 * 1024


def tune() -> None:
    sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
