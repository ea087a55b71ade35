"""One informer per watched namespace, read as one: the operator limited to some namespaces.

With ``--namespaces`` the operator lists and watches each kind only in those
namespaces, so that Roles there are all the access it needs (no ClusterRole,
no Secret of any other namespace). The controller reads a ``Scoped`` exactly
as it reads an Informer.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator

from .informer import Indexer, Informer
from .objects import Key, Manifest


class AllSet:
    """Set when every one of some asyncio Events is set (the Event interface the controller uses)."""

    def __init__(self, events: list[asyncio.Event]) -> None:
        self.events = events

    def is_set(self) -> bool:
        return all(e.is_set() for e in self.events)

    async def wait(self) -> bool:
        # Until all are set at once: one waited for earlier may have been cleared again meanwhile.
        while not self.is_set():
            await next(e for e in self.events if not e.is_set()).wait()
        return True


class Scoped:
    def __init__(self, make: Callable[[str], Informer], namespaces: tuple[str, ...]) -> None:
        if not namespaces:
            raise ValueError("Scoped needs at least one namespace")
        self.parts: dict[str, Informer] = {ns: make(ns) for ns in namespaces}
        self.resource = next(iter(self.parts.values())).resource
        self.synced = AllSet([p.synced for p in self.parts.values()])
        self.current = AllSet([p.current for p in self.parts.values()])

    # -- reading, as from one Informer -------------------------------------------------

    def get(self, namespace: str, name: str) -> Manifest | None:
        part = self.parts.get(namespace)
        return None if part is None else part.get(namespace, name)

    def __iter__(self) -> Iterator[Key]:
        return itertools.chain.from_iterable(list(p) for p in self.parts.values())

    def __contains__(self, key: Key) -> bool:
        part = self.parts.get(key[0])
        return part is not None and key in part

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts.values())

    def remember(self, obj: Manifest) -> bool:
        part = self.parts.get(obj["metadata"].get("namespace", ""))
        return part is not None and part.remember(obj)

    def forget(self, namespace: str, name: str) -> None:
        part = self.parts.get(namespace)
        if part is not None:
            part.forget(namespace, name)

    def add_index(
        self,
        name: str,
        indexer: Indexer,
        emptied: Callable[[str], None] | None = None,
        changed: Callable[[str], None] | None = None,
    ) -> None:
        for part in self.parts.values():
            part.add_index(name, indexer, emptied, changed)

    def by_index(self, name: str, value: str) -> list[Key]:
        return [key for part in self.parts.values() for key in part.by_index(name, value)]

    @property
    def relists(self) -> int:
        return sum(p.relists for p in self.parts.values())

    # -- an optional kind (KEDA's): the same API in every namespace ----------------------

    @property
    def available(self) -> bool | None:
        values = {p.available for p in self.parts.values()}
        return True if True in values else (False if values == {False} else None)

    @property
    def on_availability(self) -> Callable[[bool], None] | None:
        return next(iter(self.parts.values())).on_availability

    @on_availability.setter
    def on_availability(self, callback: Callable[[bool], None] | None) -> None:
        # One part reports for all: they see the same API, and one report per change is enough.
        first = True
        for part in self.parts.values():
            part.on_availability = callback if first else None
            first = False

    async def run(self) -> None:
        await asyncio.gather(*(p.run() for p in self.parts.values()))
