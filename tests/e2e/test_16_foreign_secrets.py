"""Other people's Secrets stay theirs, and weigh nothing: the operator reads only the metadata of
Secrets it does not own, and reads a referenced Secret by name, keeping hashes of its values.

1000 foreign Secrets of 500 KB each (500 MB, the size of many Helm releases) are put in the
cluster; the operator's peak memory and its start time must stay flat. Before, it listed every
Secret with its data: each 500-Secret page (250 MB of JSON) was parsed whole.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import pytest

from kube_helpers import wait_for

COUNT = 1000
SIZE = 500 * 1024


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _start(operator_process) -> tuple[float, float]:
    """Start the operator; (seconds until ready, peak resident MiB once ready)."""
    operator_process.stop()
    started = time.monotonic()
    operator_process.start()
    ready = time.monotonic() - started
    return ready, _peak_rss_mib(operator_process.proc.pid)


async def _create_secrets(kubeconfig: Path, namespace: str) -> None:
    from aimodel_operator.kube import SECRETS, Kube
    from aimodel_worker.credentials import kubeconfig_credentials

    payload = base64.b64encode(b"x" * SIZE).decode()
    kube = Kube(kubeconfig_credentials(kubeconfig), pool_size=8)
    slots = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        labels = {"owner": "helm", "name": f"release-{i}"}
        if i % 10 == 0:  # carries our label, but no AIModel controls it
            labels["app.kubernetes.io/managed-by"] = "aimodel-operator"
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"sh.helm.release.v1.r{i}.v1", "namespace": namespace, "labels": labels},
            "data": {"release": payload, "API_KEY": base64.b64encode(f"sk-{i}".encode()).decode()},
        }
        async with slots:
            await kube.create(SECRETS, namespace, secret)

    try:
        await asyncio.gather(*(one(i) for i in range(COUNT)))
    finally:
        await kube.close()


@pytest.mark.timeout(900)
def test_a_thousand_foreign_secrets_of_500_kb_leave_memory_and_start_time_flat(
    operator_process, crds_installed, kubeconfig, namespace, k
):
    base_ready, base_peak = _start(operator_process)
    began = time.monotonic()
    asyncio.run(_create_secrets(kubeconfig, namespace))
    created = time.monotonic() - began
    ready, peak = _start(operator_process)
    print(
        f"\n{COUNT} Secrets of {SIZE // 1024} KB created in {created:.1f}s; operator ready in "
        f"{base_ready:.2f}s -> {ready:.2f}s, peak {base_peak:.1f} -> {peak:.1f} MiB"
    )
    # 500 MB of Secret data; reading it raised the peak by hundreds of MiB. What remains: the 100
    # that carry our label are listed (10 to a page, each page parsed whole before the transform
    # drops what no AIModel controls): about 30 MiB measured, at most a page's worth.
    assert peak - base_peak < 50, (base_peak, peak)
    assert ready < base_ready + 3, (base_ready, ready)

    # A model still uses one of them by reference, and sees its key rotate.
    k.apply(
        {
            "apiVersion": "model.youxam.com/v1alpha1",
            "kind": "AIModel",
            "metadata": {"name": "ref"},
            "spec": {
                "type": "remote",
                "model": "gpt-4o",
                "baseURL": "https://api.example.test",
                "image": "user/image:tag",
                "apiKeySecretRef": {"name": "sh.helm.release.v1.r7.v1", "key": "API_KEY"},
            },
        }
    )
    k("wait", "--for=condition=Ready", "aimodel/ref", "--timeout=60s")

    def pod_hash() -> str:
        dep = k.get("deployment", "ref-deployment") or {}
        return ((dep.get("spec") or {}).get("template", {}).get("metadata", {}).get("annotations") or {}).get(
            "model.youxam.com/secret-hash", ""
        )

    first = pod_hash()
    assert first
    k("patch", "secret", "sh.helm.release.v1.r7.v1", "--type=merge", "-p", '{"stringData":{"API_KEY":"sk-rotated"}}')
    wait_for("the workers rolled on the rotated key", lambda: pod_hash() not in ("", first))
    assert _peak_rss_mib(operator_process.proc.pid) - base_peak < 50
    # The labelled Secrets no AIModel controls are untouched.
    labelled = k.json("get", "secrets", "-l", "app.kubernetes.io/managed-by=aimodel-operator")["items"]
    assert len(labelled) == COUNT // 10
    assert all(s["metadata"]["resourceVersion"] and not s["metadata"].get("ownerReferences") for s in labelled)
    operator_process.stop()
