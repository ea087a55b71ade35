"""The gateway's side of the worker protocol, as data: the request messages queued on
``model-<model>``, the frames an answer is sent in, and the usage record published after it.
Pure functions, no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A request id is logged and copied into usage records: bounded, and no characters that could
# forge a log line or break a consumer of the records (uplion's gateway sends UUIDs).
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class BadRequest(ValueError):
    """A queued message that is not a request; ``request_id``/``endpoint`` are set if they were readable."""

    def __init__(self, message: str, request_id: str = "", endpoint: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id
        self.endpoint = endpoint


class TooLarge(BadRequest):
    """A message over the size cap: not parsed at all."""


@dataclass(frozen=True)
class Request:
    request_id: str
    endpoint: str
    stream: bool
    data: dict[str, Any]


def parse_request(payload: bytes, model: str, max_bytes: int) -> Request:
    """A request message: ``{"request_id", "endpoint", "stream", "data"}`` (``stream`` defaults to
    ``data.stream``, else false). ``data.model`` is ``model`` (set when missing; another one is
    refused: the AIModel, not the publisher, chooses what the upstream runs)."""
    if len(payload) > max_bytes:
        raise TooLarge(f"the message has {len(payload)} bytes, more than the {max_bytes} accepted")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise BadRequest("not a JSON object")
    request_id = doc.get("request_id")
    endpoint = doc.get("endpoint")
    rid = request_id if isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id) else ""
    where = endpoint if isinstance(endpoint, str) else ""
    if not rid:
        raise BadRequest("request_id is missing, not a string, or not 1-128 of [A-Za-z0-9._:-]", "", where)
    if not where.startswith(("http://", "https://", "ws://", "wss://")):
        raise BadRequest("endpoint is missing or not an http(s) or ws(s) URL", rid, "")
    data = doc.get("data")
    if not isinstance(data, dict):
        raise BadRequest("data is missing or not an object", rid, where)
    stream = doc.get("stream", data.get("stream", False))
    if not isinstance(stream, bool):
        raise BadRequest("stream is not a boolean", rid, where)
    asked = data.get("model", model)
    if asked != model:
        shown = asked[:64] if isinstance(asked, str) else type(asked).__name__
        raise BadRequest(f"data.model {shown!r} is not this worker's model {model!r}", rid, where)
    return Request(rid, where, stream, {**data, "model": model})


def websocket_url(endpoint: str) -> str:
    """The WebSocket form of an endpoint (the gateway may hand out http:// or ws://)."""
    if endpoint.startswith("http://"):
        return "ws://" + endpoint[len("http://") :]
    if endpoint.startswith("https://"):
        return "wss://" + endpoint[len("https://") :]
    return endpoint


def http_url(endpoint: str) -> str:
    if endpoint.startswith("ws://"):
        return "http://" + endpoint[len("ws://") :]
    if endpoint.startswith("wss://"):
        return "https://" + endpoint[len("wss://") :]
    return endpoint


def answer(request_id: str, data: Any) -> dict[str, Any]:
    """A whole answer (POSTed to the endpoint)."""
    return {"request_id": request_id, "data": data}


def chunk(request_id: str, data: Any) -> dict[str, Any]:
    """One piece of a streamed answer (a WebSocket text frame)."""
    return {"request_id": request_id, "end": False, "data": data}


def end(request_id: str, data: Any = None) -> dict[str, Any]:
    """The last frame of a streamed answer; ``data`` only for an error that ends it."""
    frame: dict[str, Any] = {"request_id": request_id, "end": True}
    if data is not None:
        frame["data"] = data
    return frame


def usage_record(
    request_id: str, usage: Mapping[str, Any], model: str, aimodel_name: str, aimodel_namespace: str
) -> dict[str, Any]:
    """What is published to RES_TOPIC_NAME after a request."""
    return {
        "request_id": request_id,
        "usage": {key: int(usage.get(key) or 0) for key in ("prompt_tokens", "completion_tokens", "total_tokens")},
        "model": model,
        "ai_model_name": aimodel_name,
        "ai_model_namespace": aimodel_namespace,
    }
