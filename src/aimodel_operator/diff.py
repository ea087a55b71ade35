"""Does a live object already hold what we would apply? Pure comparison, no API calls."""

from __future__ import annotations

from typing import Any

from .builders import ANNOTATION_HASH, Manifest

# Lists whose items the API server merges by a key (server-side apply list maps):
# extra items other managers add are theirs, so they do not count as drift.
_LIST_KEYS = ("uid", "name")


def _list_key(items: list[Any]) -> str | None:
    for key in _LIST_KEYS:
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def contains(actual: Any, desired: Any) -> bool:
    """True when every field of ``desired`` has the same value in ``actual``.

    The API server adds defaults (strategy, imagePullPolicy, ...) that we do
    not declare; they are not drift.
    """
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return False
        key = _list_key(desired)
        if key is not None:
            by_key = {i.get(key): i for i in actual if isinstance(i, dict)}
            return all(d[key] in by_key and contains(by_key[d[key]], d) for d in desired)
        return len(actual) == len(desired) and all(contains(a, d) for a, d in zip(actual, desired, strict=True))
    return actual == desired


def needs_apply(desired: Manifest, actual: Manifest | None) -> bool:
    if actual is None:
        return True
    if (actual.get("metadata", {}).get("annotations") or {}).get(ANNOTATION_HASH) != desired["metadata"]["annotations"][
        ANNOTATION_HASH
    ]:
        return True
    return not contains(actual, desired)
