"""Exceptions raised when an error report cannot be delivered."""


class ReportError(Exception):
    """The event could not be created or updated."""


class ConfigError(ReportError):
    """The worker's environment or credentials are incomplete."""


class ApiError(ReportError):
    """The API server answered with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PermissionDenied(ApiError):
    """The API server rejected the credentials or the request (HTTP 401/403)."""
