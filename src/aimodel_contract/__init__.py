"""The contract between the operator and its workers, defined once for both.

What an ``aimodel-worker`` (or any worker a user writes) and the operator must agree on: the
AIModel's API version, the reasons a worker may report, the Pulsar names derived from a model,
the environment variables the operator sets in worker pods and their defaults. The operator
builds pods and reads reports with these names; the reference worker and the SDK read their
settings and write their reports with them. Standard library only: the SDK is copied into
images without installing anything, and this module goes with it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

GROUP = "model.youxam.com"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AIModel"


class Reason(StrEnum):
    """Event ``reason`` values a worker reports for an irreversible error; the operator turns each
    into a ``Failed`` status. Any other reason is not a worker error."""

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


# -- Pulsar: where a model's requests wait ------------------------------------------------------

TOPIC_PREFIX = "persistent://public/default/"


def topic(model: str) -> str:
    """The topic the gateway queues a model's requests on."""
    return f"{TOPIC_PREFIX}model-{model}"


def subscription(model: str) -> str:
    """The Shared subscription every worker of the model consumes from (KEDA reads its backlog)."""
    return f"model-{model}-subscription"


def dead_letter_topic(model: str) -> str:
    """Where a request handed back too many times goes."""
    return f"{topic(model)}-DLQ"


def dead_letter_subscription(model: str) -> str:
    """Created with the dead-letter topic so that what lands there is kept until read."""
    return f"model-{model}-DLQ-subscription"


# -- Worker environment: set by the operator in every worker container --------------------------


class Env:
    """The environment variables of a worker container that the operator sets (plain strings)."""

    NODE_TYPE: Final = "NODE_TYPE"
    MODEL_NAME: Final = "MODEL_NAME"
    API_URL: Final = "API_URL"
    API_KEY: Final = "API_KEY"
    MAX_PROCESS_NUM: Final = "MAX_PROCESS_NUM"
    PULSAR_URL: Final = "PULSAR_URL"
    PULSAR_TOKEN: Final = "PULSAR_TOKEN"
    RES_TOPIC_NAME: Final = "RES_TOPIC_NAME"
    ANSWER_ENDPOINTS: Final = "ANSWER_ENDPOINTS"
    AIMODEL_NAME: Final = "AIMODEL_NAME"
    AIMODEL_NAMESPACE: Final = "AIMODEL_NAMESPACE"
    # The pod's own name: a worker names itself as the reporting instance of its events.
    POD_NAME: Final = "POD_NAME"


# Every variable above: what a user's pod template may not set on the worker container.
WORKER_ENV: tuple[str, ...] = tuple(v for k, v in vars(Env).items() if k.isupper())


DEFAULT_PULSAR_URL = "pulsar://localhost:6650"
DEFAULT_RES_TOPIC_NAME = "res-topic"
DEFAULT_MAX_PROCESS_NUM = 128
