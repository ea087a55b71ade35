"""The AIModel API: the committed CRD, printer columns, defaults and validation rules (no cluster)."""

from pathlib import Path

import yaml

from aimodel_operator import api, builders
from aimodel_operator import crd as crd_mod

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "config" / "crd" / "bases" / "model.youxam.com_aimodels.yaml"


def _version() -> dict:
    versions = crd_mod.crd()["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def _spec_schema() -> dict:
    return _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]


def _all_rules() -> list[dict]:
    root = _version()["schema"]["openAPIV3Schema"]
    return [*root["x-kubernetes-validations"], *root["properties"]["spec"]["x-kubernetes-validations"]]


def test_committed_crd_equals_generated():
    committed = yaml.safe_load(CRD_FILE.read_text())
    assert committed == crd_mod.crd(), "config/crd/bases is stale: regenerate it with `aimodel-operator crd`"


def test_crd_yaml_round_trips():
    assert yaml.safe_load(crd_mod.crd_yaml()) == crd_mod.crd()


def test_crd_identity():
    crd = crd_mod.crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "aimodels.model.youxam.com"
    spec = crd["spec"]
    assert spec["group"] == "model.youxam.com"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {"kind": "AIModel", "listKind": "AIModelList", "plural": "aimodels", "singular": "aimodel"}
    version = _version()
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}
    assert api.API_VERSION == "model.youxam.com/v1alpha1"


def test_default_printer_columns_are_type_model_replicas_state():
    columns = _version()["additionalPrinterColumns"]
    default = [c for c in columns if c.get("priority", 0) == 0]
    assert [(c["name"], c["jsonPath"]) for c in default] == [
        ("Type", ".spec.type"),
        ("Model", ".spec.model"),
        ("Replicas", ".spec.replicas"),
        ("State", ".status.state"),
    ]
    # NAME is implicit; it must not be declared again.
    assert all(c["name"].lower() != "name" for c in columns)
    # Everything else is only at -o wide.
    assert all(c["priority"] == 1 for c in columns if c not in default)


def test_spec_defaults():
    props = _spec_schema()["properties"]
    assert props["replicas"]["default"] == 1 == api.DEFAULT_REPLICAS
    assert props["maxProcessNum"]["default"] == 128 == api.DEFAULT_MAX_PROCESS_NUM
    assert props["apiKeySecretRef"]["properties"]["key"]["default"] == "apiKey"


def test_required_fields():
    assert sorted(_spec_schema()["required"]) == ["image", "model", "type"]
    assert _version()["schema"]["openAPIV3Schema"]["required"] == ["spec"]


def test_field_constraints():
    props = _spec_schema()["properties"]
    assert props["type"]["enum"] == ["local", "remote"]
    assert props["replicas"]["minimum"] == 0
    assert props["maxProcessNum"]["minimum"] == 1
    assert props["msgBacklogThreshold"]["minimum"] == 1
    assert props["model"]["minLength"] == 1
    assert props["image"]["minLength"] == 1
    assert "msgBacklogThreshold" not in _spec_schema()["required"]
    assert all(p.get("description") for p in props.values())


def test_status_schema():
    status = _version()["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["state"]["enum"] == ["Running", "Failed"]
    for field in ("message", "observedGeneration", "specResourceVersion", "replicas", "readyReplicas", "conditions"):
        assert field in status
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


def test_every_rule_message_names_a_field():
    rules = _all_rules()
    assert len(rules) == len(api.SPEC_RULES) + len(api.ROOT_RULES) >= 5
    for rule in rules:
        assert rule["rule"]
        assert "spec." in rule["message"] or "metadata." in rule["message"], rule


def test_remote_rules_present():
    by_field = {r.get("fieldPath"): r for r in api.SPEC_RULES}
    assert by_field[".baseURL"]["rule"] == "self.type != 'remote' || has(self.baseURL)"
    assert "spec.baseURL" in by_field[".baseURL"]["message"]
    assert "spec.apiKey" in by_field[".apiKey"]["message"]


def test_max_name_length_fits_scaledobject_label():
    assert api.MAX_NAME_LENGTH == 50
    longest = "a" * api.MAX_NAME_LENGTH
    assert len(builders.scaled_object_name(longest)) == 63
    assert len(builders.scaled_object_name(longest + "a")) == 64
    root_rule = api.ROOT_RULES[0]
    assert root_rule["rule"] == f"self.metadata.name.size() <= {api.MAX_NAME_LENGTH}"
    assert str(api.MAX_NAME_LENGTH) in root_rule["message"]


def test_secret_ref_names_and_keys_are_validated():
    import re

    ref = _spec_schema()["properties"]["apiKeySecretRef"]["properties"]
    # Go's $ (RE2) is Python's \Z: the end of the text, not before a final newline.
    name, key = (re.compile(ref[f]["pattern"].replace("$", r"\Z")) for f in ("name", "key"))
    for good in ("api-key", "team.keys", "a"):
        assert name.match(good), good
    # A name is one path segment of a Secret in the model's namespace, never a way elsewhere.
    for bad in ("../../kube-system/secrets/x", "a/b", "..", "A", "-a", "a-", "a%2Fb", "a b", ""):
        assert not name.match(bad), bad
    for good in ("apiKey", "API_KEY", "key.txt", "a-b"):
        assert key.match(good), good
    for bad in ("a/b", "a b", "", "k\n"):
        assert not key.match(bad), bad
