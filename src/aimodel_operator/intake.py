"""Worker error intake: Warning events naming an AIModel become reports for its reconcile."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from aimodel_contract import Reason

from . import api, metrics
from .informer import rv_int
from .logs import fields
from .objects import Key, Manifest
from .settings import COMPONENT
from .status import Report, bound

log = logging.getLogger(__name__)


# Ask the API server only for what can be a worker report.
FIELD_SELECTOR = f"involvedObject.kind={api.KIND},type=Warning"
REASONS = frozenset(r.value for r in Reason)


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
    related = event.get("related") or {}
    pod = related.get("name", "") if related.get("kind") == "Pod" else ""
    report = Report(rv_int(event), event["reason"], bound(str(event.get("message") or "")), pod=str(pod))
    return (namespace, involved["name"]), report


def replica_set_of(pod: str) -> str:
    """The ReplicaSet a Deployment's pod belongs to: its name without the last dash-separated part."""
    return pod.rsplit("-", 1)[0] if "-" in pod else ""


# Reports kept per AIModel: one per ReplicaSet they came from (and one without a pod), newest first.
KEPT_PER_MODEL = 4
# AIModels not (yet) known that reports are kept for: a flood naming made-up models stays bounded.
MAX_UNKNOWN_MODELS = 1000


class Intake:
    """The newest report per AIModel and per ReplicaSet of its workers.

    A report names its pod (the SDK sets ``related``); during a rollout the
    pods of an older ReplicaSet may still report an error the new spec
    fixed, so the reconcile asks for the newest report that does not come
    from a replaced ReplicaSet. Reports without a pod always count.
    """

    def __init__(self, on_report: Callable[[Key], None], known: Callable[[Key], bool] | None = None) -> None:
        self.on_report = on_report
        self.known = known
        self.latest: dict[Key, dict[str, Report]] = {}
        # When the oldest report not yet shown in status arrived, per AIModel (metrics.REPORT_SECONDS).
        self.arrived: dict[Key, float] = {}
        # Keys of unknown AIModels holding reports, oldest first (a report may come before its model is listed).
        self._unknown: OrderedDict[Key, None] = OrderedDict()

    def handle(self, kind: str, event: Manifest) -> None:
        # A deleted event (TTL) does not undo a report: status remembers it.
        if kind == "DELETED":
            return
        parsed = parse(event)
        if parsed is None:
            return
        key, report = parsed
        if self.known is not None and not self.known(key) and key not in self.latest:
            self._unknown[key] = None
            if len(self._unknown) > MAX_UNKNOWN_MODELS:
                oldest, _ = self._unknown.popitem(last=False)
                self.latest.pop(oldest, None)
        by_rs = self.latest.setdefault(key, {})
        rs = replica_set_of(report.pod)
        known = by_rs.get(rs)
        if known is not None and known.resource_version >= report.resource_version:
            return
        by_rs[rs] = report
        if len(by_rs) > KEPT_PER_MODEL:
            oldest_rs = min(by_rs, key=lambda r: by_rs[r].resource_version)
            del by_rs[oldest_rs]
        metrics.WORKER_REPORTS.labels(reason=report.reason).inc()
        self.arrived.setdefault(key, time.monotonic())
        log.debug("report", extra=fields(namespace=key[0], name=key[1], reason=report.reason, pod=report.pod))
        self.on_report(key)

    def get(self, key: Key, replaced: Callable[[str], bool] | None = None) -> Report | None:
        """The newest report on ``key`` that does not come from a ReplicaSet ``replaced`` says is old."""
        best = None
        for rs, report in (self.latest.get(key) or {}).items():
            if rs and replaced is not None and replaced(rs):
                continue
            if best is None or report.resource_version > best.resource_version:
                best = report
        return best

    def shown(self, key: Key, sent: float, answered: float) -> None:
        """The status write sent at ``sent`` and answered at ``answered`` shows ``key``'s reports."""
        arrived = self.arrived.pop(key, None)
        if arrived is not None:
            metrics.REPORT_SECONDS.labels(part="queued").observe(max(0.0, sent - arrived))
            metrics.REPORT_SECONDS.labels(part="written").observe(answered - sent)

    def drop(self, key: Key) -> None:
        self.arrived.pop(key, None)
        self.latest.pop(key, None)
        self._unknown.pop(key, None)

    def prune(self, known: Callable[[Key], bool]) -> None:
        """Forget reports about AIModels that do not exist (anymore)."""
        for key in [k for k in self.latest if not known(k)]:
            del self.latest[key]
        self._unknown.clear()
