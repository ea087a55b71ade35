"""Status writes: urgent ones at once, the rest in batches that grow while changes keep coming."""

from __future__ import annotations

from aimodel_operator import statuswriter
from aimodel_operator.statuswriter import StatusWriter, Written

KEY = ("ns", "m")


class Api:
    """Answers status writes like the API server would, recording them."""

    def __init__(self) -> None:
        self.written: list[dict] = []

    async def apply_to(self, res, body, subresource=None):
        self.written.append(body)
        return {"metadata": {**body["metadata"], "resourceVersion": str(100 + len(self.written))}}


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
    api, requeued = Api(), []
    writer = StatusWriter(api, lambda key, delay: requeued.append(delay), batch_seconds=1, max_batch_seconds=8)
    current = failed("GeneralError: 0")
    # A new report every 0.1 s for 60 s: each one a reconcile that wants a new message.
    for n in range(1, 601):
        clock[0] += 0.1
        result, _ = await writer.write(KEY, model(current), failed(f"GeneralError: {n}"))
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
    writer = StatusWriter(api, lambda key, delay: None, batch_seconds=1, max_batch_seconds=8)
    running = {"state": "Running", "message": "ok", "observedGeneration": 1, "conditions": []}
    result, _ = await writer.write(KEY, model(running), failed("GeneralError: x"))
    assert result is Written.WRITTEN
    clock[0] += 100  # quiet
    assert writer._batch_for(KEY, clock[0]) == 1
    result, _ = await writer.write(KEY, model(failed("GeneralError: x")), failed("GeneralError: x"))
    assert result is Written.UNCHANGED
