"""The worker SDK reporting as a worker pod would: the model's ServiceAccount token, the Deployment's env."""

from __future__ import annotations

import base64
import json

import pytest

from aimodel_worker import PermissionDenied, Reason, Reporter
from kube_helpers import drop_namespace, wait_for

SAMPLE = {
    "apiVersion": "model.youxam.com/v1alpha1",
    "kind": "AIModel",
    "metadata": {"name": "ai-model-sample"},
    "spec": {"type": "local", "model": "TinyLlama-1.1B", "replicas": 1, "image": "user/image:tag"},
}


@pytest.fixture(scope="module")
def api_server(kubeconfig, tmp_path_factory):
    """(server URL, CA file) of the test cluster, as a pod would get them."""
    text = kubeconfig.read_text()
    if text.lstrip().startswith("{"):
        cfg = json.loads(text)
    else:
        import yaml

        cfg = yaml.safe_load(text)
    cluster = cfg["clusters"][0]["cluster"]
    ca = tmp_path_factory.mktemp("ca") / "ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return cluster["server"], str(ca)


def worker_reporter(k, api_server, model="ai-model-sample") -> Reporter:
    """A Reporter set up exactly like one inside a worker pod of ``model``."""
    deployment = wait_for("the Deployment", lambda: k.get("deployment", f"{model}-deployment"))
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"] if "value" in e}
    token = k.create_token(pod["serviceAccountName"])
    server, ca = api_server
    return Reporter(server=server, token=token, ca_file=ca, env=env)


def state(k, name="ai-model-sample"):
    return (k.get("aimodel", name).get("status") or {}).get("state"), (k.get("aimodel", name).get("status") or {}).get(
        "message"
    )


def test_each_reason_fails_the_model(operator, k, api_server):
    k.apply(SAMPLE)
    reporter = worker_reporter(k, api_server)
    for generation, reason in enumerate(Reason, start=2):
        message = f"worker says {reason.value}"
        event = reporter.report(reason, message)
        assert event["involvedObject"]["name"] == "ai-model-sample"
        wait_for(f"Failed with {reason.value}", lambda m=message, r=reason: state(k) == ("Failed", f"{r.value}: {m}"))
        # A spec change resets the model, ready for the next reason.
        k(
            "patch",
            "aimodel",
            "ai-model-sample",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"replicas": generation % 2}}),
        )
        wait_for("Running after the change", lambda: state(k)[0] == "Running")


def test_repeat_after_spec_change_fails_again(operator, k, api_server):
    k.apply(SAMPLE)
    reporter = worker_reporter(k, api_server)
    first = reporter.report(Reason.AUTHENTICATION_ERROR, "the API key was refused")
    wait_for("Failed", lambda: state(k)[0] == "Failed")
    k("patch", "aimodel", "ai-model-sample", "--type=merge", "-p", '{"spec":{"maxProcessNum":64}}')
    wait_for("Running", lambda: state(k)[0] == "Running")
    again = reporter.report(Reason.AUTHENTICATION_ERROR, "the API key was refused")
    assert again["metadata"]["name"] == first["metadata"]["name"] and again["count"] == 2
    wait_for("Failed again", lambda: state(k) == ("Failed", "AuthenticationError: the API key was refused"))


def test_a_worker_cannot_touch_another_namespace(operator, k, kubectl, namespace, api_server):
    other = f"{namespace}-b"
    kubectl("create", "namespace", other)
    try:
        kb = kubectl.in_namespace(other)
        wait_for("the other namespace's default ServiceAccount", lambda: kb.get("serviceaccount", "default"))
        # Same AIModel name, another model name (a model name belongs to one namespace).
        kb.apply({**SAMPLE, "spec": {**SAMPLE["spec"], "model": "another-model"}})
        k.apply(SAMPLE)
        wait_for("B's model Running", lambda: state(kb)[0] == "Running")
        reporter_a = worker_reporter(k, api_server)
        # RBAC: A's worker may not write events in B at all.
        server, ca = api_server
        token_a = k.create_token("ai-model-sample-worker")
        into_b = Reporter(server=server, token=token_a, ca_file=ca, name="ai-model-sample", namespace=other)
        with pytest.raises(PermissionDenied):
            into_b.report(Reason.GENERAL_ERROR, "let me fail your model")
        # What it can write, in its own namespace, only ever concerns models of its own namespace.
        reporter_a.report(Reason.GENERAL_ERROR, "about my own model")
        wait_for("A's model Failed", lambda: state(k)[0] == "Failed")
        assert state(kb)[0] == "Running"
    finally:
        drop_namespace(kubectl, other)


def test_the_test_worker_reports_over_http(operator, k, api_server, tmp_path):
    """worker/test_worker.py run like a pod: the Deployment's env, the model's token, an error asked over HTTP."""
    import os
    import subprocess
    import sys
    import urllib.parse
    import urllib.request

    from devcluster.cluster import free_port
    from kube_helpers import REPO

    k.apply(SAMPLE)
    deployment = wait_for("the Deployment", lambda: k.get("deployment", "ai-model-sample-deployment"))
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value", "") for e in pod["containers"][0]["env"] if "valueFrom" not in e}
    server, ca = api_server
    kubeconfig = tmp_path / "worker-kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": ca}}],
                "users": [{"name": "w", "user": {"token": k.create_token(pod["serviceAccountName"])}}],
                "contexts": [{"name": "w", "context": {"cluster": "c", "user": "w"}}],
                "current-context": "w",
            }
        )
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "worker" / "test_worker.py"), "--host", "127.0.0.1", "--port", str(port)],
        env={"PATH": os.environ["PATH"], "KUBECONFIG": str(kubeconfig), "API_KEY": "sk-very-secret", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def healthy() -> bool:
        assert proc.poll() is None, "the test worker exited"
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for("the worker's /healthz", healthy)
        query = urllib.parse.urlencode({"reason": "ConfigurationError", "message": 'Local model "x" is not supported.'})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?{query}", timeout=30) as resp:
            answer = json.loads(resp.read())
        assert answer["reported"] is True and answer["event"]
        wait_for(
            "Failed through the test worker",
            lambda: state(k) == ("Failed", 'ConfigurationError: Local model "x" is not supported.'),
        )
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "AIMODEL_NAME=ai-model-sample" in out and "sk-very-secret" not in out
