"""reconcile() driven from cache contents, over the one fake API (tests/fakekube.py).

The controller's informers list and watch the fake like the API server; the
reconcile is called directly (no worker loop runs), so each test sees exactly
the writes one reconcile makes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aimodel_operator import builders
from aimodel_operator.controller import Controller
from aimodel_operator.kube import AIMODELS, DEPLOYMENTS, EVENTS, Kube
from aimodel_operator.loop import DONE
from aimodel_operator.settings import Settings
from fakekube import FakeApi, until

KEY = ("ns", "m")


def aimodel(replicas: int = 1, generation: int = 1) -> dict:
    return {
        "metadata": {"name": "m", "namespace": "ns", "generation": generation},
        "spec": {
            "type": "remote",
            "model": "gpt-4o",
            "image": "worker:1",
            "baseURL": "https://api.example/v1",
            "apiKey": "sk-x",
            "replicas": replicas,
        },
    }


@pytest.fixture
async def running() -> AsyncIterator[tuple[FakeApi, Controller]]:
    api = FakeApi()
    api.put(AIMODELS, aimodel())
    controller = Controller(Kube.over(api), Settings(), workers=1)
    # Status batching (a non-urgent change waits up to a second) is the writer's own concern,
    # tested in test_statuswriter: here each reconcile writes what it computed.
    controller.status_writer.batch_seconds = 0
    # Never opened: the caches fill and follow the fake, no worker loop takes keys.
    await controller.start(gate=asyncio.Event())
    try:
        yield api, controller
    finally:
        await controller.stop()


def writes(api: FakeApi, since: int = 0) -> list[tuple[str, str, str | None]]:
    return [(w.method, w.resource.kind if w.resource else w.path, w.subresource) for w in api.writes()[since:]]


async def test_a_new_model_gets_its_children_and_one_status_then_nothing_more(running):
    api, controller = running
    result = await controller.reconcile(KEY)
    assert result == DONE
    # Each child applied once (the Role and its binding, the Secret and the Deployment go
    # concurrently as their dependencies allow), then one status write; Events are the recorder's.
    children = [(m, k, sub) for m, k, sub in writes(api) if k != "Event"]
    assert sorted(children[:-1]) == [
        ("PATCH", kind, None) for kind in ("Deployment", "Role", "RoleBinding", "Secret", "ServiceAccount")
    ]
    assert children[-1] == ("PATCH", "AIModel", "status")
    status = api.object(AIMODELS, *KEY)["status"]
    assert status["observedGeneration"] == 1 and status["state"] in ("Pending", "Running")
    deployment = api.object(DEPLOYMENTS, "ns", builders.deployment_name("m"))
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == api.object(AIMODELS, *KEY)["metadata"]["uid"]

    # The caches follow the fake's watches: the same reconcile again writes nothing.
    before = len(api.writes())
    await until("model cache current", lambda: (controller.models.get(*KEY) or {}).get("status"))
    await controller.reconcile(KEY)
    assert writes(api, before) == []


async def test_a_spec_change_rolls_the_deployment_once(running):
    api, controller = running
    await controller.reconcile(KEY)
    await until("model cache current", lambda: (controller.models.get(*KEY) or {}).get("status"))
    changed = api.object(AIMODELS, *KEY)
    changed["spec"]["replicas"] = 3
    changed["metadata"]["generation"] = 2
    api.put(AIMODELS, changed)
    await until("new spec seen", lambda: controller.models.get(*KEY)["metadata"]["generation"] == 2)
    before = len(api.writes())
    await controller.reconcile(KEY)
    assert [k for _, k, sub in writes(api, before) if k != "Event"] == ["Deployment", "AIModel"]
    assert api.object(DEPLOYMENTS, "ns", builders.deployment_name("m"))["spec"]["replicas"] == 3
    assert api.object(AIMODELS, *KEY)["status"]["observedGeneration"] == 2


async def test_a_worker_report_becomes_failed_with_one_status_write(running):
    api, controller = running
    await controller.reconcile(KEY)
    await until("model cache current", lambda: (controller.models.get(*KEY) or {}).get("status"))
    api.put(
        EVENTS,
        {
            "metadata": {"name": "m.report", "namespace": "ns"},
            "type": "Warning",
            "reason": "AuthenticationError",
            "message": "Invalid API key",
            "involvedObject": {"kind": "AIModel", "namespace": "ns", "name": "m"},
            "source": {"component": "aimodel-worker"},
        },
    )
    await until("report taken in", lambda: controller.intake.latest.get(KEY))
    before = len(api.writes())
    await controller.reconcile(KEY)
    assert [(k, sub) for _, k, sub in writes(api, before) if k != "Event"] == [("AIModel", "status")]
    status = api.object(AIMODELS, *KEY)["status"]
    assert status["state"] == "Failed" and "Invalid API key" in status["message"]
