"""What the API server answers when it refuses, as types: callers catch ``NotFound`` or
``Conflict``, never compare status numbers."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An answer of 300 or more. ``for_status`` gives the subclass that names it."""

    def __init__(self, status: int, body: Any, method: str, path: str) -> None:
        self.status = status
        self.body = body
        self.message = str(body.get("message") if isinstance(body, dict) else str(body)[:300])
        super().__init__(f"{method} {path}: HTTP {status}: {self.message}")

    @property
    def namespace_terminating(self) -> bool:
        """Refused because the namespace is being deleted: nothing to do there anymore."""
        causes = (self.body.get("details") or {}).get("causes") or [] if isinstance(self.body, dict) else []
        return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating" for c in causes)


class BadRequest(ApiError):
    """400: the request itself is malformed (a manifest the server cannot read)."""


class Forbidden(ApiError):
    """403: RBAC, an admission policy, or a namespace being deleted (``namespace_terminating``)."""


class NotFound(ApiError):
    """404: no such object, or the kind is not served."""


class Conflict(ApiError):
    """409: a precondition (resourceVersion, uid) failed, or another field manager owns the field."""


class Gone(ApiError):
    """410: a watch or list continued from a version the server no longer keeps."""


class Unprocessable(ApiError):
    """422: the object is invalid (schema, validation rule, immutable field)."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Unprocessable,
}


def for_status(status: int, body: Any, method: str, path: str) -> ApiError:
    return _BY_STATUS.get(status, ApiError)(status, body, method, path)


class NotLeading(Exception):
    """A write refused because this instance may not write (leadership lost or about to lapse)."""


class WatchIdle(Exception):
    """A watch stream went silent for longer than the server's bookmarks allow."""


def describe(err: BaseException) -> str:
    """An error for the log: its type and message. Never ``repr``: aiohttp's errors carry the
    request's headers, the bearer token among them."""
    return f"{type(err).__name__}: {err}"
