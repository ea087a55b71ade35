"""The schema of ``spec.template``, generated from the OpenAPI of the pinned Kubernetes.

Reads ``/openapi/v3/api/v1`` of a running API server of the version the
project pins (the dev cluster's; ``make podtemplate-schema``), keeps the pod
template fields an AIModel may set, inlines every reference (a CRD schema has
no ``$ref``), turns quantities and int-or-strings into their CRD forms, keeps
the list and map semantics server-side apply merges by, and trims each
description to its first sentence so that the CRD stays small. Written to
``src/aimodel_operator/schemas/podtemplate.json``; the CRD embeds it.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from aimodel_operator.builders import pod

OUT = Path(__file__).resolve().parents[1] / "src/aimodel_operator/schemas/podtemplate.json"
CORE = "io.k8s.api.core.v1."
# The pod spec fields an AIModel's template may carry (serviceAccountName and
# automountServiceAccountToken only to be refused with a message: the CRD's rules).
POD_FIELDS = (*pod.POD_FIELDS, "initContainers", "containers", "serviceAccountName", "automountServiceAccountToken")
# Bounds the API server's CEL cost estimate needs (a list without maxItems is costed at the
# largest a request could hold); generous for any real pod.
MAX_ITEMS = {"containers": 16, "initContainers": 16, "volumes": 64, "env": 256, "envFrom": 64, "volumeMounts": 64}
KEEP = (
    "type",
    "format",
    "enum",
    "required",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
)
FORMATS = {"int32", "int64", "byte", "date-time", "double"}
# What controller-gen writes for a resource.Quantity.
QUANTITY = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]"
    r"|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
    "x-kubernetes-int-or-string": True,
}
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
SPECIAL = {
    "io.k8s.apimachinery.pkg.api.resource.Quantity": QUANTITY,
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": INT_OR_STRING,
}


def first_sentence(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    match = re.match(r"(.+?\.)(\s|$)", text)
    sentence = match.group(1) if match else text
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def ref_of(schema: dict[str, Any]) -> str | None:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
        return str(all_of[0]["$ref"]).rsplit("/", 1)[-1]
    return None


def convert(schema: dict[str, Any], schemas: dict[str, Any], seen: tuple[str, ...] = (), name: str = "") -> dict:
    ref = ref_of(schema)
    if ref is not None:
        if ref in seen:
            raise ValueError(f"recursive schema {' -> '.join((*seen, ref))}")
        out = dict(SPECIAL[ref]) if ref in SPECIAL else convert(schemas[ref], schemas, (*seen, ref), name)
        if schema.get("description"):
            out["description"] = first_sentence(schema["description"])
        return _with_default(out, schema)
    if schema.get("format") == "int-or-string":
        return {**INT_OR_STRING, **_described(schema)}
    out: dict[str, Any] = {k: schema[k] for k in KEEP if k in schema}
    if out.get("format") not in FORMATS:
        out.pop("format", None)
    out.update(_described(schema))
    if "properties" in schema:
        out["properties"] = {k: convert(v, schemas, seen, k) for k, v in schema["properties"].items()}
    if "items" in schema:
        out["items"] = convert(schema["items"], schemas, seen)
        if name in MAX_ITEMS:
            out["maxItems"] = MAX_ITEMS[name]
        _default_map_keys(out, schema["items"], schemas)
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = convert(schema["additionalProperties"], schemas, seen)
    if "type" not in out and "anyOf" not in out:
        raise ValueError(f"no type for {name or seen[-1:]}: {sorted(schema)}")
    return _with_default(out, schema)


def _default_map_keys(array: dict[str, Any], raw_items: dict[str, Any], schemas: dict[str, Any]) -> None:
    """A list-map key must be required or defaulted (the CRD's rule): keep the built-in default
    of each key that is not required, even an empty one (a pull secret's name: "")."""
    items = array["items"]
    ref = ref_of(raw_items)
    raw = schemas[ref] if ref is not None else raw_items
    for key in array.get("x-kubernetes-list-map-keys") or ():
        if key in items.get("required", ()) or "default" in items["properties"][key]:
            continue
        default = raw["properties"][key].get("default")
        if default is None:
            raise ValueError(f"list-map key {key} has neither a default nor is required")
        items["properties"][key]["default"] = default


def _described(schema: dict[str, Any]) -> dict[str, str]:
    return {"description": first_sentence(schema["description"])} if schema.get("description") else {}


def _with_default(out: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    # Scalar defaults only: a list-map key must be required or defaulted (a port's protocol).
    if isinstance(schema.get("default"), str | int | float | bool) and schema["default"] not in ("", 0):
        out["default"] = schema["default"]
    return out


def pod_template(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi["components"]["schemas"]
    pod = schemas[CORE + "PodSpec"]
    spec_props = {f: convert(pod["properties"][f], schemas, (CORE + "PodSpec",), f) for f in POD_FIELDS}
    # Bounds for the CEL rules' cost estimate: a container's name is a DNS label (63 characters at
    # most, as the API server checks for pods); an environment variable's name gets a generous one.
    for containers in ("containers", "initContainers"):
        container = spec_props[containers]["items"]["properties"]
        container["name"]["maxLength"] = 63
        container["env"]["items"]["properties"]["name"]["maxLength"] = 256
    return {
        "type": "object",
        "properties": {
            "metadata": {
                "type": "object",
                "description": "Labels and annotations added to the workers' pods.",
                "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "spec": {
                "type": "object",
                "description": "Merged into the workers' pod spec (a container named worker into the worker's).",
                "properties": spec_props,
            },
        },
    }


def main() -> int:
    openapi = json.load(sys.stdin)
    schema = pod_template(openapi)
    OUT.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    print(f"{OUT}: {OUT.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
