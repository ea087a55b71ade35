"""Worker error intake: which Warning events are reports, and which report is the newest."""

import copy

import pytest

from aimodel_operator import intake
from aimodel_operator.intake import FIELD_SELECTOR, Intake, parse
from aimodel_operator.status import Report

KEY = ("default", "ai-model-sample")
MESSAGE = 'Local model "not-found-model" is not supported.'


def event(
    rv: str = "200",
    name: str = "ai-model-sample.17e0c1a2b3c4d5e6",
    namespace: str = "default",
    reason: str = "ConfigurationError",
    message: str = MESSAGE,
    **involved,
) -> dict:
    """A Warning event as the uplion reference worker creates it: no apiVersion, no uid on involvedObject."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv},
        "involvedObject": {"kind": "AIModel", "name": "ai-model-sample", "namespace": namespace, **involved},
        "reason": reason,
        "message": message,
        "type": "Warning",
        "source": {"component": "ai-model-sample-deployment-8464ffcfff-6xh7g"},
        "count": 1,
        "firstTimestamp": "2024-07-10T17:30:00Z",
        "lastTimestamp": "2024-07-10T17:30:00Z",
    }


def test_field_selector():
    assert FIELD_SELECTOR == "involvedObject.kind=AIModel,type=Warning"


def test_parse_reference_worker_event():
    assert parse(event()) == (KEY, Report(200, "ConfigurationError", MESSAGE))
    assert Report(200, "ConfigurationError", MESSAGE).text == f"ConfigurationError: {MESSAGE}"


@pytest.mark.parametrize(
    "reason",
    [
        "ConfigurationError",
        "AuthenticationError",
        "MessageQueueConnectionError",
        "APIQuotaExceededError",
        "GeneralError",
    ],
)
def test_parse_every_reason(reason):
    parsed = parse(event(reason=reason))
    assert parsed is not None
    assert parsed[1].reason == reason


def test_parse_accepts_our_api_version_and_uid():
    assert parse(event(apiVersion="model.youxam.com/v1alpha1", uid="u1")) == (
        KEY,
        Report(200, "ConfigurationError", MESSAGE),
    )


def test_parse_without_involved_namespace_uses_event_namespace():
    ev = event(namespace="team-a")
    del ev["involvedObject"]["namespace"]
    assert parse(ev) == (("team-a", "ai-model-sample"), Report(200, "ConfigurationError", MESSAGE))


def test_parse_bounds_message():
    parsed = parse(event(message="m" * 5000))
    assert parsed is not None
    assert len(parsed[1].message) == 1024  # the same bound as the status message and the SDK
    assert len(parsed[1].text) <= 1024


def test_parse_missing_message():
    ev = event()
    del ev["message"]
    assert parse(ev) == (KEY, Report(200, "ConfigurationError", ""))


def _with(ev: dict, path: str, value) -> dict:
    ev = copy.deepcopy(ev)
    *parents, leaf = path.split(".")
    target = ev
    for p in parents:
        target = target.setdefault(p, {})
    target[leaf] = value
    return ev


@pytest.mark.parametrize(
    "ev",
    [
        _with(event(), "type", "Normal"),
        _with(event(), "reason", "BackOff"),
        _with(event(), "reason", "configurationerror"),
        _with(event(), "reason", None),
        _with(event(), "involvedObject.kind", "Pod"),
        _with(event(), "involvedObject.namespace", "other"),
        _with(event(), "involvedObject.name", ""),
        _with(event(), "involvedObject.apiVersion", "apps/v1"),
        _with(event(), "involvedObject.apiVersion", "v1"),
        _with(event(), "involvedObject.apiVersion", "model.youxam.com.evil.io/v1alpha1"),
        _with(event(), "source.component", "aimodel-operator"),
        _with(event(), "reportingComponent", "aimodel-operator"),
    ],
    ids=[
        "normal",
        "unknown-reason",
        "reason-case",
        "no-reason",
        "other-kind",
        "other-namespace",
        "no-name",
        "other-group",
        "core-group",
        "lookalike-group",
        "operator-source",
        "operator-reporting-component",
    ],
)
def test_parse_rejects(ev):
    assert parse(ev) is None


def test_parse_rejects_cross_namespace_report():
    # Written in namespace A, naming a model in namespace B.
    ev = event(namespace="a")
    ev["involvedObject"]["namespace"] = "b"
    assert parse(ev) is None


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, key) -> None:
        self.calls.append(key)


def test_handle_keeps_newest_and_notifies_once_per_newer_report():
    rec = Recorder()
    i = Intake(rec)
    i.handle("ADDED", event(rv="200"))
    assert rec.calls == [KEY]
    assert i.get(KEY) == Report(200, "ConfigurationError", MESSAGE)

    # Older or equal resourceVersions are no news.
    i.handle("MODIFIED", event(rv="200"))
    i.handle("ADDED", event(rv="150", name="older", reason="GeneralError", message="old"))
    assert rec.calls == [KEY]
    assert i.get(KEY) == Report(200, "ConfigurationError", MESSAGE)

    i.handle("ADDED", event(rv="300", name="newer", reason="AuthenticationError", message="bad key"))
    assert rec.calls == [KEY, KEY]
    assert i.get(KEY) == Report(300, "AuthenticationError", "bad key")


def test_handle_bumped_event_is_new_report():
    rec = Recorder()
    i = Intake(rec)
    first = event(rv="200")
    i.handle("ADDED", first)
    bumped = copy.deepcopy(first)
    bumped["metadata"]["resourceVersion"] = "250"
    bumped["count"] = 2
    bumped["lastTimestamp"] = "2024-07-10T17:35:00Z"
    i.handle("MODIFIED", bumped)
    assert rec.calls == [KEY, KEY]
    assert i.get(KEY).resource_version == 250


def test_handle_ignores_deleted():
    rec = Recorder()
    i = Intake(rec)
    i.handle("DELETED", event(rv="200"))
    assert rec.calls == []
    assert i.get(KEY) is None
    i.handle("ADDED", event(rv="200"))
    i.handle("DELETED", event(rv="400"))
    assert rec.calls == [KEY]
    assert i.get(KEY).resource_version == 200


def test_handle_ignores_non_reports():
    rec = Recorder()
    i = Intake(rec)
    i.handle("ADDED", _with(event(), "type", "Normal"))
    i.handle("ADDED", _with(event(), "involvedObject.namespace", "other"))
    assert rec.calls == []
    assert i.latest == {}


def test_handle_keys_are_per_model():
    rec = Recorder()
    i = Intake(rec)
    i.handle("ADDED", event(rv="300"))
    other = event(rv="200", namespace="team-a")
    i.handle("ADDED", other)
    assert rec.calls == [KEY, ("team-a", "ai-model-sample")]
    assert i.get(KEY).resource_version == 300
    assert i.get(("team-a", "ai-model-sample")).resource_version == 200


def test_prune():
    i = Intake(Recorder())
    i.handle("ADDED", event(rv="300"))
    i.handle("ADDED", event(rv="200", namespace="team-a"))
    i.prune({KEY, ("x", "y")}.__contains__)
    assert set(i.latest) == {KEY}
    i.prune(set().__contains__)
    assert i.latest == {}
    assert i.get(KEY) is None


def test_report_names_its_pod_from_related():
    ev = event()
    ev["related"] = {"apiVersion": "v1", "kind": "Pod", "name": "m-deployment-7d4b9c-x2x9z", "namespace": "default"}
    assert parse(ev)[1].pod == "m-deployment-7d4b9c-x2x9z"
    ev["related"]["kind"] = "Node"
    assert parse(ev)[1].pod == ""


def _from_pod(rv, pod, reason="AuthenticationError"):
    ev = event(rv=rv, reason=reason)
    ev["related"] = {"kind": "Pod", "name": pod}
    return ev


def test_reports_from_a_replaced_replica_set_are_ignored():
    i = Intake(Recorder())
    i.handle("ADDED", _from_pod("300", "m-deployment-new-aaaaa", "GeneralError"))
    i.handle("ADDED", _from_pod("400", "m-deployment-old-bbbbb"))
    assert i.get(KEY).resource_version == 400
    replaced = {"m-deployment-old"}.__contains__
    # The old ReplicaSet's later report does not hide the current one's.
    assert i.get(KEY, replaced).reason == "GeneralError"
    # A report without a pod (the Go reference worker's) always counts.
    i.handle("ADDED", event(rv="500", reason="ConfigurationError"))
    assert i.get(KEY, replaced).reason == "ConfigurationError"


def test_reports_kept_per_model_are_bounded():
    i = Intake(Recorder())
    for n in range(20):
        i.handle("ADDED", _from_pod(str(100 + n), f"m-deployment-rs{n}-aaaaa"))
    assert len(i.latest[KEY]) == intake.KEPT_PER_MODEL
    assert i.get(KEY).resource_version == 119


def test_replica_set_of():
    assert intake.replica_set_of("m-deployment-7d4b9c-x2x9z") == "m-deployment-7d4b9c"
    assert intake.replica_set_of("") == ""


def test_reasons():
    assert sorted(intake.REASONS) == [
        "APIQuotaExceededError",
        "AuthenticationError",
        "ConfigurationError",
        "GeneralError",
        "MessageQueueConnectionError",
    ]


def test_reports_on_unknown_models_are_bounded(monkeypatch):
    monkeypatch.setattr(intake, "MAX_UNKNOWN_MODELS", 3)
    i = Intake(Recorder(), known=lambda key: key == KEY)
    i.handle("ADDED", event(rv="100"))
    for n in range(10):
        ev = event(rv=str(200 + n))
        ev["involvedObject"]["name"] = f"made-up-{n}"
        i.handle("ADDED", ev)
    # The known model's report stays; of the made-up ones only the newest few.
    assert KEY in i.latest
    assert sorted(k[1] for k in i.latest if k != KEY) == ["made-up-7", "made-up-8", "made-up-9"]


def _report_seconds(part: str) -> tuple[float, float]:
    from aimodel_operator import metrics

    sample = {s.name + str(s.labels): s.value for m in metrics.REPORT_SECONDS.collect() for s in m.samples}
    return sample[f"aimodel_operator_report_seconds_count{{'part': '{part}'}}"], sample[
        f"aimodel_operator_report_seconds_sum{{'part': '{part}'}}"
    ]


def test_a_reports_time_in_the_operator_is_measured_once_from_its_first_arrival():
    i = Intake(lambda key: None)
    i.handle("ADDED", event(rv="300"))
    first = i.arrived[KEY]
    i.handle("ADDED", event(rv="301", name="second"))  # a second report before the write: the first one counts
    assert i.arrived[KEY] == first
    queued, written = _report_seconds("queued"), _report_seconds("written")
    i.shown(KEY, sent=first + 0.002, answered=first + 0.009)
    assert _report_seconds("queued") == (queued[0] + 1, pytest.approx(queued[1] + 0.002))
    assert _report_seconds("written") == (written[0] + 1, pytest.approx(written[1] + 0.007))
    i.shown(KEY, sent=first + 1, answered=first + 2)  # a later status write, no report waiting: nothing
    assert _report_seconds("queued")[0] == queued[0] + 1
    i.handle("ADDED", event(rv="302", name="third"))
    i.drop(KEY)
    assert KEY not in i.arrived
