"""Unit tests of the worker SDK (aimodel_worker) and of the test worker in worker/.

HTTP behaviour is checked against a small fake of the events API served on
127.0.0.1; nothing here needs a Kubernetes cluster.
"""

import base64
import datetime as dt
import importlib.util
import ipaddress
import json
import os
import re
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import aimodel_worker
from aimodel_worker import (
    ApiError,
    ConfigError,
    Credentials,
    PermissionDenied,
    Reason,
    Reporter,
    ReportError,
    async_report_error,
    load_credentials,
    report_error,
)
from aimodel_worker import cli as report_cli
from aimodel_worker import reporter as reporter_module
from aimodel_worker.apiclient import retry_after
from aimodel_worker.credentials import in_cluster_credentials, kubeconfig_credentials, load_client_certificate
from aimodel_worker.events import build_event, is_dns_subdomain, new_event_name, timestamp
from aimodel_worker.reasons import parse_reason
from aimodel_worker.reporter import write_termination_message

REPO = Path(__file__).resolve().parents[2]
REASONS = [
    "ConfigurationError",
    "AuthenticationError",
    "MessageQueueConnectionError",
    "APIQuotaExceededError",
    "GeneralError",
]
EVENTS_PATH = "/api/v1/namespaces/models/events"
NOT_SUPPORTED = 'Local model "not-found-model" is not supported.'
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _load_worker_program():
    spec = importlib.util.spec_from_file_location("aimodel_test_worker", REPO / "worker" / "test_worker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker_program = _load_worker_program()


# --- a fake of the API server's events endpoints -------------------------------------------------


@dataclass
class Canned:
    """An answer given instead of the normal one; with ``apply`` the request still takes effect."""

    status: int
    body: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    apply: bool = False


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: dict | None
    client_cn: str | None


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


class _ApiHandler(BaseHTTPRequestHandler):
    server: "FakeApiServer"

    def log_message(self, format, *args):
        pass

    def do_POST(self):
        self._handle()

    def do_PATCH(self):
        self._handle()

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        cn = dict(attr[0] for attr in peer["subject"])["commonName"] if peer else None
        self.server.requests.append(Recorded(self.command, self.path, dict(self.headers), body, cn))
        canned = self.server.responses.pop(0) if self.server.responses else None
        status, answer, headers = self.server.apply(self.command, self.path, body)
        if canned:
            status, answer, headers = canned.status, canned.body or _status(canned.status, "", "canned"), canned.headers
            if not canned.apply:
                self.server.undo()
        data = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeApiServer(ThreadingHTTPServer):
    """Creates and merge-patches events like the API server; ``responses`` are answered first, in order."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), _ApiHandler)
        if tls:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server_address[1]}"
        self.requests: list[Recorded] = []
        self.responses: list[Canned] = []
        self.events: dict[str, dict] = {}
        self._before: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
        self._thread.start()

    def apply(self, method: str, path: str, body: dict | None) -> tuple[int, dict, dict]:
        with self._lock:
            self._before = {k: dict(v) for k, v in self.events.items()}
            if method == "POST" and path == EVENTS_PATH:
                name = body["metadata"]["name"]
                if name in self.events:
                    return 409, _status(409, "AlreadyExists", f'events "{name}" already exists'), {}
                self.events[name] = body
                return 201, body, {}
            if method == "PATCH" and path.startswith(EVENTS_PATH + "/"):
                name = path.rsplit("/", 1)[1]
                if name not in self.events:
                    return 404, _status(404, "NotFound", f'events "{name}" not found'), {}
                self.events[name] = {**self.events[name], **body}
                return 200, self.events[name], {}
            return 404, _status(404, "NotFound", "the server could not find the requested resource"), {}

    def undo(self) -> None:
        with self._lock:
            self.events = self._before

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture
def api():
    server = FakeApiServer()
    yield server
    server.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_reporter(api: FakeApiServer, sleeps: list[float], **kwargs) -> Reporter:
    kwargs.setdefault("env", {})
    return Reporter("llama", "models", server=api.url, token="t0k3n", sleep=sleeps.append, **kwargs)


def write_json(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def kubeconfig(server: str, user: dict, cluster_extra: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster_extra or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }


@pytest.fixture
def worker_env(api, monkeypatch, tmp_path):
    """The process environment of a worker outside a pod: AIMODEL_* plus a kubeconfig for ``api``."""
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "POD_NAME", "NODE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIMODEL_NAME", "llama")
    monkeypatch.setenv("AIMODEL_NAMESPACE", "models")
    monkeypatch.setenv("KUBECONFIG", str(write_json(tmp_path / "kubeconfig", kubeconfig(api.url, {"token": "t0k3n"}))))
    monkeypatch.setattr(reporter_module, "_default", None)


# --- reasons --------------------------------------------------------------------------------------


def test_reasons_are_exactly_the_five_of_the_contract():
    assert [str(r) for r in Reason] == REASONS


@pytest.mark.parametrize("value", [*REASONS, *Reason])
def test_parse_reason_accepts_members_and_their_exact_strings(value):
    assert parse_reason(value) == Reason(value)
    assert isinstance(parse_reason(value), Reason)


@pytest.mark.parametrize("value", ["configurationerror", "Configuration Error", "", "Failed", None, 3])
def test_parse_reason_rejects_anything_else_listing_the_valid_reasons(value):
    with pytest.raises(ValueError, match="invalid reason") as err:
        parse_reason(value)
    for reason in REASONS:
        assert reason in str(err.value)


def test_report_error_validates_the_reason_before_anything_else():
    with pytest.raises(ValueError, match="valid reasons: ConfigurationError"):
        report_error("Oops", "message", env={})


# --- event bodies ---------------------------------------------------------------------------------


def test_build_event_fills_every_field_of_the_contract():
    now = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    event = build_event(
        aimodel_name="llama",
        namespace="models",
        reason=Reason.CONFIGURATION_ERROR,
        message=NOT_SUPPORTED,
        event_name="llama.0123456789abcdef",
        instance="llama-7d9f-abcde",
        host="node-1",
        now=now,
    )
    assert event == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "llama.0123456789abcdef", "namespace": "models"},
        "involvedObject": {
            "apiVersion": "model.youxam.com/v1alpha1",
            "kind": "AIModel",
            "name": "llama",
            "namespace": "models",
        },
        "type": "Warning",
        "reason": "ConfigurationError",
        "message": NOT_SUPPORTED,
        "source": {"component": "aimodel-worker", "host": "node-1"},
        "reportingComponent": "aimodel-worker",
        "reportingInstance": "llama-7d9f-abcde",
        "firstTimestamp": "2024-05-06T07:08:09Z",
        "lastTimestamp": "2024-05-06T07:08:09Z",
        "count": 1,
    }
    assert "eventTime" not in event
    # The body must survive JSON as plain strings.
    assert json.loads(json.dumps(event))["reason"] == "ConfigurationError"


def test_build_event_leaves_out_unknown_instance_and_host_and_names_the_event():
    event = build_event(
        aimodel_name="llama", namespace="models", reason=Reason.GENERAL_ERROR, message="x", component="my-worker"
    )
    assert "reportingInstance" not in event
    assert event["source"] == {"component": "my-worker"}
    assert event["reportingComponent"] == "my-worker"
    assert re.fullmatch(r"llama\.[0-9a-f]{16}", event["metadata"]["name"])
    assert TIMESTAMP.fullmatch(event["firstTimestamp"])


def test_build_event_truncates_the_message_to_1024_characters():
    event = build_event(aimodel_name="m", namespace="n", reason=Reason.GENERAL_ERROR, message="é" * 1030)
    assert event["message"] == "é" * 1024


def test_event_names_are_random_and_valid_even_for_the_longest_model_names():
    names = {new_event_name("llama") for _ in range(20)}
    assert len(names) == 20
    assert all(re.fullmatch(r"llama\.[0-9a-f]{16}", n) for n in names)
    longest = "a" * 235 + "." + "b" * 17
    assert is_dns_subdomain(longest) and len(longest) == 253
    name = new_event_name(longest)
    assert len(name) <= 253
    assert is_dns_subdomain(name)
    assert name.startswith("a" * 235 + ".")


@pytest.mark.parametrize("name", ["llama", "llama-3.8b", "a", "0abc", "x" * 253])
def test_valid_object_names(name):
    assert is_dns_subdomain(name)


@pytest.mark.parametrize("name", ["", "Llama", "-llama", "llama-", "llama..x", "llama_3", "x" * 254, "a/b"])
def test_invalid_object_names(name):
    assert not is_dns_subdomain(name)


def test_timestamps_are_utc_with_whole_seconds():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    assert timestamp(dt.datetime(2024, 1, 2, 3, 4, 5, 999999, tzinfo=plus_two)) == "2024-01-02T01:04:05Z"
    assert TIMESTAMP.fullmatch(timestamp())


# --- configuration --------------------------------------------------------------------------------


def test_missing_aimodel_variables_are_named_in_the_error():
    with pytest.raises(ConfigError, match="AIMODEL_NAME is not set"):
        Reporter(env={"AIMODEL_NAMESPACE": "models"})
    with pytest.raises(ConfigError, match="AIMODEL_NAMESPACE is not set"):
        Reporter(env={"AIMODEL_NAME": "llama"})
    assert issubclass(ConfigError, ReportError)


def test_an_invalid_aimodel_name_is_a_config_error():
    with pytest.raises(ConfigError, match="not a valid Kubernetes object name"):
        Reporter("Llama_3", "models", server="http://127.0.0.1:1")


def test_in_cluster_credentials_read_the_service_account_directory(tmp_path):
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_text("ca")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    creds = in_cluster_credentials(env, tmp_path)
    assert creds == Credentials(
        server="https://10.96.0.1:443", ca_file=str(tmp_path / "ca.crt"), token_file=str(tmp_path / "token")
    )
    assert creds.bearer_token() == "first"
    # Projected tokens rotate: every request reads the file again.
    (tmp_path / "token").write_text("second")
    assert creds.bearer_token() == "second"


def test_in_cluster_ipv6_hosts_are_bracketed(tmp_path):
    (tmp_path / "token").write_text("t")
    creds = in_cluster_credentials({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, tmp_path)
    assert creds.server == "https://[fd00::1]:6443"
    assert creds.ca_file is None


def test_not_in_cluster_without_the_service_variables_or_the_token(tmp_path):
    (tmp_path / "token").write_text("t")
    assert in_cluster_credentials({}, tmp_path) is None
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster_credentials(env, tmp_path / "missing") is None


def test_json_kubeconfig_with_inline_data_and_relative_files(tmp_path):
    ca_pem = "-----BEGIN CERTIFICATE-----\nY2E=\n-----END CERTIFICATE-----\n"
    doc = kubeconfig(
        "https://127.0.0.1:6443/",
        {
            "client-certificate-data": base64.b64encode(b"CERT").decode(),
            "client-key-data": base64.b64encode(b"KEY").decode(),
            "tokenFile": "sa-token",
        },
        {"certificate-authority-data": base64.b64encode(ca_pem.encode()).decode()},
    )
    doc["clusters"].append(
        {"name": "other", "cluster": {"server": "https://other:443", "insecure-skip-tls-verify": True}}
    )
    doc["users"].append({"name": "other", "user": {"token": "abc", "client-certificate": "/abs/client.crt"}})
    doc["contexts"].append({"name": "other", "context": {"cluster": "other", "user": "other"}})
    path = write_json(tmp_path / "config.json", doc)

    creds = kubeconfig_credentials(path)
    assert creds == Credentials(
        server="https://127.0.0.1:6443",
        ca_data=ca_pem,
        token_file=str(tmp_path / "sa-token"),
        cert_data=b"CERT",
        key_data=b"KEY",
    )
    other = kubeconfig_credentials(path, context="other")
    assert other == Credentials(server="https://other:443", insecure=True, token="abc", cert_file="/abs/client.crt")


def test_yaml_kubeconfig(tmp_path):
    yaml = pytest.importorskip("yaml")
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(kubeconfig("https://k:6443", {"token": "abc"}, {"certificate-authority": "ca.crt"})))
    assert kubeconfig_credentials(path) == Credentials(
        server="https://k:6443", ca_file=str(tmp_path / "ca.crt"), token="abc"
    )


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda d: d.pop("current-context"), "no current-context"),
        (lambda d: d.update({"current-context": "nope"}), "no context named 'nope'"),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), "has no server"),
        (lambda d: d["users"][0]["user"].update({"client-key-data": "not base64!"}), "invalid base64"),
        (lambda d: d["users"][0].update({"user": {"exec": {"command": "aws"}}}), "exec plugin, which is not"),
    ],
)
def test_broken_kubeconfigs_are_config_errors(tmp_path, mutate, error):
    doc = kubeconfig("https://k:6443", {"token": "abc"})
    mutate(doc)
    with pytest.raises(ConfigError, match=error):
        kubeconfig_credentials(write_json(tmp_path / "config", doc))


def test_credentials_prefer_the_pod_then_the_first_kubeconfig_path(tmp_path):
    first = write_json(tmp_path / "first", kubeconfig("https://first:6443", {"token": "1"}))
    second = write_json(tmp_path / "second", kubeconfig("https://second:6443", {"token": "2"}))
    env = {"KUBECONFIG": os.pathsep.join([str(first), str(second)]), "HOME": str(tmp_path)}
    assert load_credentials(env, tmp_path / "no-sa").server == "https://first:6443"

    (tmp_path / "sa").mkdir()
    (tmp_path / "sa" / "token").write_text("t")
    in_pod = {**env, "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert load_credentials(in_pod, tmp_path / "sa").server == "https://10.96.0.1:443"

    (tmp_path / ".kube").mkdir()
    write_json(tmp_path / ".kube" / "config", kubeconfig("https://home:6443", {"token": "3"}))
    assert load_credentials({"HOME": str(tmp_path)}, tmp_path / "no-sa").server == "https://home:6443"


def test_no_credentials_says_what_was_looked_for(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_credentials({"HOME": str(tmp_path)}, tmp_path / "sa")
    message = str(err.value)
    for looked_for in ("KUBERNETES_SERVICE_HOST", str(tmp_path / "sa" / "token"), "KUBECONFIG", ".kube/config"):
        assert looked_for in message


def test_inline_client_certificates_go_to_private_temporary_files_that_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = {}

    class RecordingContext:
        def load_cert_chain(self, certfile, keyfile=None):
            for kind, path in (("cert", certfile), ("key", keyfile)):
                seen[kind] = (Path(path).read_bytes(), stat.S_IMODE(os.stat(path).st_mode))

    load_client_certificate(RecordingContext(), Credentials(server="https://k", cert_data=b"CERT", key_data=b"KEY"))
    assert seen == {"cert": (b"CERT", 0o600), "key": (b"KEY", 0o600)}
    assert list(tmp_path.iterdir()) == []


# --- talking to the API server --------------------------------------------------------------------


def test_report_creates_an_event(api, sleeps):
    reporter = make_reporter(api, sleeps, env={"POD_NAME": "llama-5c6d-x2x7q", "HOSTNAME": "ignored"})
    event = reporter.report("ConfigurationError", NOT_SUPPORTED)

    [request] = api.requests
    assert (request.method, request.path) == ("POST", EVENTS_PATH)
    assert request.headers["Authorization"] == "Bearer t0k3n"
    assert request.headers["Content-Type"] == "application/json"
    assert request.body["reason"] == "ConfigurationError"
    assert request.body["message"] == NOT_SUPPORTED
    assert request.body["involvedObject"]["name"] == "llama"
    assert request.body["reportingInstance"] == "llama-5c6d-x2x7q"
    # The pod is named, so the operator can ignore reports of pods a rollout replaced.
    assert request.body["related"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "llama-5c6d-x2x7q",
        "namespace": request.body["metadata"]["namespace"],
    }
    assert event == api.events[event["metadata"]["name"]]
    assert sleeps == []


def test_instance_falls_back_to_hostname_and_host_comes_from_node_name(api, sleeps):
    reporter = make_reporter(api, sleeps, env={"HOSTNAME": "llama-pod", "NODE_NAME": "node-1"})
    event = reporter.report(Reason.GENERAL_ERROR, "boom")
    assert event["reportingInstance"] == "llama-pod"
    assert event["source"] == {"component": "aimodel-worker", "host": "node-1"}
    # Without POD_NAME no pod is named: the report counts whatever pod made it.
    assert "related" not in event


def test_repeating_an_error_patches_its_event(api, sleeps):
    reporter = make_reporter(api, sleeps)
    first = reporter.report(Reason.AUTHENTICATION_ERROR, "API key rejected")
    second = reporter.report("AuthenticationError", "API key rejected")
    third = reporter.report(Reason.AUTHENTICATION_ERROR, "API key rejected")

    name = first["metadata"]["name"]
    assert second["metadata"]["name"] == third["metadata"]["name"] == name
    assert [(r.method, r.path) for r in api.requests] == [
        ("POST", EVENTS_PATH),
        ("PATCH", f"{EVENTS_PATH}/{name}"),
        ("PATCH", f"{EVENTS_PATH}/{name}"),
    ]
    patch = api.requests[1]
    assert patch.headers["Content-Type"] == "application/merge-patch+json"
    assert set(patch.body) == {"count", "lastTimestamp"}
    assert patch.body["count"] == 2
    assert TIMESTAMP.fullmatch(patch.body["lastTimestamp"])
    assert api.requests[2].body["count"] == 3
    assert second["count"] == 2
    assert api.events[name]["count"] == 3
    assert api.events[name]["firstTimestamp"] == first["firstTimestamp"]


def test_a_different_error_gets_its_own_event(api, sleeps):
    reporter = make_reporter(api, sleeps)
    a = reporter.report(Reason.GENERAL_ERROR, "one")
    b = reporter.report(Reason.GENERAL_ERROR, "two")
    c = reporter.report(Reason.CONFIGURATION_ERROR, "one")
    assert len({a["metadata"]["name"], b["metadata"]["name"], c["metadata"]["name"]}) == 3
    assert [r.method for r in api.requests] == ["POST", "POST", "POST"]


def test_a_vanished_event_is_created_anew(api, sleeps):
    reporter = make_reporter(api, sleeps)
    old = reporter.report(Reason.GENERAL_ERROR, "boom")["metadata"]["name"]
    api.events.clear()  # deleted, or expired by the API server's event TTL

    new = reporter.report(Reason.GENERAL_ERROR, "boom")
    assert [r.method for r in api.requests] == ["POST", "PATCH", "POST"]
    assert new["metadata"]["name"] != old
    assert new["count"] == 1

    again = reporter.report(Reason.GENERAL_ERROR, "boom")
    assert api.requests[-1].path == f"{EVENTS_PATH}/{new['metadata']['name']}"
    assert again["count"] == 2


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_raise_permission_denied_without_retrying(api, sleeps, status):
    forbidden = 'events is forbidden: User "system:serviceaccount:models:default" cannot create resource "events"'
    api.responses.append(Canned(status, _status(status, "Forbidden", forbidden)))
    with pytest.raises(PermissionDenied) as err:
        make_reporter(api, sleeps).report(Reason.GENERAL_ERROR, "boom")
    assert isinstance(err.value, ReportError)
    assert err.value.status == status
    assert forbidden in str(err.value)
    assert "ServiceAccount must be allowed to create" in str(err.value)
    assert len(api.requests) == 1
    assert sleeps == []


def test_transient_failures_are_retried_with_growing_jittered_backoff(api, sleeps):
    api.responses += [Canned(503), Canned(500), Canned(502)]
    event = make_reporter(api, sleeps).report(Reason.GENERAL_ERROR, "boom")
    assert [r.method for r in api.requests] == ["POST"] * 4
    assert list(api.events) == [event["metadata"]["name"]]
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):
        base = 0.2 * 2**attempt
        assert 0.5 * base <= delay <= 1.5 * base


def test_retry_after_is_honoured_on_429(api, sleeps):
    api.responses.append(Canned(429, _status(429, "TooManyRequests", "slow down"), {"Retry-After": "7"}))
    make_reporter(api, sleeps).report(Reason.GENERAL_ERROR, "boom")
    assert sleeps == [7.0]
    assert len(api.requests) == 2


def test_retry_after_values():
    now = dt.datetime(2024, 1, 1, 0, 0, 0, tzinfo=dt.UTC)
    assert retry_after("3", now) == 3.0
    assert retry_after("Mon, 01 Jan 2024 00:00:10 GMT", now) == 10.0
    assert retry_after("Sun, 31 Dec 2023 00:00:00 GMT", now) == 0.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


def test_giving_up_after_the_last_attempt(api, sleeps):
    api.responses += [Canned(503, _status(503, "ServiceUnavailable", "etcd is down"))] * 5
    with pytest.raises(ApiError, match="after 5 attempts: HTTP 503: etcd is down") as err:
        make_reporter(api, sleeps).report(Reason.GENERAL_ERROR, "boom")
    assert err.value.status == 503
    assert len(api.requests) == 5
    assert len(sleeps) == 4


def test_other_http_errors_are_not_retried(api, sleeps):
    api.responses.append(Canned(422, _status(422, "Invalid", "Event is invalid: involvedObject.namespace")))
    with pytest.raises(ApiError, match="HTTP 422: Event is invalid") as err:
        make_reporter(api, sleeps).report(Reason.GENERAL_ERROR, "boom")
    assert not isinstance(err.value, PermissionDenied)
    assert len(api.requests) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_the_token_stays_home(api, sleeps, status):
    """urllib's default opener re-sends Authorization to wherever a redirect points."""
    elsewhere = FakeApiServer()
    try:
        api.responses.append(Canned(status, {}, headers={"Location": elsewhere.url + EVENTS_PATH}))
        with pytest.raises(ApiError, match=f"HTTP {status}: redirects are not followed") as err:
            make_reporter(api, sleeps).report(Reason.GENERAL_ERROR, "boom")
        assert err.value.status == status
        assert elsewhere.requests == []
        assert len(api.requests) == 1
    finally:
        elsewhere.close()


def test_an_unreachable_server_is_retried_then_reported(sleeps):
    closed = FakeApiServer()
    closed.close()  # nothing listens on its port any more
    reporter = Reporter("llama", "models", server=closed.url, attempts=3, sleep=sleeps.append, env={})
    with pytest.raises(ReportError, match=f"cannot reach the API server at {closed.url} after 3 attempts"):
        reporter.report(Reason.GENERAL_ERROR, "boom")
    assert len(sleeps) == 2


def test_a_retried_create_that_was_stored_after_all_is_not_duplicated(api, sleeps):
    api.responses.append(Canned(504, apply=True))
    event = make_reporter(api, sleeps).report(Reason.GENERAL_ERROR, "boom")
    name = event["metadata"]["name"]
    assert [(r.method, r.path) for r in api.requests] == [
        ("POST", EVENTS_PATH),
        ("POST", EVENTS_PATH),
        ("PATCH", f"{EVENTS_PATH}/{name}"),
    ]
    assert list(api.events) == [name]
    assert event["count"] == 1


def test_a_token_file_is_read_for_every_request(api, sleeps, tmp_path):
    token = tmp_path / "token"
    token.write_text("one")
    reporter = Reporter("llama", "models", credentials=Credentials(server=api.url, token_file=str(token)), env={})
    reporter.report(Reason.GENERAL_ERROR, "boom")
    token.write_text("two")
    reporter.report(Reason.GENERAL_ERROR, "boom")
    assert [r.headers["Authorization"] for r in api.requests] == ["Bearer one", "Bearer two"]


async def test_async_forms(api, sleeps):
    reporter = make_reporter(api, sleeps)
    first = await reporter.areport(Reason.API_QUOTA_EXCEEDED_ERROR, "quota used up")
    second = await reporter.areport("APIQuotaExceededError", "quota used up")
    assert second["metadata"]["name"] == first["metadata"]["name"]
    assert second["count"] == 2
    other = await async_report_error("GeneralError", "boom", name="llama", namespace="models", server=api.url, env={})
    assert other["reason"] == "GeneralError"
    assert len(api.events) == 2


def test_report_error_shares_one_reporter_configured_from_the_environment(api, worker_env):
    first = report_error(Reason.MESSAGE_QUEUE_CONNECTION_ERROR, "cannot connect to pulsar://pulsar:6650")
    second = aimodel_worker.report_error("MessageQueueConnectionError", "cannot connect to pulsar://pulsar:6650")
    assert second["metadata"]["name"] == first["metadata"]["name"]
    assert [r.method for r in api.requests] == ["POST", "PATCH"]
    assert api.requests[0].headers["Authorization"] == "Bearer t0k3n"
    assert first["involvedObject"] == {
        "apiVersion": "model.youxam.com/v1alpha1",
        "kind": "AIModel",
        "name": "llama",
        "namespace": "models",
    }


# --- TLS ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a serving certificate for 127.0.0.1 and a client certificate, as PEM files."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)

    def issue(cn, issuer=None, issuer_key=None, ca=False, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (out / f"{cn}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (out / f"{cn}.key").write_bytes(key_pem)
        return name, key

    ca_name, ca_key = issue("test-ca", ca=True)
    issue("server", ca_name, ca_key, san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    issue("worker-client", ca_name, ca_key)
    issue("rogue-ca", ca=True)
    issue("named-server", ca_name, ca_key, san=[x509.DNSName("kube-apiserver.internal")])
    return out


@pytest.fixture
def tls_api(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "server.crt", pki / "server.key")
    ctx.load_verify_locations(pki / "test-ca.crt")
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = FakeApiServer(tls=ctx)
    yield server
    server.close()


def test_mutual_tls_from_inline_kubeconfig_data(tls_api, pki, tmp_path, monkeypatch, sleeps):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()

    def b64(name):
        return base64.b64encode((pki / name).read_bytes()).decode()

    user = {"client-certificate-data": b64("worker-client.crt"), "client-key-data": b64("worker-client.key")}
    path = write_json(
        tmp_path / "kubeconfig", kubeconfig(tls_api.url, user, {"certificate-authority-data": b64("test-ca.crt")})
    )
    env = {"AIMODEL_NAME": "llama", "AIMODEL_NAMESPACE": "models", "KUBECONFIG": str(path), "HOME": str(tmp_path)}
    event = Reporter(env=env, sleep=sleeps.append).report(Reason.CONFIGURATION_ERROR, NOT_SUPPORTED)

    assert event["message"] == NOT_SUPPORTED
    assert [r.client_cn for r in tls_api.requests] == ["worker-client"]
    assert "Authorization" not in tls_api.requests[0].headers
    assert list((tmp_path / "tmp").iterdir()) == []


def test_an_untrusted_server_certificate_fails_at_once(tls_api, pki, sleeps):
    reporter = Reporter(
        "llama", "models", server=tls_api.url, token="t", ca_file=str(pki / "rogue-ca.crt"), sleep=sleeps.append, env={}
    )
    with pytest.raises(ReportError, match="cannot verify the API server's certificate"):
        reporter.report(Reason.GENERAL_ERROR, "boom")
    assert sleeps == []
    assert tls_api.requests == []


@pytest.fixture
def named_api(pki):
    """An API server on 127.0.0.1 whose certificate names only kube-apiserver.internal."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / "named-server.crt", pki / "named-server.key")
    server = FakeApiServer(tls=ctx)
    yield server
    server.close()


def _named_kubeconfig(tmp_path, pki, url, **cluster) -> Path:
    ca = base64.b64encode((pki / "test-ca.crt").read_bytes()).decode()
    doc = kubeconfig(url, {"token": "t0k3n"}, {"certificate-authority-data": ca, **cluster})
    return write_json(tmp_path / "kubeconfig", doc)


def test_tls_server_name_is_the_name_checked_sdk_and_operator(named_api, pki, tmp_path, sleeps):
    from aimodel_operator.kube import EVENTS, Kube

    named = kubeconfig_credentials(
        _named_kubeconfig(tmp_path, pki, named_api.url, **{"tls-server-name": "kube-apiserver.internal"})
    )
    plain = kubeconfig_credentials(_named_kubeconfig(tmp_path, pki, named_api.url))
    assert named.tls_server_name == "kube-apiserver.internal"
    Reporter("llama", "models", credentials=named, sleep=sleeps.append).report(Reason.GENERAL_ERROR, "boom")
    with pytest.raises(ReportError, match="cannot verify the API server's certificate"):
        Reporter("llama", "models", credentials=plain, sleep=sleeps.append).report(Reason.GENERAL_ERROR, "boom")

    async def create(creds) -> None:
        kube = Kube(creds)
        try:
            event = build_event(
                aimodel_name="llama", namespace="models", reason=Reason.GENERAL_ERROR, message="operator"
            )
            await kube.create(EVENTS, "models", event)
        finally:
            await kube.close()

    import asyncio

    asyncio.run(create(named))
    with pytest.raises(Exception, match="certificate verify failed"):
        asyncio.run(create(plain))
    assert len(named_api.events) == 2


class RecordingProxy:
    """An HTTP proxy on loopback that answers every request itself, recording its request line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def _handler(self):
        lines = self.lines

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_POST(self):
                lines.append(self.requestline)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = json.dumps({"kind": "Event", "metadata": {"name": "via-proxy"}}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_proxy_url_is_used_sdk_and_operator(tmp_path, sleeps):
    from aimodel_operator.kube import EVENTS, Kube

    proxy = RecordingProxy()
    try:
        doc = kubeconfig("http://kube-apiserver.internal:6443", {"token": "t"}, {"proxy-url": proxy.url})
        creds = kubeconfig_credentials(write_json(tmp_path / "kubeconfig", doc))
        Reporter("llama", "models", credentials=creds, sleep=sleeps.append).report(Reason.GENERAL_ERROR, "boom")

        async def create() -> None:
            kube = Kube(creds)
            try:
                await kube.create(
                    EVENTS,
                    "models",
                    build_event(aimodel_name="llama", namespace="models", reason=Reason.GENERAL_ERROR, message="x"),
                )
            finally:
                await kube.close()

        import asyncio

        asyncio.run(create())
    finally:
        proxy.close()
    assert proxy.lines == [f"POST http://kube-apiserver.internal:6443{EVENTS_PATH} HTTP/1.1"] * 2


@pytest.mark.parametrize(
    ("cluster", "error"),
    [
        ({"insecure-skip-tls-verify": "false"}, "insecure-skip-tls-verify must be true or false, not 'false'"),
        ({"insecure-skip-tls-verify": True, "certificate-authority": "ca.crt"}, "together with insecure"),
        (
            {
                "insecure-skip-tls-verify": True,
                "certificate-authority-data": base64.b64encode(b"-----BEGIN CERTIFICATE-----").decode(),
            },
            "together with insecure",
        ),
        ({"certificate-authority-data": base64.b64encode(b"\x30\x82\x01\x0a\xff").decode()}, "not a PEM certificate"),
        ({"proxy-url": "socks5://proxy:1080"}, "not an http\\(s\\) proxy"),
        ({"tls-server-name": 5}, "tls-server-name must be a string"),
    ],
)
def test_kubeconfig_values_client_go_refuses_are_refused_naming_the_field(tmp_path, cluster, error):
    with pytest.raises(ConfigError, match=error):
        kubeconfig_credentials(write_json(tmp_path / "config", kubeconfig("https://k:6443", {"token": "t"}, cluster)))


def test_kubeconfig_files_are_merged_like_kubectl(tmp_path):
    """The first file to set current-context wins, the first entry of a name wins, missing files are
    skipped, and relative paths resolve against the file that holds them."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = {
        "clusters": [
            {"name": "shared", "cluster": {"server": "https://first:6443", "certificate-authority": "ca.crt"}}
        ],
        "users": [],
        "contexts": [],
    }
    second = kubeconfig("https://second:6443", {"tokenFile": "token"})
    second["clusters"].append({"name": "shared", "cluster": {"server": "https://ignored:6443"}})
    second["contexts"].append({"name": "both", "context": {"cluster": "shared", "user": "u"}})
    second["current-context"] = "both"
    a = write_json(tmp_path / "a" / "config", first)
    b = write_json(tmp_path / "b" / "config", second)
    env = {"KUBECONFIG": os.pathsep.join([str(tmp_path / "missing"), str(a), str(b)]), "HOME": str(tmp_path)}
    creds = load_credentials(env, tmp_path / "no-sa")
    assert creds.server == "https://first:6443"
    assert creds.ca_file == str(tmp_path / "a" / "ca.crt")
    assert creds.token_file == str(tmp_path / "b" / "token")
    with pytest.raises(ConfigError, match="none of the kubeconfig files"):
        load_credentials({"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}, tmp_path / "no-sa")


# --- the aimodel-report command -------------------------------------------------------------------


def test_cli_prints_the_event_name(api, worker_env, capsys):
    words = ["Local", "model", '"not-found-model"', "is", "not", "supported."]
    assert report_cli.main(["ConfigurationError", *words]) == 0
    name = capsys.readouterr().out.strip()
    assert api.events[name]["message"] == NOT_SUPPORTED
    assert api.events[name]["reason"] == "ConfigurationError"


def test_cli_rejects_a_bad_reason_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        report_cli.main(["ConfigError", "boom"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    for reason in REASONS:
        assert reason in err


def test_cli_exits_1_when_the_report_fails(monkeypatch, capsys):
    monkeypatch.delenv("AIMODEL_NAME", raising=False)
    assert report_cli.main(["GeneralError", "boom"]) == 1
    assert "AIMODEL_NAME is not set" in capsys.readouterr().err


def test_python_m_aimodel_worker_is_the_cli():
    src = Path(aimodel_worker.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "aimodel_worker", "Bogus", "boom"], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 2
    assert "valid reasons: ConfigurationError, AuthenticationError" in done.stderr


# --- the test worker ------------------------------------------------------------------------------


def test_worker_masks_secrets_and_lists_unset_variables():
    env = {
        "API_KEY": "sk-live-123",
        "PULSAR_TOKEN": "eyJhbGciOi",
        "db_password": "hunter2",
        "MY_SECRET_THING": "x",
        "MONKEY_BUSINESS": "m",
        "EMPTY_TOKEN": "",
        "MODEL_NAME": "llama",
        "PULSAR_URL": "pulsar://pulsar:6650",
    }
    assert worker_program.masked_environment(env) == [
        "AIMODEL_NAME=<unset>",
        "AIMODEL_NAMESPACE=<unset>",
        "API_KEY=****",
        "API_URL=<unset>",
        "EMPTY_TOKEN=",
        "MAX_PROCESS_NUM=<unset>",
        "MODEL_NAME=llama",
        "MONKEY_BUSINESS=****",
        "MY_SECRET_THING=****",
        "NODE_TYPE=<unset>",
        "PULSAR_TOKEN=****",
        "PULSAR_URL=pulsar://pulsar:6650",
        "RES_TOPIC_NAME=<unset>",
        "db_password=****",
    ]


@pytest.fixture
def worker_url(api, sleeps):
    server = worker_program.WorkerServer(("127.0.0.1", 0), lambda: make_reporter(api, sleeps))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str, **query) -> tuple[int, str, str]:
    if query:
        url += "?" + urllib.parse.urlencode(query)
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_worker_reports_the_requested_error(api, worker_url):
    status, content_type, body = get(worker_url + "/", reason="ConfigurationError", message=NOT_SUPPORTED)
    assert (status, content_type) == (200, "application/json")
    answer = json.loads(body)
    name = answer["event"]
    assert answer == {"reported": True, "reason": "ConfigurationError", "message": NOT_SUPPORTED, "event": name}
    assert api.events[name]["message"] == NOT_SUPPORTED

    status, _, body = get(worker_url + "/", reason="ConfigurationError", message=NOT_SUPPORTED)
    assert status == 200
    assert json.loads(body)["event"] == name
    assert api.events[name]["count"] == 2


def test_worker_rejects_bad_requests(api, worker_url):
    status, _, body = get(worker_url + "/", reason="Nope", message="x")
    assert status == 400
    assert json.loads(body)["valid_reasons"] == REASONS
    status, _, body = get(worker_url + "/", reason="GeneralError")
    assert status == 400
    assert "message" in json.loads(body)["error"]
    assert get(worker_url + "/elsewhere")[0] == 404
    assert api.requests == []


def test_worker_health(worker_url):
    assert get(worker_url + "/healthz") == (200, "text/plain", "ok")


def test_worker_answers_500_when_reporting_fails(api, worker_url):
    api.responses.append(Canned(403, _status(403, "Forbidden", "events is forbidden")))
    status, _, body = get(worker_url + "/", reason="AuthenticationError", message="bad key")
    assert status == 500
    answer = json.loads(body)
    assert answer["reported"] is False
    assert "events is forbidden" in answer["error"]


def test_worker_answers_500_when_misconfigured(monkeypatch):
    monkeypatch.delenv("AIMODEL_NAME", raising=False)
    server = worker_program.WorkerServer(("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        status, _, body = get(f"http://127.0.0.1:{server.server_address[1]}/", reason="GeneralError", message="x")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 500
    assert "AIMODEL_NAME is not set" in json.loads(body)["error"]


def test_worker_program_prints_its_environment_serves_and_stops_on_sigterm(api, worker_env):
    src = Path(aimodel_worker.__file__).resolve().parents[1]
    env = {**os.environ, "API_KEY": "sk-live-123", "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    env.pop("PULSAR_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "worker" / "test_worker.py"), "--host", "127.0.0.1", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not (line := proc.stdout.readline()).startswith("test worker listening"):
            assert line, "the worker exited before listening"
            lines.append(line.rstrip("\n"))
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        status, _, body = get(f"http://127.0.0.1:{port}/", reason="GeneralError", message="from the program")
        assert status == 200
        assert api.events[json.loads(body)["event"]]["message"] == "from the program"
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        proc.stdout.close()
    assert "API_KEY=****" in lines
    assert "AIMODEL_NAME=llama" in lines
    assert "sk-live-123" not in "\n".join(lines)
    assert "PULSAR_TOKEN=<unset>" in lines


def test_a_report_is_the_containers_termination_message(api, sleeps, tmp_path):
    log = tmp_path / "termination-log"
    log.write_text("")  # the kubelet creates the file in every container
    reporter = make_reporter(api, sleeps, termination_log=str(log))
    reporter.report(Reason.CONFIGURATION_ERROR, 'Local model "x" is not supported.')
    assert log.read_text() == 'ConfigurationError: Local model "x" is not supported.'
    reporter.report(Reason.GENERAL_ERROR, "second")
    assert log.read_text() == "GeneralError: second"  # the newest, not appended


def test_the_termination_log_path_comes_from_the_environment(api, sleeps, tmp_path):
    log = tmp_path / "custom-log"
    log.write_text("old and much longer content")
    reporter = make_reporter(api, sleeps, env={"TERMINATION_LOG": str(log)})
    reporter.report(Reason.AUTHENTICATION_ERROR, "bad key")
    assert log.read_text() == "AuthenticationError: bad key"


def test_outside_a_pod_no_termination_log_is_created(api, sleeps, tmp_path):
    missing = tmp_path / "termination-log"
    reporter = make_reporter(api, sleeps, termination_log=str(missing))
    reporter.report(Reason.GENERAL_ERROR, "boom")
    assert not missing.exists()
    assert len(api.events) == 1


def test_the_termination_message_is_written_even_when_the_api_server_is_unreachable(sleeps, tmp_path):
    log = tmp_path / "termination-log"
    log.write_text("")
    closed = FakeApiServer()
    closed.close()  # nothing listens on its port any more
    reporter = Reporter(
        "llama", "models", server=closed.url, attempts=1, sleep=sleeps.append, env={}, termination_log=str(log)
    )
    with pytest.raises(ReportError):
        reporter.report(Reason.MESSAGE_QUEUE_CONNECTION_ERROR, "pulsar down")
    assert log.read_text() == "MessageQueueConnectionError: pulsar down"


def test_the_termination_message_is_bounded_as_the_kubelet_bounds_it(tmp_path):
    log = tmp_path / "termination-log"
    log.write_text("")
    assert write_termination_message(str(log), "é" * 5000)
    assert len(log.read_bytes()) == 4096
