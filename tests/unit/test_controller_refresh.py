"""After a status write refused as stale, the operator reads the AIModel again with the verbs its
RBAC grants on AIModels (list, watch): a GET was refused with 403 under config/default."""

from __future__ import annotations

import pytest

from aimodel_operator.controller import LOOK_AGAIN_MAX_SECONDS, Controller
from aimodel_operator.loop import DONE, Result
from aimodel_operator.settings import Settings
from aimodel_operator.statuswriter import AIMODELS

KEY = ("ns", "m")


class Kube:
    """Answers lists like the API server; any GET of an AIModel is what the RBAC refuses."""

    def __init__(self, items: list[dict]) -> None:
        self.items = items
        self.calls: list[tuple] = []

    async def get(self, res, namespace, name):
        self.calls.append(("get", res.plural, namespace, name))
        raise AssertionError("GET aimodels is not granted to the operator")

    async def list(self, res, limit=500, namespace=None, metadata_only=False, query=None):
        self.calls.append(("list", res.plural, namespace, query))
        yield {"metadata": {"resourceVersion": "9"}, "items": self.items}


def model(rv: str) -> dict:
    return {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": rv, "uid": "u"}, "spec": {}}


@pytest.mark.parametrize("found", [True, False])
async def test_refresh_lists_the_model_by_name(found):
    kube = Kube([model("8")] if found else [])
    controller = Controller(kube, Settings())
    result = await controller._refresh(KEY)
    assert kube.calls == [("list", AIMODELS.plural, "ns", {"fieldSelector": "metadata.name=m"})]
    if found:
        assert controller.models.get(*KEY)["metadata"]["resourceVersion"] == "8"
        # Newer than the cache: reconciled again in full, at once (the loop requeues it).
        assert result == Result(requeue_after=0)
    else:
        assert controller.models.get(*KEY) is None
        assert result == DONE


async def test_refresh_finding_what_the_cache_holds_looks_again_with_growing_pauses():
    kube = Kube([model("8")])
    controller = Controller(kube, Settings())
    controller.models.remember(model("8"))
    result = await controller._refresh(KEY)
    assert result == Result(backoff_cap=LOOK_AGAIN_MAX_SECONDS)
