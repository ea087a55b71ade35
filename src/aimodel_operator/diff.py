"""Does a live object already hold what we would apply? Pure comparison, no API calls."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from .builders import ANNOTATION_HASH
from .objects import Manifest

# Lists the API server merges by a key (server-side apply list maps) in the
# children we write: items other managers add are theirs, not drift. Every
# other list (Role rules, RoleBinding subjects, KEDA triggers) is atomic:
# any difference is drift.
MAP_LISTS = {
    "ownerReferences": "uid",
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}
# Fields holding resource quantities, which the API server writes back in canonical form
# ("1000m" -> "1", "0.5Gi" -> "512Mi"): equal amounts are not drift.
QUANTITIES = frozenset({"limits", "requests", "sizeLimit"})
_SUFFIXES = {
    **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{s: Decimal(10) ** e for s, e in (("n", -9), ("u", -6), ("m", -3), ("", 0), ("k", 3), ("M", 6), ("G", 9))},
    **{s: Decimal(10) ** e for s, e in (("T", 12), ("P", 15), ("E", 18))},
}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))((?:[KMGTPE]i)|[numkMGTPE]|(?:[eE][+-]?\d+))?$")


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity's amount (None when ``value`` is not one)."""
    match = _QUANTITY.match(str(value).strip()) if isinstance(value, str | int | float) else None
    if match is None:
        return None
    number, suffix = match.group(1), match.group(2) or ""
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIXES[suffix]
    except (InvalidOperation, KeyError):
        return None


def same_quantity(actual: Any, desired: Any) -> bool:
    wanted = quantity(desired)
    return bool(actual == desired) or (wanted is not None and quantity(actual) == wanted)


def contains(actual: Any, desired: Any, field: str | None = None) -> bool:
    """True when every field of ``desired`` has the same value in ``actual``.

    The API server adds defaults (strategy, imagePullPolicy, ...) that we do
    not declare; they are not drift.
    """
    if field in QUANTITIES:
        if isinstance(desired, dict):
            return isinstance(actual, dict) and all(
                k in actual and same_quantity(actual[k], v) for k, v in desired.items()
            )
        return same_quantity(actual, desired)
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v, k) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return False
        key = MAP_LISTS.get(field or "")
        if key is not None:
            by_key = {i.get(key): i for i in actual if isinstance(i, dict)}
            return all(d[key] in by_key and contains(by_key[d[key]], d) for d in desired)
        return len(actual) == len(desired) and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
    return bool(actual == desired)


def needs_apply(desired: Manifest, actual: Manifest | None) -> bool:
    if actual is None:
        return True
    if (actual.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_HASH) != desired["metadata"]["annotations"][
        ANNOTATION_HASH
    ]:
        return True
    return not contains(actual, desired)
