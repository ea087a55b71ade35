"""Report a worker's irreversible errors as Warning events on its AIModel."""

import asyncio
import os
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from aimodel_contract import Env

from .apiclient import ApiClient
from .credentials import Credentials, load_credentials
from .errors import ApiError, ConfigError
from .events import DEFAULT_COMPONENT, build_event, is_dns_subdomain, repeat_patch, truncate_message
from .reasons import Reason, parse_reason

# Distinct (reason, message) pairs remembered for updating; the oldest are forgotten past this.
MAX_REMEMBERED_EVENTS = 256
# Where the kubelet reads a container's termination message (the pod's terminationMessagePath).
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
# The kubelet keeps at most 4096 bytes of it.
MAX_TERMINATION_MESSAGE = 4096


def write_termination_message(path: str, text: str) -> bool:
    """Write ``text`` where the kubelet reads the container's termination message; False if it cannot.

    The file must exist (the kubelet creates it in every container): outside a pod nothing is
    created, and reporting goes on without it.
    """
    if not path:
        return False
    data = text.encode("utf-8", "replace")[:MAX_TERMINATION_MESSAGE]
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    except OSError:
        return False
    try:
        os.write(fd, data)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _required(env: Mapping[str, str], variable: str) -> str:
    value = env.get(variable)
    if not value:
        raise ConfigError(f"environment variable {variable} is not set; the operator sets it in worker pods")
    return value


class Reporter:
    """Creates a Warning event per error, and updates it when the same error is reported again.

    The AIModel defaults to ``$AIMODEL_NAME`` in ``$AIMODEL_NAMESPACE``; events
    go to that namespace. Credentials: ``server`` (with ``token``, ``ca_file``,
    ``insecure``) if given, else ``credentials``, else ``load_credentials(env)``.

    Each report is also written to ``termination_log`` (``$TERMINATION_LOG``, else
    /dev/termination-log; '' for none), so that a worker that exits after reporting
    shows the same ``<reason>: <message>`` in its pod's last state.
    """

    def __init__(
        self,
        name: str | None = None,
        namespace: str | None = None,
        *,
        server: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        insecure: bool = False,
        credentials: Credentials | None = None,
        component: str = DEFAULT_COMPONENT,
        instance: str | None = None,
        host: str | None = None,
        pod: str | None = None,
        attempts: int = 5,
        backoff: float = 0.2,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
        env: Mapping[str, str] | None = None,
        termination_log: str | None = None,
    ) -> None:
        env = os.environ if env is None else env
        if termination_log is None:
            termination_log = env.get("TERMINATION_LOG", DEFAULT_TERMINATION_LOG)
        self.termination_log = termination_log
        self.name = name or _required(env, Env.AIMODEL_NAME)
        self.namespace = namespace or _required(env, Env.AIMODEL_NAMESPACE)
        if not is_dns_subdomain(self.name):
            raise ConfigError(f"AIModel name {self.name!r} is not a valid Kubernetes object name")
        self.component = component
        self.instance = instance or env.get(Env.POD_NAME) or env.get("HOSTNAME") or None
        self.host = host or env.get("NODE_NAME") or None
        # The reporting pod is named on the event, so the operator can ignore pods a rollout replaces.
        self.pod = pod or env.get(Env.POD_NAME) or None
        if server:
            credentials = Credentials(server=server.rstrip("/"), token=token, ca_file=ca_file, insecure=insecure)
        self._api = ApiClient(
            credentials or load_credentials(env), attempts=attempts, backoff=backoff, timeout=timeout, sleep=sleep
        )
        self._events_path = f"/api/v1/namespaces/{urllib.parse.quote(self.namespace, safe='')}/events"
        # The ServiceAccount cannot read events, so the events to update are remembered here.
        self._sent: OrderedDict[tuple[Reason, str], tuple[str, int]] = OrderedDict()
        self._lock = threading.Lock()

    def report(self, reason: Reason | str, message: str) -> dict[str, Any]:
        """Report an error; returns the created or updated Event."""
        reason = parse_reason(reason)
        message = truncate_message(str(message))
        key = (reason, message)
        with self._lock:
            # First, so that the pod's last state says why even if the API server cannot be reached;
            # under the lock, so that concurrent reports never interleave in the file.
            write_termination_message(self.termination_log, f"{reason.value}: {message}")
            event = None
            if key in self._sent:
                name, count = self._sent[key]
                try:
                    event = self._patch(name, count + 1)
                except ApiError as exc:
                    # Deleted or expired (events have a TTL): start a new one.
                    if exc.status != 404:
                        raise
            if event is None:
                event = self._create(reason, message)
            self._sent[key] = (event["metadata"]["name"], int(event.get("count") or 1))
            self._sent.move_to_end(key)
            if len(self._sent) > MAX_REMEMBERED_EVENTS:
                self._sent.popitem(last=False)
        return event

    async def areport(self, reason: Reason | str, message: str) -> dict[str, Any]:
        """``report`` without blocking the event loop."""
        return await asyncio.to_thread(self.report, reason, message)

    def _create(self, reason: Reason, message: str) -> dict[str, Any]:
        body = build_event(
            aimodel_name=self.name,
            namespace=self.namespace,
            reason=reason,
            message=message,
            component=self.component,
            instance=self.instance,
            host=self.host,
            pod=self.pod,
        )
        try:
            return self._api.request("POST", self._events_path, body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            # Names are random, so the conflict is our own retried POST whose first try was stored after all.
            return self._patch(body["metadata"]["name"], body["count"])

    def _patch(self, event_name: str, count: int) -> dict[str, Any]:
        return self._api.request(
            "PATCH", f"{self._events_path}/{event_name}", repeat_patch(count), "application/merge-patch+json"
        )


_default: Reporter | None = None
_default_lock = threading.Lock()


def _default_reporter() -> Reporter:
    global _default
    with _default_lock:
        if _default is None:
            _default = Reporter()
        return _default


def report_error(reason: Reason | str, message: str, **kwargs: Any) -> dict[str, Any]:
    """Report an error with ``Reporter(**kwargs)``.

    Without ``kwargs`` one shared Reporter (configured from the environment) is
    reused, so that reporting the same error again updates its event.
    """
    reason = parse_reason(reason)
    reporter = Reporter(**kwargs) if kwargs else _default_reporter()
    return reporter.report(reason, message)


async def async_report_error(reason: Reason | str, message: str, **kwargs: Any) -> dict[str, Any]:
    """``report_error`` without blocking the event loop."""
    return await asyncio.to_thread(report_error, reason, message, **kwargs)
