"""Fixtures of the fault suite: a fault proxy between the operator and the real API server."""

from __future__ import annotations

import pytest

from faults.faultproxy import FaultProxy
from kube_helpers import OperatorProcess

# A silent watch is taken for dead this fast in the fault suite (the default is 90 s).
WATCH_IDLE = "5"


@pytest.fixture
def proxy(kubeconfig):
    with FaultProxy(kubeconfig) as p:
        yield p


@pytest.fixture
def proxied_operator(crds_installed, operator_process, operator_identity, proxy, tmp_path):
    """The operator, alone (the session's operator stopped), talking to the API server through ``proxy``,
    as the session's fenced ServiceAccount."""
    operator_process.stop()
    op = OperatorProcess(proxy.kubeconfig_path(tmp_path, token=operator_identity[1]), tmp_path)
    op.start(extra_args=(f"--watch-idle-timeout={WATCH_IDLE}",))
    yield op
    op.stop()
