"""Status writes: urgent ones at once, the rest in batches that grow while changes keep coming."""

from __future__ import annotations

from aimodel_operator import statuswriter
from aimodel_operator.kube import AIMODELS, Answer, Kube
from aimodel_operator.settings import FIELD_MANAGER
from aimodel_operator.statuswriter import StatusWriter, Written
from fakekube import FakeApi, Request

KEY = ("ns", "m")


class Api(FakeApi):
    """Answers status writes like the API server would, recording them. The models here are not
    kept: each write answers a new resourceVersion whatever version it was conditional on."""

    def __init__(self) -> None:
        super().__init__()
        self.script("PATCH", AIMODELS, self._written)

    def _written(self, request: Request) -> Answer:
        assert request.subresource == "status" and request.content_type == "application/apply-patch+yaml"
        assert request.query == {"fieldManager": FIELD_MANAGER, "force": "true"}
        return Answer(200, {"metadata": {**request.body["metadata"], "resourceVersion": str(100 + len(self.written))}})

    @property
    def written(self) -> list[dict]:
        return [r.body for r in self.calls("PATCH", AIMODELS)]


def model(status):
    return {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "7"}, "status": status}


def failed(message):
    return {
        "state": "Failed",
        "message": message,
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "WorkerReportedError"}],
    }


async def test_flood_of_messages_costs_a_handful_of_writes(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(statuswriter.time, "monotonic", lambda: clock[0])
    api = Api()
    writer = StatusWriter(Kube.over(api), batch_seconds=1, max_batch_seconds=8)
    current = failed("GeneralError: 0")
    # A new report every 0.1 s for 60 s: each one a reconcile that wants a new message.
    for n in range(1, 601):
        clock[0] += 0.1
        result, _, again_in = await writer.write(KEY, model(current), failed(f"GeneralError: {n}"))
        # Deferred: the writer says when to look again (it queues nothing itself).
        assert (again_in is not None and 0 < again_in <= 8) == (result is Written.DEFERRED)
        if result is Written.WRITTEN:
            current = api.written[-1]["status"]
    # Batches of 1, 2, 4, then 8 s: about 60 / 8 + 3 writes instead of 600.
    assert 8 <= len(api.written) <= 12, len(api.written)
    # Every write is conditional on the version read.
    assert all(w["metadata"]["resourceVersion"] == "7" for w in api.written)


async def test_urgent_changes_are_written_at_once_and_quiet_resets_the_batch(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(statuswriter.time, "monotonic", lambda: clock[0])
    api = Api()
    writer = StatusWriter(Kube.over(api), batch_seconds=1, max_batch_seconds=8)
    running = {"state": "Running", "message": "ok", "observedGeneration": 1, "conditions": []}
    result, _, _ = await writer.write(KEY, model(running), failed("GeneralError: x"))
    assert result is Written.WRITTEN
    clock[0] += 100  # quiet
    assert writer._batch_for(KEY, clock[0]) == 1
    result, _, _ = await writer.write(KEY, model(failed("GeneralError: x")), failed("GeneralError: x"))
    assert result is Written.UNCHANGED


def running(ready: str, replicas: int = 3, generation: int = 1):
    return {
        "state": "Running",
        "message": "ok",
        "observedGeneration": generation,
        "readyReplicas": replicas if ready == "True" else 0,
        "conditions": [{"type": "Ready", "status": ready, "reason": "x"}],
    }


async def test_a_thousand_models_losing_their_pods_at_once_are_written_at_a_bounded_pace(monkeypatch):
    """A node fails: every model's Ready flips. The writes go out at writes_per_second after a
    burst; a worker's error report (a state change) and a spec change never wait for them."""
    clock = [1000.0]
    monkeypatch.setattr(statuswriter.time, "monotonic", lambda: clock[0])
    api = Api()
    due: dict[tuple[str, str], float] = {}
    writer = StatusWriter(Kube.over(api), writes_per_second=100, burst=200)
    keys = [("ns", f"m{i}") for i in range(1000)]
    for key in keys:
        result, _, again_in = await writer.write(key, model(running("True")), running("False"))
        assert result in (Written.WRITTEN, Written.DEFERRED)
        if again_in is not None:
            due[key] = clock[0] + again_in
    assert len(api.written) == 200, "the burst at once"
    assert len(due) == 800
    # Deferred models come back when told; each then writes exactly in its slot.
    per_second: dict[int, int] = {}
    for key, when in sorted(due.items(), key=lambda item: item[1]):
        clock[0] = when
        result, _, _ = await writer.write(key, model(running("True")), running("False"))
        assert result is Written.WRITTEN
        per_second[int(when - 1000)] = per_second.get(int(when - 1000), 0) + 1
    assert len(api.written) == 1000
    assert max(per_second.values()) <= 101, per_second
    assert 7.9 <= max(due.values()) - 1000 <= 8.1, "800 writes at 100/s"

    # Meanwhile (the bucket is empty again): a worker's report and a spec change go at once.
    for key in keys[:50]:
        result, _, _ = await writer.write(key, model(running("True")), running("False"))
    writes = len(api.written)
    result, _, _ = await writer.write(("ns", "urgent"), model(running("True")), failed("GeneralError: x"))
    assert result is Written.WRITTEN
    result, _, _ = await writer.write(("ns", "spec"), model(running("True")), running("True", generation=2))
    assert result is Written.WRITTEN
    assert len(api.written) == writes + 2
