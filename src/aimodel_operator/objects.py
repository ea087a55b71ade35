"""Kubernetes objects as the operator holds them: plain dicts, their keys, and who controls them.

Every ownership question asks it here: ``controller_of`` reads an object's controlling owner
reference (Kubernetes allows at most one), and the rest answer from it.
"""

from __future__ import annotations

from typing import Any, cast

from aimodel_contract import API_VERSION, GROUP, KIND

# An object as the API server sends it (parsed JSON).
Manifest = dict[str, Any]
# (namespace, name): what the work queue holds and the caches are keyed by.
Key = tuple[str, str]


def key_of(obj: Manifest) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def controller_of(obj: Manifest | None) -> dict[str, Any] | None:
    """The object's controlling owner reference (``controller: true``), if any."""
    for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return cast(dict[str, Any], ref)
    return None


def controller_uid(obj: Manifest | None) -> str | None:
    """The uid of the object's controller, if any."""
    ref = controller_of(obj)
    return ref.get("uid") if ref else None


def is_controlled_by(obj: Manifest | None, uid: str) -> bool:
    """Whether the object's controller is the object with this uid."""
    return bool(uid) and controller_uid(obj) == uid


def aimodel_controller(obj: Manifest | None) -> dict[str, Any] | None:
    """The controlling owner reference when it names an AIModel (any served version)."""
    ref = controller_of(obj)
    if ref and ref.get("kind") == KIND and str(ref.get("apiVersion", API_VERSION)).split("/")[0] == GROUP:
        return ref
    return None


def owner_key(obj: Manifest, kind: str = KIND) -> Key | None:
    """The key of the object's controller of this kind, in the object's own namespace."""
    ref = controller_of(obj)
    if ref is None or ref.get("kind") != kind:
        return None
    return (obj.get("metadata") or {}).get("namespace", ""), ref["name"]
