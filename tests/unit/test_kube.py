"""REST paths: every name is one escaped path segment."""

import pytest

from aimodel_operator.kube import DEPLOYMENTS, SECRETS, resource_of, segment


def test_names_cannot_climb_out_of_their_namespace():
    path = SECRETS.path("team-a", "../../kube-system/secrets/x")
    assert path == "/api/v1/namespaces/team-a/secrets/..%2F..%2Fkube-system%2Fsecrets%2Fx"
    assert SECRETS.path("team-a", "a?b#c") == "/api/v1/namespaces/team-a/secrets/a%3Fb%23c"
    for bad in (".", ".."):
        with pytest.raises(ValueError):
            segment(bad)


def test_paths_and_the_resource_they_address():
    assert DEPLOYMENTS.path("ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"
    assert DEPLOYMENTS.path() == "/apis/apps/v1/deployments"
    assert resource_of("/apis/model.youxam.com/v1alpha1/namespaces/ns/aimodels/m/status") == "aimodels/status"
    assert resource_of("/api/v1/namespaces/ns/events") == "events"
