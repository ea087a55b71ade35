"""Logging set-up: plain lines for people, or one JSON object per line for log pipelines.

A log call names what happened in its message and passes the facts as fields::

    log.info("status written", extra=fields(namespace=ns, name=name, state="Running"))

Plain lines show them as ``key=value`` after the message (logfmt, quoted when needed); JSON
lines carry each as a key of its own, so a pipeline can select ``namespace`` or ``reason``
without parsing text.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

# Keys of a JSON line that fields may not take over.
_RESERVED = frozenset({"time", "level", "logger", "message", "exception"})


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra`` of a log call that carries ``values`` as fields."""
    return {"fields": values}


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    values = getattr(record, "fields", None)
    return values if isinstance(values, dict) else {}


def _logfmt(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if text == "" or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extra = _fields_of(record)
        if extra:
            line += " " + " ".join(f"{key}={_logfmt(value)}" for key, value in extra.items())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields_of(record).items():
            entry[f"field.{key}" if key in _RESERVED else key] = (
                value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
            )
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(fmt: str = "plain", verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # aiohttp logs every request at INFO; the operator logs what it does itself.
    for name in ("aiohttp.access", "aiohttp.server"):
        logging.getLogger(name).setLevel(logging.WARNING)
