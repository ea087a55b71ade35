"""apiKeySecretRef targets: read by name only when their resourceVersion moved, kept as hashes."""

from __future__ import annotations

import asyncio

from aimodel_operator.kube import SECRETS, Kube
from aimodel_operator.refs import SecretRefs, secret_value_hash
from fakekube import FakeApi


class Names(dict):
    def get(self, namespace, name):  # type: ignore[override]
        return super().get((namespace, name))


def secrets() -> FakeApi:
    """Each read of a Secret takes a moment, as over a network."""
    return FakeApi(delay=0.01)


def reads(api: FakeApi) -> int:
    return len(api.calls("GET", SECRETS))


def put(api: FakeApi, data: str) -> dict:
    return api.put(SECRETS, {"metadata": {"namespace": "ns", "name": "creds"}, "data": {"API_KEY": data}})


def listed(secret: dict) -> dict:
    return {"metadata": {k: secret["metadata"][k] for k in ("namespace", "name", "resourceVersion")}}


def model(name: str, secret: str = "creds") -> dict:
    return {"metadata": {"namespace": "ns", "name": name}, "spec": {"apiKeySecretRef": {"name": secret}}}


async def test_read_once_per_change_shared_by_models_and_kept_as_hashes():
    names, api = Names(), secrets()
    refs = SecretRefs(Kube.over(api), names)  # type: ignore[arg-type]
    await refs.load(model("a"))
    assert refs.values("ns", "creds") is None and reads(api) == 0, "not listed: not read"

    names[("ns", "creds")] = listed(put(api, "c2VjcmV0"))
    await asyncio.gather(*(refs.load(model(f"m{i}")) for i in range(50)))
    assert reads(api) == 1
    assert refs.values("ns", "creds") == {"API_KEY": secret_value_hash("c2VjcmV0")}
    assert "c2VjcmV0" not in repr(refs._values)

    await refs.load(model("a"))
    assert reads(api) == 1, "unchanged: not read again"
    names[("ns", "creds")] = listed(put(api, "b3RoZXI="))
    await refs.load(model("a"))
    assert reads(api) == 2 and refs.values("ns", "creds") == {"API_KEY": secret_value_hash("b3RoZXI=")}

    del names[("ns", "creds")]
    await refs.load(model("a"))
    assert refs.values("ns", "creds") is None and reads(api) == 2


async def test_a_model_without_reference_reads_nothing():
    api = secrets()
    refs = SecretRefs(Kube.over(api), Names())  # type: ignore[arg-type]
    await refs.load({"metadata": {"namespace": "ns", "name": "m"}, "spec": {"apiKey": "x"}})
    assert reads(api) == 0
