"""/metrics with --metrics-secure (what config/ and the chart deploy): HTTPS, and only for callers the
real API server authenticates (TokenReview) and authorizes for get on /metrics (SubjectAccessReview).
The operator runs as the suite's ServiceAccount, with config/rbac's rules only."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
import yaml

from kube_helpers import REPO, OperatorProcess

READER = "aimodel-operator-suite-metrics-reader"


@pytest.fixture(scope="module")
def metrics_reader(kubectl):
    """config/rbac's metrics-reader ClusterRole, under a name of the suite's."""
    role = yaml.safe_load((REPO / "config" / "rbac" / "metrics_reader_role.yaml").read_text())
    role["metadata"] = {"name": READER}
    kubectl("apply", "--server-side", "-f", "-", input=json.dumps(role))
    yield READER
    kubectl("delete", "clusterrole", READER, "--ignore-not-found")


@pytest.fixture
def tokens(kubectl, k, namespace, metrics_reader):
    """Tokens of a ServiceAccount granted metrics-reader, and of one granted nothing."""
    for sa in ("scraper", "nobody"):
        k("create", "serviceaccount", sa)
    binding = f"{namespace}-scraper"
    kubectl(
        "create",
        "clusterrolebinding",
        binding,
        f"--clusterrole={metrics_reader}",
        f"--serviceaccount={namespace}:scraper",
    )
    yield {"scraper": k.create_token("scraper"), "nobody": k.create_token("nobody")}
    kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")


def scrape(port: int, token: str | None, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    if context is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def reviews(body: str) -> dict[str, float]:
    """The operator's own count of the reviews it asked for, from a /metrics body."""
    found = {}
    for line in body.splitlines():
        for resource in ("tokenreviews", "subjectaccessreviews"):
            if line.startswith("aimodel_operator_api_writes_total{") and f'resource="{resource}"' in line:
                found[resource] = float(line.rsplit(" ", 1)[1])
    return found


@pytest.fixture
def secure_operator(operator_process, operator_identity, tmp_path):
    def start(*extra: str) -> OperatorProcess:
        operator_process.stop()
        proc = OperatorProcess(operator_identity[0], tmp_path)
        started.append(proc)
        proc.start(extra_args=("--metrics-secure", *extra))
        return proc

    started: list[OperatorProcess] = []
    yield start
    for proc in started:
        proc.stop()


def test_metrics_need_a_token_allowed_to_get_them(secure_operator, tokens):
    op = secure_operator()
    status, body = scrape(op.metrics_port, None)
    assert status == 401 and "bearer token" in body, (status, body)
    status, body = scrape(op.metrics_port, "not-a-token")
    assert status == 401 and "not valid" in body, (status, body)
    status, body = scrape(op.metrics_port, tokens["nobody"])
    assert status == 403 and "may not get /metrics" in body and ":nobody" in body, (status, body)
    status, body = scrape(op.metrics_port, tokens["scraper"])
    assert status == 200, (status, body)
    assert "aimodel_operator_reconciles_total" in body
    first = reviews(body)
    # The decision is kept: the next scrapes with the same token cost the API server nothing.
    for _ in range(3):
        status, body = scrape(op.metrics_port, tokens["scraper"])
        assert status == 200
    assert reviews(body) == first, (first, reviews(body))
    # Plain HTTP gets no metrics.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5).read()


def test_metrics_serve_the_certificate_given(secure_operator, tokens, tmp_path):
    from aimodel_operator.metrics_server import self_signed

    certs = tmp_path / "certs"
    certs.mkdir()
    crt, _ = self_signed(certs, ["127.0.0.1"])
    op = secure_operator(f"--metrics-cert-dir={certs}")
    verified = ssl.create_default_context(cafile=str(crt))
    status, body = scrape(op.metrics_port, tokens["scraper"], verified)
    assert status == 200 and "aimodel_operator_" in body, (status, body)
