"""Build the core/v1 Event bodies that report a worker error."""

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from aimodel_contract import API_VERSION, Reason

DEFAULT_COMPONENT = "aimodel-worker"
MAX_MESSAGE_LENGTH = 1024
# reportingInstance is limited to 128 characters by the API server's event validation.
MAX_INSTANCE_LENGTH = 128
MAX_NAME_LENGTH = 253
_SUFFIX_LENGTH = 1 + 16  # "." and 16 hex digits
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_subdomain(value: str) -> bool:
    """Whether ``value`` is a valid Kubernetes object name (RFC 1123 subdomain)."""
    return len(value) <= MAX_NAME_LENGTH and _DNS_SUBDOMAIN.fullmatch(value) is not None


def new_event_name(aimodel_name: str) -> str:
    """``<aimodel_name>.<16 random hex digits>``, shortened to stay a valid name."""
    prefix = aimodel_name[: MAX_NAME_LENGTH - _SUFFIX_LENGTH].rstrip(".-")
    return f"{prefix}.{secrets.token_hex(8)}"


def truncate_message(message: str) -> str:
    """Cut ``message`` to the length the operator copies into the status."""
    return message[:MAX_MESSAGE_LENGTH]


def timestamp(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with whole seconds, as core/v1 Event timestamps expect."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_event(
    *,
    aimodel_name: str,
    namespace: str,
    reason: Reason,
    message: str,
    event_name: str | None = None,
    component: str = DEFAULT_COMPONENT,
    instance: str | None = None,
    host: str | None = None,
    pod: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A new Warning event about the AIModel ``namespace/aimodel_name``.

    ``eventTime`` stays unset on purpose: with it the API server applies the
    events.k8s.io rules, which also require ``action`` and ``reportingController``.
    """
    stamp = timestamp(now)
    source = {"component": component}
    if host:
        source["host"] = host
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name or new_event_name(aimodel_name), "namespace": namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": "AIModel",
            "name": aimodel_name,
            "namespace": namespace,
        },
        "type": "Warning",
        "reason": str(reason),
        "message": truncate_message(message),
        "source": source,
        "reportingComponent": component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    if instance:
        event["reportingInstance"] = instance[:MAX_INSTANCE_LENGTH]
    if pod:
        # Which worker reports: during a rollout, reports of replaced pods are ignored.
        event["related"] = {"apiVersion": "v1", "kind": "Pod", "name": pod, "namespace": namespace}
    return event


def repeat_patch(count: int, now: datetime | None = None) -> dict[str, Any]:
    """JSON merge patch recording one more occurrence of an existing event."""
    return {"count": count, "lastTimestamp": timestamp(now)}
