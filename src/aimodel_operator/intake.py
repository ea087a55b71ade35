"""Worker error intake: Warning events naming an AIModel become reports for its reconcile."""

from __future__ import annotations

import logging
from collections.abc import Callable

from . import api, metrics
from .builders import Manifest
from .informer import rv_int
from .settings import COMPONENT
from .status import Report, bound
from .workqueue import Key

log = logging.getLogger(__name__)


# Ask the API server only for what can be a worker report.
FIELD_SELECTOR = f"involvedObject.kind={api.KIND},type=Warning"
REASONS = frozenset(r.value for r in api.ErrorReason)


def _from_operator(event: Manifest) -> bool:
    source = (event.get("source") or {}).get("component")
    return COMPONENT in (source, event.get("reportingComponent"))


def parse(event: Manifest) -> tuple[Key, Report] | None:
    """The (AIModel key, report) an event carries, or None when it is not a worker report."""
    if event.get("type") != "Warning" or event.get("reason") not in REASONS or _from_operator(event):
        return None
    involved = event.get("involvedObject") or {}
    if involved.get("kind") != api.KIND:
        return None
    api_version = involved.get("apiVersion")
    # The uplion reference worker sets no apiVersion; when set it must be ours.
    if api_version and api_version.split("/")[0] != api.GROUP:
        return None
    namespace = event["metadata"].get("namespace", "")
    # An event may only speak for models of its own namespace: the worker's
    # Role lets it write events there, and nowhere else.
    if involved.get("namespace", namespace) != namespace or not involved.get("name"):
        return None
    report = Report(rv_int(event), event["reason"], bound(str(event.get("message") or "")))
    return (namespace, involved["name"]), report


class Intake:
    def __init__(self, on_report: Callable[[Key], None]) -> None:
        self.on_report = on_report
        self.latest: dict[Key, Report] = {}

    def handle(self, kind: str, event: Manifest) -> None:
        # A deleted event (TTL) does not undo a report: status remembers it.
        if kind == "DELETED":
            return
        parsed = parse(event)
        if parsed is None:
            return
        key, report = parsed
        known = self.latest.get(key)
        if known is not None and known.resource_version >= report.resource_version:
            return
        self.latest[key] = report
        metrics.WORKER_REPORTS.labels(reason=report.reason).inc()
        log.debug("report namespace=%s name=%s reason=%s", key[0], key[1], report.reason)
        self.on_report(key)

    def get(self, key: Key) -> Report | None:
        return self.latest.get(key)

    def prune(self, known: set[Key]) -> None:
        """Forget reports about AIModels that do not exist (anymore)."""
        for key in [k for k in self.latest if k not in known]:
            del self.latest[key]


def tiny(event: Manifest) -> Manifest:
    """What the informer keeps of an event: enough to follow its resourceVersion."""
    meta = event["metadata"]
    return {
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "resourceVersion": meta.get("resourceVersion"),
        }
    }
