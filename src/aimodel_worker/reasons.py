"""The reasons a worker may give for an irreversible error."""

from enum import StrEnum


class Reason(StrEnum):
    """Event ``reason`` values the operator turns into a ``Failed`` status."""

    CONFIGURATION_ERROR = "ConfigurationError"
    AUTHENTICATION_ERROR = "AuthenticationError"
    MESSAGE_QUEUE_CONNECTION_ERROR = "MessageQueueConnectionError"
    API_QUOTA_EXCEEDED_ERROR = "APIQuotaExceededError"
    GENERAL_ERROR = "GeneralError"


VALID_REASONS = ", ".join(Reason)


def parse_reason(value: object) -> Reason:
    """Return ``value`` as a Reason; only members and their exact strings are accepted."""
    if isinstance(value, str):
        try:
            return Reason(value)
        except ValueError:
            pass
    raise ValueError(f"invalid reason {value!r}; valid reasons: {VALID_REASONS}")
