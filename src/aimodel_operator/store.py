"""A cache's store: objects kept as compact JSON with their resourceVersion, and the secondary
indexes kept with them (client-go's Indexers). The informer fills it; readers use ``get``,
iteration and ``by_index``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator

from .objects import Key, Manifest, key_of

# What an index files an object under (its kept form): none, one or several values.
Indexer = Callable[[Manifest], Iterable[str]]
# What a cache keeps of each object (caches.py).
Transform = Callable[[Manifest], Manifest]


def rv_int(obj: Manifest) -> int:
    """resourceVersion as a number (etcd revisions are; anything else sorts first)."""
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


def strip(obj: Manifest) -> Manifest:
    """Drop what the operator never reads; managedFields alone often doubles an object."""
    meta = obj.get("metadata", {})
    meta.pop("managedFields", None)
    return obj


class Store:
    def __init__(self, transform: Transform = strip) -> None:
        self.transform = transform
        # Objects kept as compact JSON with their resourceVersion: a parsed dict costs
        # ten times the memory, and a reconcile parses only the few it reads.
        self.store: dict[Key, tuple[int, bytes]] = {}
        # Secondary indexes: name -> (value -> keys), kept with the store.
        self._indexers: dict[str, Indexer] = {}
        self._index: dict[str, dict[str, set[Key]]] = {}
        self._emptied: dict[str, Callable[[str], None]] = {}
        self._changed: dict[str, Callable[[str], None]] = {}
        self._values_of: dict[Key, dict[str, tuple[str, ...]]] = {}

    # -- the cache ---------------------------------------------------------------

    def get(self, namespace: str, name: str) -> Manifest | None:
        entry = self.store.get((namespace, name))
        return json.loads(entry[1]) if entry is not None else None

    def __iter__(self) -> Iterator[Key]:
        """The keys of what is cached, as a snapshot (safe while the cache changes)."""
        return iter(list(self.store))

    def __contains__(self, key: Key) -> bool:
        return key in self.store

    def __len__(self) -> int:
        return len(self.store)

    # -- indexes -------------------------------------------------------------------------

    def add_index(
        self,
        name: str,
        indexer: Indexer,
        emptied: Callable[[str], None] | None = None,
        changed: Callable[[str], None] | None = None,
    ) -> None:
        """Index the cache by what ``indexer`` returns for each kept object (after the transform),
        before the informer runs. ``emptied(value)``: called when no object has ``value`` anymore;
        ``changed(value)``: called when an object joins or leaves ``value`` (the cache already
        holds the change)."""
        if self.store:
            raise RuntimeError("indexes are added before the informer runs")
        self._indexers[name] = indexer
        self._index[name] = {}
        if emptied is not None:
            self._emptied[name] = emptied
        if changed is not None:
            self._changed[name] = changed

    def by_index(self, name: str, value: str) -> list[Key]:
        """The keys of the cached objects ``name``'s indexer gives ``value``."""
        return sorted(self._index[name].get(value, ()))

    def _reindex(self, key: Key, kept: Manifest | None) -> None:
        old = self._values_of.pop(key, {})
        new = {name: tuple(indexer(kept)) for name, indexer in self._indexers.items()} if kept is not None else {}
        if any(new.values()):
            self._values_of[key] = new
        for name, index in self._index.items():
            before, after = old.get(name, ()), new.get(name, ())
            if before == after:
                continue
            for value in before:
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]
                        if name in self._emptied and value not in after:
                            self._emptied[name](value)
            for value in after:
                index.setdefault(value, set()).add(key)
            if name in self._changed:
                for value in {*before, *after}:
                    self._changed[name](value)

    # -- the store -------------------------------------------------------------------------

    def _put(self, key: Key, obj: Manifest) -> tuple[int, bytes]:
        rv = rv_int(obj)
        kept = self.transform(obj)
        entry = rv, json.dumps(kept, separators=(",", ":")).encode()
        self.store[key] = entry
        if self._indexers:
            self._reindex(key, kept)
        return entry

    def _drop(self, key: Key) -> tuple[int, bytes] | None:
        entry = self.store.pop(key, None)
        if self._indexers and entry is not None:
            self._reindex(key, None)
        return entry

    def remember(self, obj: Manifest) -> bool:
        """Store an object we just wrote, unless the watch already brought a newer one. True when stored."""
        key = key_of(obj)
        current = self.store.get(key)
        if current is None or rv_int(obj) > current[0]:
            self._put(key, obj)
            return True
        return False

    def forget(self, namespace: str, name: str) -> None:
        self._drop((namespace, name))
