"""After a status write refused as stale, the operator reads the AIModel again with the verbs its
RBAC grants on AIModels (list, watch): a GET was refused with 403 under config/default."""

from __future__ import annotations

import pytest

from aimodel_operator.controller import Controller
from aimodel_operator.kube import AIMODELS, Answer, Kube
from aimodel_operator.loop import DONE, Result
from aimodel_operator.reconciler import LOOK_AGAIN_MAX_SECONDS
from aimodel_operator.settings import Settings
from fakekube import FakeApi

KEY = ("ns", "m")


def api_with(found: bool) -> FakeApi:
    """Answers lists like the API server; a GET of one AIModel is what the RBAC refuses."""
    api = FakeApi()
    api.script("GET", AIMODELS, lambda r: Answer(403, {"message": "get aimodels is forbidden"}) if r.name else None)
    if found:
        api.put(AIMODELS, {"metadata": {"name": "m", "namespace": "ns"}, "spec": {}})
    return api


@pytest.mark.parametrize("found", [True, False])
async def test_refresh_lists_the_model_by_name(found):
    api = api_with(found)
    controller = Controller(Kube.over(api), Settings())
    result = await controller._refresh(KEY)
    assert [(r.method, r.resource, r.namespace, r.query) for r in api.requests] == [
        ("GET", AIMODELS, "ns", {"fieldSelector": "metadata.name=m", "limit": "1"})
    ]
    if found:
        assert (
            controller.models.get(*KEY)["metadata"]["resourceVersion"]
            == api.object(AIMODELS, *KEY)["metadata"]["resourceVersion"]
        )
        # Newer than the cache: reconciled again in full, at once (the loop requeues it).
        assert result == Result(requeue_after=0)
    else:
        assert controller.models.get(*KEY) is None
        assert result == DONE


async def test_refresh_finding_what_the_cache_holds_looks_again_with_growing_pauses():
    api = api_with(True)
    controller = Controller(Kube.over(api), Settings())
    controller.models.remember(api.object(AIMODELS, *KEY))
    result = await controller._refresh(KEY)
    assert result == Result(backoff_cap=LOOK_AGAIN_MAX_SECONDS)
