"""The AIModel CustomResourceDefinition, generated from the declaration in api.py
(``aimodel-operator crd``, ``make manifests``)."""

from __future__ import annotations

from typing import Any

from .api import (
    GROUP,
    KIND,
    PLURAL,
    PRINTER_COLUMNS,
    ROOT_RULES,
    SINGULAR,
    SPEC_FIELDS,
    SPEC_RULES,
    STATUS_SCHEMA,
    VERSION,
)


def spec_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "Desired state of an AI model's workers.",
        "required": [f.name for f in SPEC_FIELDS if f.required],
        "properties": {f.name: f.openapi() for f in SPEC_FIELDS},
        "x-kubernetes-validations": list(SPEC_RULES),
    }


def crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": SINGULAR},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(PRINTER_COLUMNS),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "AIModel runs the workers of one AI model (local or remote API).",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": STATUS_SCHEMA,
                            },
                            "x-kubernetes-validations": list(ROOT_RULES),
                        }
                    },
                }
            ],
        },
    }


def crd_yaml() -> str:
    import yaml

    return yaml.safe_dump(crd(), sort_keys=False, width=120)
