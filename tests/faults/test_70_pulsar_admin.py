"""The Pulsar admin API down, with a token per model: models created, changed and deleted while
the operator cannot make or revoke grants say why, get no workers without a credential, lose
nothing, touch nothing foreign, and converge once it is back (the suite's invariants)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
import uuid

import pytest
from fault_invariants import (
    LOCAL,
    REMOTE,
    assert_alive,
    assert_converged,
    assert_writes_flat,
    condition,
    model_manifest,
    snapshot,
)

from devcluster.base import free_port
from kube_helpers import REPO, wait_for


class Relay:
    """The Pulsar admin's port as the operator knows it: forwarded while up, closed while down."""

    def __init__(self, target: str) -> None:
        self.port = free_port()
        self.target = target
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        assert self.proc is None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "devcluster.tcpforward", f"127.0.0.1:{self.port}", self.target],
            env={"PYTHONPATH": str(REPO / "hack")},
            stdout=subprocess.DEVNULL,
        )

    def down(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def relay(pulsar):
    r = Relay(f"127.0.0.1:{int(pulsar.rsplit(':', 1)[1])}")
    yield r
    r.down()


def admin(pulsar: str, token: str, method: str, path: str, body: object = None) -> object:
    req = urllib.request.Request(
        f"{pulsar}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read()
    return json.loads(text) if text else None


def grants(pulsar: str, token: str) -> dict:
    return admin(pulsar, token, "GET", "/admin/v2/namespaces/public/default")["auth_policies"]["destination_auth"]


def test_the_pulsar_admin_down_while_models_come_change_and_go(
    operator_process, relay, pulsar, broker, pulsar_token, pulsar_signing_key, k, namespace
):
    uniq = uuid.uuid4().hex[:6]
    # Foreign: a grant on a model topic and a Secret, neither the operator's.
    foreign_topic = f"persistent/public/default/model-foreign-{uniq}"
    admin(pulsar, pulsar_token, "PUT", f"/admin/v2/{foreign_topic}")
    admin(pulsar, pulsar_token, "POST", f"/admin/v2/{foreign_topic}/permissions/someone-else", ["consume"])
    k.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "foreign"}, "stringData": {"k": "v"}})
    foreign_secret = snapshot(k, "secret", "foreign")

    operator_process.stop()
    operator_process.start(
        {
            "PULSAR_ADMIN_URL": relay.url,
            "PULSAR_URL": broker,
            "PULSAR_ADMIN_TOKEN": pulsar_token,
            "PULSAR_TOKEN_SIGNING_KEY_FILE": pulsar_signing_key,
            "PULSAR_GRANT_COLLECT_SECONDS": "1",
            "RES_TOPIC_NAME": "res-topic",
        }
    )
    models = {
        "a": dict(REMOTE, model=f"fa-{uniq}"),
        "b": dict(LOCAL, model=f"fb-{uniq}"),
        "c": dict(LOCAL, model=f"fc-{uniq}"),
    }
    # Down while the models come: each says why, and has no workers and no token.
    for name, spec in models.items():
        k.apply(model_manifest(name, spec))
    for name in models:
        ready = wait_for(
            f"{name} to say the admin is down",
            lambda name=name: (
                condition(k, name, "Ready").get("reason") == "PulsarAdminUnavailable" and condition(k, name, "Ready")
            ),
        )
        assert relay.url.removeprefix("http://") in ready["message"]
        assert k.get("deployment", f"{name}-deployment") is None
        assert k.get("secret", f"{name}-worker-secrets") is None
    assert_alive(operator_process)

    relay.up()
    assert_converged(k, models, per_model_tokens=True)
    held = grants(pulsar, pulsar_token)
    for name, spec in models.items():
        assert held[f"persistent://public/default/model-{spec['model']}"][f"aimodel:{namespace}:{name}"] == ["consume"]

    # Down again while one changes and one goes: the change needs no admin call (its grants are
    # made), the deletion's revocation waits for the admin.
    relay.down()
    models["a"] = dict(models["a"], image="user/image:v2")
    k.apply(model_manifest("a", models["a"]))
    k("delete", "aimodel", "c")
    del models["c"]
    assert_converged(k, models, per_model_tokens=True)
    relay.up()
    gone = f"persistent://public/default/model-fc-{uniq}"
    wait_for("c's grants revoked", lambda: not grants(pulsar, pulsar_token).get(gone))

    assert_writes_flat(operator_process)
    held = grants(pulsar, pulsar_token)
    assert held[f"persistent://public/default/model-foreign-{uniq}"] == {"someone-else": ["consume"]}
    assert snapshot(k, "secret", "foreign") == foreign_secret
    api_key = base64.b64decode(k.get("secret", "a-worker-secrets")["data"]["API_KEY"]).decode()
    assert api_key == REMOTE["apiKey"]
    assert_alive(operator_process)
