"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

API_WRITES = Counter(
    "aimodel_operator_api_writes_total", "API write requests sent, by HTTP method and resource.", ["method", "resource"]
)
API_CONNECTIONS = Counter(
    "aimodel_operator_api_connections_opened_total",
    "Connections opened to the API server, for requests or for watches: requests reuse theirs, a"
    " steady rise there means connections are not being kept.",
    ["use"],
)
RECONCILES = Counter("aimodel_operator_reconciles_total", "Reconciles run, by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "aimodel_operator_reconcile_seconds",
    "Time spent in one reconcile.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WORKER_REPORTS = Counter(
    "aimodel_operator_worker_reports_total", "Worker error events accepted, by reason.", ["reason"]
)
REPORT_SECONDS = Histogram(
    "aimodel_operator_report_seconds",
    "A worker's report in the operator, by part: 'queued' from its Event's arrival until the status"
    " write that shows it is sent, 'written' that write until its answer.",
    ["part"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
for _part in ("queued", "written"):
    REPORT_SECONDS.labels(part=_part)  # shown (at zero) before the first report
QUEUE_DEPTH = Gauge("aimodel_operator_queue_depth", "AIModels waiting to be reconciled.")
MODELS = Gauge("aimodel_operator_aimodels", "AIModels known to the operator.")
PULSAR_ADMIN_REQUESTS = Counter(
    "aimodel_operator_pulsar_admin_requests_total",
    "Requests to the Pulsar admin API (a token per model: topics, subscriptions, grants), by method and outcome.",
    ["method", "outcome"],
)
RESYNC_CPU_SECONDS = Counter(
    "aimodel_operator_resync_cpu_seconds", "CPU time spent queueing every AIModel on the periodic resyncs."
)
