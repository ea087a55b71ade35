"""A model name belongs to one namespace (SPEC §9): the pure rule, and what reconcile() does
with it over the one fake API (tests/fakekube.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aimodel_operator import builders, claims
from aimodel_operator.controller import Controller
from aimodel_operator.kube import AIMODELS, DEPLOYMENTS, SECRETS, Kube
from aimodel_operator.settings import Settings
from fakekube import FakeApi, until

A = ("team-a", "chat")
B = ("team-b", "chat")


def aimodel(key: tuple[str, str], created: str, model: str = "gpt-4o", uid: str | None = None) -> dict:
    return {
        "metadata": {
            "name": key[1],
            "namespace": key[0],
            "generation": 1,
            "creationTimestamp": created,
            "uid": uid or f"uid-{key[0]}-{key[1]}",
        },
        "spec": {
            "type": "remote",
            "model": model,
            "image": "worker:1",
            "baseURL": "https://api.example/v1",
            "apiKey": "sk-x",
            "replicas": 1,
        },
    }


# -- the rule ------------------------------------------------------------------------------


def test_the_first_by_creation_time_holds_the_name_then_the_smaller_uid():
    early = aimodel(B, "2026-12-06T10:00:00Z")
    late = aimodel(A, "2026-12-06T10:00:01Z")
    assert claims.holder_namespace([late, early]) == "team-b"
    # Created in the same second: the uid decides, the same way wherever it is computed.
    one = aimodel(A, "2026-12-06T10:00:00Z", uid="0001")
    two = aimodel(B, "2026-12-06T10:00:00Z", uid="0002")
    assert claims.holder_namespace([two, one]) == claims.holder_namespace([one, two]) == "team-a"
    assert claims.holder_namespace([]) is None


def test_only_another_namespace_holding_the_name_blocks_a_model():
    model = aimodel(B, "2026-12-06T10:00:01Z")
    assert claims.in_use(model, "team-b") is None
    assert claims.in_use(model, None) is None
    held = claims.in_use(model, "team-a")
    assert held is not None and held.status is False and held.reason == "ModelNameInUse"
    assert "namespace team-a" in held.message and '"gpt-4o"' in held.message


# -- the reconcile ---------------------------------------------------------------------------


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[FakeApi, Controller]]:
    api = FakeApi()
    api.put(AIMODELS, aimodel(A, "2026-12-06T10:00:00Z"))
    api.put(AIMODELS, aimodel(B, "2026-12-06T10:00:05Z"))
    controller = Controller(Kube.over(api), Settings(pulsar_token="t"), workers=1)
    controller.status_writer.batch_seconds = 0
    await controller.start(gate=asyncio.Event())
    try:
        yield api, controller
    finally:
        await controller.stop()


def ready(api: FakeApi, key: tuple[str, str]) -> dict:
    status = api.object(AIMODELS, *key)["status"]
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def has_workers(api: FakeApi, key: tuple[str, str]) -> bool:
    return api.object(DEPLOYMENTS, key[0], builders.deployment_name(key[1])) is not None


def has_secret(api: FakeApi, key: tuple[str, str]) -> bool:
    return api.object(SECRETS, key[0], builders.secret_name(key[1])) is not None


async def test_the_second_namespace_gets_no_workers_no_token_and_says_who_holds_the_name(cluster):
    api, controller = cluster
    await controller.reconcile(A)
    await controller.reconcile(B)
    assert has_workers(api, A) and has_secret(api, A)
    assert not has_workers(api, B) and not has_secret(api, B)
    cond = ready(api, B)
    assert (cond["status"], cond["reason"]) == ("False", "ModelNameInUse")
    assert "namespace team-a" in cond["message"]
    assert ready(api, A)["reason"] != "ModelNameInUse"
    # Settled: reconciling the held model again writes nothing.
    await until("status seen", lambda: (controller.models.get(*B) or {}).get("status"))
    before = len(api.writes())
    await controller.reconcile(B)
    assert api.writes()[before:] == []


async def test_the_holder_deleted_the_other_namespace_is_woken_and_takes_over(cluster):
    api, controller = cluster
    await controller.reconcile(A)
    await controller.reconcile(B)
    while len(controller.queue):
        controller.queue.done(await controller.queue.get())
    api.remove(AIMODELS, *A)
    await until("B queued", lambda: len(controller.queue) == 1)
    assert await controller.queue.get() == B
    await controller.reconcile(B)
    assert has_workers(api, B) and has_secret(api, B)
    assert ready(api, B)["reason"] != "ModelNameInUse"


async def test_the_holder_naming_another_model_frees_the_name(cluster):
    api, controller = cluster
    await controller.reconcile(A)
    await controller.reconcile(B)
    renamed = api.object(AIMODELS, *A)
    renamed["spec"]["model"] = "llama-3"
    renamed["metadata"]["generation"] = 2
    api.put(AIMODELS, renamed)
    await until("name freed", lambda: controller.tenants.holder_namespace("gpt-4o") == "team-b")
    await controller.reconcile(B)
    assert has_workers(api, B)


async def test_a_model_that_loses_its_name_gives_up_its_workers_and_token(cluster):
    # Two models created in the same second are ordered by uid: the one seen first may have
    # started before the one that holds the name appeared.
    api, controller = cluster
    api.remove(AIMODELS, *A)
    await until("A gone", lambda: A not in controller.models)
    await controller.reconcile(B)
    assert has_workers(api, B) and has_secret(api, B)
    api.put(AIMODELS, aimodel(A, "2026-12-06T10:00:05Z", uid="uid-0"))
    await until("A holds the name", lambda: controller.tenants.holder_namespace("gpt-4o") == "team-a")
    await controller.reconcile(B)
    assert not has_workers(api, B) and not has_secret(api, B)
    assert ready(api, B)["reason"] == "ModelNameInUse"


async def test_models_of_one_namespace_share_a_name(cluster):
    api, controller = cluster
    second = ("team-a", "chat-2")
    api.put(AIMODELS, aimodel(second, "2026-12-06T10:00:09Z"))
    await until("seen", lambda: second in controller.models)
    await controller.reconcile(A)
    await controller.reconcile(second)
    assert has_workers(api, A) and has_workers(api, second)
