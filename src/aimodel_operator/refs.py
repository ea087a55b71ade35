"""The Secrets an AIModel's ``apiKeySecretRef`` names: read by name, kept as hashes.

The operator does not cache other people's Secrets. Every Secret's metadata is watched
(names and resourceVersions only: the API server sends no data), and a referenced Secret is
read with one GET when its resourceVersion is newer than the one last read. Of what is read,
only a hash of each value is kept: enough to roll the workers when a key is rotated and to
say which keys exist, never the value itself. cert-manager caches the Secrets it does not own
the same way (a metadata informer, uncached reads by name).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Protocol

from . import builders
from .api import DEFAULT_API_KEY_SECRET_KEY
from .informer import rv_int
from .kube import SECRETS, Kube
from .objects import Key, Manifest


class NameCache(Protocol):
    def get(self, namespace: str, name: str) -> Manifest | None: ...


def secret_value_hash(value: str) -> str:
    """What the operator keeps of a value in someone else's Secret: enough to see it change."""
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class SecretRefs:
    def __init__(self, kube: Kube, names: NameCache) -> None:
        self.kube = kube
        self.names = names
        # (namespace, name) -> (resourceVersion read, {key: hash of its value})
        self._values: dict[Key, tuple[int, dict[str, str]]] = {}
        self._reading: dict[Key, asyncio.Task[None]] = {}

    def values(self, namespace: str, name: str) -> dict[str, str] | None:
        """The hashed values of the Secret, if it exists (as last read)."""
        entry = self._values.get((namespace, name))
        return None if entry is None else entry[1]

    def forget(self, key: Key) -> None:
        """No AIModel references it anymore."""
        self._values.pop(key, None)

    def of(self, model: Manifest) -> dict[str, str] | None:
        """The hashed values of the Secret ``model``'s apiKeySecretRef names (None without a
        reference, or while it is missing)."""
        ref = builders.spec_of(model).get("apiKeySecretRef")
        if not ref:
            return None
        return self.values(model["metadata"]["namespace"], ref["name"])

    def key_hash(self, model: Manifest) -> str | None:
        """A hash of the value behind ``apiKeySecretRef``, so that a rotated key rolls the workers.
        None without a reference, or while the Secret or its key is missing."""
        secret = self.of(model)
        if secret is None:
            return None
        return secret.get(builders.spec_of(model)["apiKeySecretRef"].get("key", DEFAULT_API_KEY_SECRET_KEY))

    def keys(self, model: Manifest) -> frozenset[str] | None:
        """The keys the referenced Secret holds (None without a reference, or while it is missing)."""
        secret = self.of(model)
        return None if secret is None else frozenset(secret)

    async def load(self, model: Manifest) -> None:
        """Make ``values`` current for the Secret ``model`` references (one GET when it changed)."""
        ref = builders.spec_of(model).get("apiKeySecretRef")
        if not ref:
            return
        key = (model["metadata"]["namespace"], ref["name"])
        listed = self.names.get(*key)
        if listed is None:
            self._values.pop(key, None)
            return
        entry = self._values.get(key)
        if entry is not None and entry[0] >= rv_int(listed):
            return
        # Reconciles of models sharing one Secret wait for the same read.
        task = self._reading.get(key)
        if task is None:
            task = asyncio.create_task(self._read(key))
            self._reading[key] = task
            task.add_done_callback(lambda _: self._reading.pop(key, None))
        await asyncio.shield(task)

    async def _read(self, key: Key) -> None:
        secret = await self.kube.get(SECRETS, *key)
        if secret is None:
            self._values.pop(key, None)
            return
        data = secret.get("data") or {}
        hashed = {name: secret_value_hash(value) for name, value in data.items() if isinstance(value, str)}
        self._values[key] = (rv_int(secret), hashed)
