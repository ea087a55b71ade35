"""A JSON-lines reader over byte chunks, as a watch stream sends them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any


async def json_lines(read: Callable[[], Awaitable[bytes]]) -> AsyncIterator[Any]:
    """Each line ``read`` delivers, parsed, until it returns ``b""``. Lines can be longer than
    aiohttp's readline limit (a large object in one event): the stream is split here, a line
    split across chunks is joined, and a line the stream's end cut short is dropped."""
    buffer = b""
    while True:
        chunk = await read()
        if not chunk:
            # The server ends every event with a newline: what is left is a cut line.
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
