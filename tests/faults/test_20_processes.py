"""Processes dying: the API server, etcd and the operator itself, while models come and go."""

from __future__ import annotations

import json
import signal

import pytest
from fault_invariants import LOCAL, REMOTE, assert_alive, assert_converged, assert_writes_flat, model_manifest

from kube_helpers import wait_for


@pytest.fixture
def local(cluster):
    _, local = cluster
    if local is None:
        pytest.skip("killing control-plane processes needs the local cluster the suite starts")
    return local


def _apply_many(k, models):
    k.apply({"apiVersion": "v1", "kind": "List", "items": [model_manifest(n, s) for n, s in models.items()]})


def _api_up(k) -> bool:
    return k.run("get", "aimodels", check=False).returncode == 0


@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_control_plane_killed_and_restarted_while_models_change(operator, local, k, component):
    models = {f"m{n}": (REMOTE if n % 2 else LOCAL) for n in range(20)}
    _apply_many(k, models)
    # Killed while the operator is in the middle of creating their children.
    wait_for("the first children", lambda: k.get("deployment", "m0-deployment"), timeout=30)
    local.kill_component(component, signal.SIGKILL)
    local.restart_component(component)
    wait_for("the API answering again", lambda: _api_up(k), timeout=60)
    for n in range(5):
        k("delete", "aimodel", f"m{n}", "--wait=false")
        del models[f"m{n}"]
    more = {f"late{n}": LOCAL for n in range(5)}
    _apply_many(k, more)
    models.update(more)
    models["m10"] = dict(LOCAL, image="user/image:v2")
    k.apply(model_manifest("m10", models["m10"]))
    assert_converged(k, models, timeout=120)
    assert_alive(operator)
    assert_writes_flat(operator)


def test_operator_killed_in_the_middle_of_a_burst(operator, k, namespace):
    models = {f"b{n:03d}": LOCAL for n in range(500)}
    _apply_many(k, models)
    wait_for(
        "about a fifth of the Deployments",
        lambda: _count(k, "deployments") >= 100,
        timeout=120,
    )
    operator.proc.send_signal(signal.SIGKILL)
    operator.proc.wait(timeout=10)
    operator.proc = None
    operator.start()
    assert_converged(k, models, timeout=180)
    writes = assert_writes_flat(operator)
    # A restart re-applies nothing that was already done: at most one write per missing child and
    # one status per model, far below a second full burst (7 per model).
    assert writes <= 7 * len(models), writes


def _count(k, kind: str) -> int:
    return len(json.loads(k("get", kind, "-o", "json"))["items"])
