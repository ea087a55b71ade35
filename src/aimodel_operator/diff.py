"""Does a live object already hold what we would apply? Pure comparison, no API calls."""

from __future__ import annotations

from typing import Any

from .builders import ANNOTATION_HASH
from .objects import Manifest

# Lists the API server merges by a key (server-side apply list maps) in the
# children we write: items other managers add are theirs, not drift. Every
# other list (Role rules, RoleBinding subjects, KEDA triggers) is atomic:
# any difference is drift.
MAP_LISTS = {"ownerReferences": "uid", "containers": "name", "env": "name"}


def contains(actual: Any, desired: Any, field: str | None = None) -> bool:
    """True when every field of ``desired`` has the same value in ``actual``.

    The API server adds defaults (strategy, imagePullPolicy, ...) that we do
    not declare; they are not drift.
    """
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
