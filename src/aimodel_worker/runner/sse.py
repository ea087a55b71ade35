"""Server-sent events (the wire format of a streamed completion), parsed line by line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class EventStream:
    """Server-sent events, fed line by line (without line ends): ``feed`` returns the ``data`` of
    an event when its blank line arrives. Comments and other fields are skipped; several ``data:``
    lines of one event are joined with newlines."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def feed(self, line: str) -> str | None:
        if line == "":
            if not self._parts:
                return None
            data, self._parts = "\n".join(self._parts), []
            return data
        if not line.startswith(":"):
            field, _, value = line.partition(":")
            if field == "data":
                self._parts.append(value[1:] if value.startswith(" ") else value)
        return None

    def finish(self) -> str | None:
        """An event the stream ended in without its blank line."""
        return self.feed("")


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each event in ``lines``."""
    events = EventStream()
    for line in lines:
        data = events.feed(line)
        if data is not None:
            yield data
    last = events.finish()
    if last is not None:
        yield last
