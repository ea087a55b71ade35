"""The fault-injection proxy itself, against the real API server."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from faults.faultproxy import FaultProxy
from kube_helpers import Kubectl, wait_for

pytestmark = pytest.mark.e2e


class Watch:
    """A raw watch request through the proxy, read event by event with deadlines."""

    def __init__(self, proxy: FaultProxy, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        self.sock = self.conn.sock

    def next(self, timeout: float) -> dict | None:
        """The next event; None at a clean end of the stream; TimeoutError when nothing comes."""
        self.sock.settimeout(timeout)
        line = self.resp.readline()
        return json.loads(line) if line else None

    def wait(self, what: str, check: Callable[[dict], bool], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.next(max(deadline - time.monotonic(), 0.01))
            if event is None:
                raise AssertionError(f"the watch ended before {what}")
            if check(event):
                return event

    def close(self) -> None:
        self.conn.close()


def added(name: str) -> Callable[[dict], bool]:
    return lambda e: e["type"] == "ADDED" and e["object"]["metadata"]["name"] == name


def is_error(e: dict) -> bool:
    return e["type"] == "ERROR"


@pytest.fixture
def proxy(kubeconfig):
    with FaultProxy(kubeconfig) as p:
        yield p


@pytest.fixture
def pk(proxy, kubectl, namespace, tmp_path) -> Kubectl:
    """kubectl through the proxy, in the test's namespace."""
    return Kubectl(kubectl.binary, proxy.kubeconfig_path(tmp_path), namespace)


@pytest.fixture
def watches(proxy, namespace):
    """Opens ConfigMap watches in the namespace, from the resourceVersion of a list made now."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    conn.request("GET", f"/api/v1/namespaces/{namespace}/configmaps")
    rv = json.loads(conn.getresponse().read())["metadata"]["resourceVersion"]
    conn.close()
    opened: list[Watch] = []

    def open_watch() -> Watch:
        opened.append(Watch(proxy, f"/api/v1/namespaces/{namespace}/configmaps?watch=true&resourceVersion={rv}"))
        return opened[-1]

    yield open_watch
    for w in opened:
        w.close()


def test_kubectl_through_the_proxy(proxy, pk, namespace):
    assert namespace in pk("get", "namespaces", "-o", "name")
    assert any(r.path.startswith("/api/v1/namespaces") and r.status == 200 for r in proxy.requests())


def test_a_token_keeps_its_identity(proxy, k, namespace, tmp_path):
    # With the operator's client: kubectl (client-go) sends no credentials over plain HTTP.
    from aimodel_operator.kube import Kube
    from aimodel_worker.credentials import kubeconfig_credentials

    async def whoami(kubeconfig: Path) -> str:
        kube = Kube(kubeconfig_credentials(kubeconfig))
        try:
            review = await kube.request(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        finally:
            await kube.close()
        return review["status"]["userInfo"]["username"]

    token = k.create_token("default")
    as_sa = asyncio.run(whoami(proxy.kubeconfig_path(tmp_path, token=token)))
    assert as_sa == f"system:serviceaccount:{namespace}:default"
    assert asyncio.run(whoami(proxy.kubeconfig_path(tmp_path))) == "devcluster-admin"


def test_fail_all_then_heal(proxy, pk):
    proxy.fail_all()
    res = pk.run("get", "configmaps", check=False)
    assert res.returncode != 0
    assert any(r.status == 503 for r in proxy.requests()), proxy.requests()
    proxy.heal()
    pk("get", "configmaps")

    proxy.fail_all(503, seconds=1)
    assert pk.run("get", "configmaps", check=False).returncode != 0
    wait_for("the failure to lapse", lambda: pk.run("get", "configmaps", check=False).returncode == 0, timeout=20)


def test_fail_all_body_is_a_status(proxy):
    proxy.fail_all(503)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", "/api/v1/namespaces")
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 503
    assert resp.getheader("Content-Type").startswith("application/json")
    assert json.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "injected",
        "reason": "ServiceUnavailable",
        "code": 503,
    }


def test_watch_event_then_injected_error(proxy, watches, k):
    w = watches()
    k("create", "configmap", "one")
    w.wait("ADDED one", added("one"))
    proxy.inject_watch_error(500)
    event = w.wait("the ERROR event", is_error)
    assert event["object"]["code"] == 500
    assert event["object"]["reason"] == "InternalError"
    assert w.next(timeout=10) is None  # then a clean end


def test_expire_watches(proxy, watches, k):
    w_open = watches()
    proxy.expire_watches(count=1)
    for w in (w_open, watches()):  # the open watch, then the next one
        event = w.wait("the 410 ERROR event", is_error)
        assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")
        assert w.next(timeout=10) is None
    w_after = watches()  # the count is used up
    k("create", "configmap", "after")
    w_after.wait("ADDED after", added("after"))


def test_half_open_stream_receives_nothing(proxy, watches, k):
    w_dead = watches()
    k("create", "configmap", "before")
    w_dead.wait("ADDED before", added("before"))
    proxy.half_open()
    k("create", "configmap", "during")
    w_new = watches()
    w_new.wait("ADDED during on a new watch", added("during"))
    proxy.heal()  # does not revive it
    k("create", "configmap", "healed")
    w_new.wait("ADDED healed on the new watch", added("healed"))
    # The new watch has both events; the half-open one, fed by the same API server, gets none.
    with pytest.raises(TimeoutError):
        w_dead.next(timeout=1)


def test_cut_breaks_open_streams(proxy, watches, k):
    w = watches()
    k("create", "configmap", "one")
    w.wait("ADDED one", added("one"))
    proxy.cut()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        w.wait("the connection error", lambda e: False, timeout=10)

    w = watches()
    proxy.fail_all()  # cuts the open streams too
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        w.wait("the connection error", lambda e: False, timeout=10)


def test_writes_are_recorded(proxy, pk, namespace):
    since = time.monotonic()
    pk("create", "configmap", "written")
    pk("get", "configmap", "written")
    pk("delete", "configmap", "written")
    writes = [(r.method, r.path.split("?")[0], r.status) for r in proxy.writes(since)]
    assert writes == [
        ("POST", f"/api/v1/namespaces/{namespace}/configmaps", 201),
        ("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/written", 200),
    ]
    gets = [r for r in proxy.requests(since) if r.method == "GET"]
    assert any(r.path.startswith(f"/api/v1/namespaces/{namespace}/configmaps/written") for r in gets)
    assert proxy.writes(time.monotonic()) == []
