"""The upstream's side: the OpenAI-style chat-completions wire format, as data: where the API
is, error bodies, usage, and what an upstream error means for the worker. Pure functions, no I/O."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from ..reasons import Reason

# Statuses a retry of the same request cannot fix and that say nothing about the model's setup:
# the requester's own mistakes. Answered, never reported.
REQUESTER_ERRORS = frozenset({400, 413, 422})
# Transient on the upstream's side: answered with the error, not reported (the next request may work).
TRANSIENT = frozenset({408, 409, 425, 500, 502, 503, 504, 529})
DEFAULT_RETRY_AFTER = 1.0
# The model an upstream says it used, as booked in a usage record.
UPSTREAM_MODEL = re.compile(r"[\x21-\x7e]{1,256}")
MAX_RETRY_AFTER = 60.0


def booked_model(doc: Any, model: str) -> str:
    """The model for the usage record: the one the upstream says it used, else ``model``."""
    said = doc.get("model") if isinstance(doc, dict) else None
    return said if isinstance(said, str) and UPSTREAM_MODEL.fullmatch(said) else model


def chat_url(base: str) -> str:
    """``<base>/v1/chat/completions``; a base ending in ``/v1`` gets ``/chat/completions``, and a
    URL that already ends in ``/chat/completions`` is used as it is."""
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if base.endswith("/v1"):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


def error_body(message: str, kind: str = "api_error", code: str | None = None) -> dict[str, Any]:
    """An error in the OpenAI wire format, for the requester."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def usage_of(doc: Any) -> dict[str, Any] | None:
    """The ``usage`` object of a completion or of a stream's last chunk, if it has one."""
    if isinstance(doc, dict) and isinstance(doc.get("usage"), dict):
        return cast(dict[str, Any], doc["usage"])
    return None


def with_usage_requested(data: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body with ``stream_options.include_usage`` on (the stream's last chunk then carries the
    usage), and whether it was added here (then that usage-only chunk is not relayed)."""
    options = data.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        return data, False
    merged = dict(options) if isinstance(options, dict) else {}
    merged["include_usage"] = True
    return {**data, "stream": True, "stream_options": merged}, True


@dataclass(frozen=True)
class Failure:
    """An upstream error: what the requester is told, and what (if anything) the worker does about it."""

    status: int
    body: dict[str, Any]
    # The reason reported to the operator; None: the error concerns this request only.
    reason: Reason | None
    # Seconds to back off before retrying; None: no retry.
    retry_after: float | None = None

    @property
    def message(self) -> str:
        return str(self.body["error"].get("message") or f"HTTP {self.status}")


def error_of(status: int, text: str) -> dict[str, Any]:
    """The upstream's error body in the OpenAI format (a non-JSON body becomes its message)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        return error_body(
            str(err.get("message") or f"HTTP {status}"),
            str(err.get("type") or "api_error"),
            err.get("code") if isinstance(err.get("code"), str) else None,
        )
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        return error_body(doc["error"], "api_error")
    snippet = " ".join(text.split())[:300]
    return error_body(f"upstream answered HTTP {status}" + (f": {snippet}" if snippet else ""), "api_error")


def retry_after(headers: Mapping[str, str]) -> float:
    """Seconds to wait, from ``retry-after-ms`` or ``retry-after`` (capped)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw:
            try:
                return min(max(float(raw) * scale, 0.0), MAX_RETRY_AFTER)
            except ValueError:
                continue
    return DEFAULT_RETRY_AFTER


def classify(status: int, text: str, headers: Mapping[str, str] | None = None) -> Failure:
    """What an upstream error means for the worker (the reasons of the worker contract)."""
    body = error_of(status, text)
    err = body["error"]
    code = f"{err.get('code') or ''} {err.get('type') or ''}".lower()
    message = str(err.get("message") or "").lower()
    if status == 401:
        return Failure(status, body, Reason.AUTHENTICATION_ERROR)
    if status == 429:
        if "insufficient_quota" in code or "quota" in message or "billing" in message:
            return Failure(status, body, Reason.API_QUOTA_EXCEEDED_ERROR)
        return Failure(status, body, None, retry_after(headers or {}))
    if status == 404 and ("model" in code or "model" in message):
        return Failure(status, body, Reason.CONFIGURATION_ERROR)
    if status in REQUESTER_ERRORS or status in TRANSIENT or status >= 500:
        return Failure(status, body, None)
    # 403 (a key without access), 404 (no such API at API_URL) and other answers no retry changes.
    return Failure(status, body, Reason.GENERAL_ERROR)


def completion_as_chunk(completion: dict[str, Any]) -> dict[str, Any]:
    """A whole completion as one ``chat.completion.chunk``, for an upstream that does not stream."""
    choices = []
    for choice in completion.get("choices") or []:
        if isinstance(choice, dict):
            choices.append(
                {
                    "index": choice.get("index", 0),
                    "delta": choice.get("message") or {},
                    "finish_reason": choice.get("finish_reason"),
                }
            )
    out = {key: completion[key] for key in ("id", "created", "model") if key in completion}
    return {**out, "object": "chat.completion.chunk", "choices": choices}
