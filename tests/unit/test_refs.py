"""apiKeySecretRef targets: read by name only when their resourceVersion moved, kept as hashes."""

from __future__ import annotations

import asyncio

from aimodel_operator.refs import SecretRefs, secret_value_hash


class Names(dict):
    def get(self, namespace, name):  # type: ignore[override]
        return super().get((namespace, name))


class Secrets:
    """What a GET of a Secret answers; counts the reads, each taking a moment."""

    def __init__(self) -> None:
        self.objects: dict = {}
        self.gets = 0

    async def get(self, res, namespace, name):
        self.gets += 1
        await asyncio.sleep(0.01)
        return self.objects.get((namespace, name))


def model(name: str, secret: str = "creds") -> dict:
    return {"metadata": {"namespace": "ns", "name": name}, "spec": {"apiKeySecretRef": {"name": secret}}}


def listed(rv: str) -> dict:
    return {"metadata": {"namespace": "ns", "name": "creds", "resourceVersion": rv}}


async def test_read_once_per_change_shared_by_models_and_kept_as_hashes():
    names, kube = Names(), Secrets()
    refs = SecretRefs(kube, names)  # type: ignore[arg-type]
    await refs.load(model("a"))
    assert refs.values("ns", "creds") is None and kube.gets == 0, "not listed: not read"

    names[("ns", "creds")] = listed("5")
    kube.objects[("ns", "creds")] = {**listed("5"), "data": {"API_KEY": "c2VjcmV0"}}
    await asyncio.gather(*(refs.load(model(f"m{i}")) for i in range(50)))
    assert kube.gets == 1
    assert refs.values("ns", "creds") == {"API_KEY": secret_value_hash("c2VjcmV0")}
    assert "c2VjcmV0" not in repr(refs._values)

    await refs.load(model("a"))
    assert kube.gets == 1, "unchanged: not read again"
    names[("ns", "creds")] = listed("9")
    kube.objects[("ns", "creds")] = {**listed("9"), "data": {"API_KEY": "b3RoZXI="}}
    await refs.load(model("a"))
    assert kube.gets == 2 and refs.values("ns", "creds") == {"API_KEY": secret_value_hash("b3RoZXI=")}

    del names[("ns", "creds")]
    await refs.load(model("a"))
    assert refs.values("ns", "creds") is None and kube.gets == 2


async def test_a_model_without_reference_reads_nothing():
    kube = Secrets()
    refs = SecretRefs(kube, Names())  # type: ignore[arg-type]
    await refs.load({"metadata": {"namespace": "ns", "name": "m"}, "spec": {"apiKey": "x"}})
    assert kube.gets == 0
