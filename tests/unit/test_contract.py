"""The contract between the operator and its workers, defined once (aimodel_contract) and read by
both: what the operator writes into a worker pod is what the worker reads, by construction."""

from __future__ import annotations

import base64
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aimodel_contract as contract
from aimodel_operator import api, builders
from aimodel_operator.builders import Capabilities
from aimodel_operator.settings import Settings
from aimodel_worker import Reason
from aimodel_worker.events import build_event
from aimodel_worker.runner.settings import WorkerSettings

REPO = Path(__file__).resolve().parents[2]


def test_pulsar_names_of_a_model():
    assert contract.topic("TinyLlama-1.1B") == "persistent://public/default/model-TinyLlama-1.1B"
    assert contract.subscription("TinyLlama-1.1B") == "model-TinyLlama-1.1B-subscription"
    assert contract.dead_letter_topic("m") == "persistent://public/default/model-m-DLQ"
    assert contract.dead_letter_subscription("m") == "model-m-DLQ-subscription"


def test_reasons_are_the_sdks_and_parsed_exactly():
    assert Reason is contract.Reason
    assert contract.parse_reason("AuthenticationError") is Reason.AUTHENTICATION_ERROR
    for bad in ("authenticationerror", "Authentication", None, 3):
        with pytest.raises(ValueError, match="valid reasons: ConfigurationError, AuthenticationError"):
            contract.parse_reason(bad)


def _model() -> dict:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "m", "namespace": "team-a", "uid": "u-1", "generation": 1},
        "spec": {
            "type": "remote",
            "model": "gpt-4o",
            "image": "i:1",
            "baseURL": "https://api.example/v1",
            "apiKey": "k",
            "msgBacklogThreshold": 5,
        },
    }


def test_the_pod_the_operator_builds_is_what_the_worker_reads():
    """Every variable of the contract is set in the worker container (PULSAR_TOKEN and
    ANSWER_ENDPOINTS when configured), and the worker reads back the same model, topic and
    subscription as the ScaledObject KEDA watches."""
    settings = Settings(
        pulsar_admin_url="http://pulsar.queue:8080",
        pulsar_url="pulsar://pulsar.queue:6650",
        pulsar_token="t",
        res_topic_name="usage",
        answer_endpoints="https://gateway.example/res",
    )
    model = _model()
    children = builders.children(model, settings, Capabilities(keda=True))
    deployment = next(c for c in children if c["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert sorted(e["name"] for e in container["env"]) == sorted(contract.WORKER_ENV)
    # What the pod would see, the Secret's values resolved.
    secret = next(c for c in children if c["kind"] == "Secret")
    env: dict[str, str] = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = base64.b64decode(secret["data"][e["valueFrom"]["secretKeyRef"]["key"]]).decode()
    assert secret["metadata"]["name"] == builders.secret_name("m")
    read = WorkerSettings.from_env(env)
    assert (read.model_name, read.api_key, read.max_process_num) == ("gpt-4o", "k", contract.DEFAULT_MAX_PROCESS_NUM)
    assert (read.pulsar_url, read.pulsar_token, read.res_topic) == ("pulsar://pulsar.queue:6650", "t", "usage")
    assert (read.aimodel_name, read.aimodel_namespace) == ("m", "team-a")
    assert read.answer_endpoints == ("https://gateway.example/res",)
    trigger = next(c for c in children if c["kind"] == "ScaledObject")["spec"]["triggers"][0]["metadata"]
    assert (trigger["topic"], trigger["subscription"]) == (read.topic, read.subscription)


def test_defaults_agree_when_the_operator_is_not_configured():
    read = WorkerSettings.from_env({"MODEL_NAME": "m", "API_URL": "https://api.example/v1"})
    assert (read.pulsar_url, read.res_topic) == (Settings().pulsar_url, Settings().res_topic_name)
    assert read.max_process_num == api.DEFAULT_MAX_PROCESS_NUM == contract.DEFAULT_MAX_PROCESS_NUM


def test_worker_events_name_the_aimodel_by_the_crds_api_version():
    event = build_event(namespace="ns", aimodel_name="m", reason=Reason.GENERAL_ERROR, message="x")
    assert event["involvedObject"]["apiVersion"] == api.API_VERSION
    assert event["involvedObject"]["kind"] == api.KIND


def test_the_sdk_and_the_contract_need_nothing_but_the_standard_library(tmp_path: Path):
    """The test worker's image copies the SDK and the contract and installs nothing: what its
    Dockerfile copies imports under a bare interpreter (no site-packages)."""
    app = tmp_path / "app"
    app.mkdir()
    dockerfile = (REPO / "worker" / "test-worker.Dockerfile").read_text()
    copies = [line.split()[1:] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert ["src/aimodel_contract", "/app/aimodel_contract"] in copies
    for source, target in copies:
        destination = app / Path(target).relative_to("/app")
        if (REPO / source).is_dir():
            shutil.copytree(REPO / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / source, destination)
    code = "import aimodel_worker, aimodel_contract; from aimodel_worker import report_error, Reason; print('ok')"
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c", f"import sys; sys.path.insert(0, {str(app)!r}); {code}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_one_backoff_doubles_to_its_cap_with_jitter_around_it():
    from aimodel_contract import backoff

    assert [backoff.delay(n, 0.5, 4, jitter=0) for n in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert backoff.delay(10_000, 0.2, 30, jitter=0) == 30  # no overflow however long it failed
    rng = random.Random(7)
    draws = [backoff.delay(3, 1, 60, rng=rng) for _ in range(500)]
    assert all(4 <= d <= 12 for d in draws)  # 8 s, spread by half each way
    assert max(draws) - min(draws) > 6, "jitter spreads retries that failed together"
    with pytest.raises(ValueError, match="jitter"):
        backoff.delay(1, 1, 1, jitter=1)


async def test_the_informers_retry_is_jittered(monkeypatch):
    """Informers that fail together (an API server restart) do not retry in lockstep."""
    from aimodel_operator import kube
    from aimodel_operator.kube import client

    slept: list[float] = []

    async def record(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(client.asyncio, "sleep", record)
    for _ in range(50):
        await kube.sleep_backoff(2)
    assert all(0.4 <= s <= 1.2 for s in slept) and len(set(slept)) > 40, slept
