"""The verbs: get, list, create, replace, apply, delete, watch, over any ``Transport``.

Objects stay JSON dicts end to end: no generated model classes (they cost
memory and time for nothing here; not importing a generated client saves
about 38 MB of resident memory). Every write of a child or a status is a
server-side apply under the operator's single field manager.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

from aimodel_contract import backoff
from aimodel_worker.credentials import Credentials

from ..objects import Manifest
from ..settings import FIELD_MANAGER
from .errors import Conflict, NotFound, WatchIdle, for_status
from .lines import json_lines
from .resources import BY_KIND, Resource
from .transport import JSON, KEEPALIVE, HttpTransport, Transport, WriteGate

# Metadata alone (what client-go's metadata client asks for), with plain JSON as the fallback
# for a server that cannot: lists and watches answer PartialObjectMetadata(List).
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
APPLY_PATCH = "application/apply-patch+yaml"


class Kube:
    """API access over HTTP with ``creds`` (the pool and fence options are ``HttpTransport``'s),
    or over any transport with ``Kube.over``."""

    def __init__(
        self,
        creds: Credentials,
        pool_size: int = 64,
        write_gate: WriteGate | None = None,
        keep_warm: float | None = None,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.transport: Transport = HttpTransport(creds, pool_size, write_gate, keep_warm, keepalive)

    @classmethod
    def over(cls, transport: Transport) -> Kube:
        kube = cls.__new__(cls)
        kube.transport = transport
        return kube

    @property
    def writes_cancelled(self) -> int:
        return self.transport.writes_cancelled

    async def close(self) -> None:
        await self.transport.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        timeout: float = 30,
        accept: str = JSON,
    ) -> Any:
        """One request; an answer of 300 or more raises the ``ApiError`` that names it."""
        answer = await self.transport.send(method, path, body, query, content_type, timeout, accept)
        if answer.status >= 300:
            raise for_status(answer.status, answer.body, method, path)
        return answer.body

    async def get(self, res: Resource, namespace: str | None, name: str) -> Manifest | None:
        try:
            return cast(Manifest, await self.request("GET", res.path(namespace, name)))
        except NotFound:
            return None

    async def find(self, res: Resource, namespace: str, name: str) -> Manifest | None:
        """One object read with a list narrowed to its name: for kinds the RBAC grants list and
        watch on but not get. The object carries its apiVersion and kind, as a GET's would."""
        query = {"fieldSelector": f"metadata.name={name}"}
        found = None
        async for page in self.list(res, limit=1, namespace=namespace, query=query):
            for item in page.get("items") or []:
                found = {"apiVersion": res.api_version, "kind": res.kind, **item}
        return found

    async def create(self, res: Resource, namespace: str | None, obj: Manifest, timeout: float = 30) -> Manifest:
        return cast(Manifest, await self.request("POST", res.path(namespace), body=obj, timeout=timeout))

    async def replace(self, res: Resource, obj: Manifest) -> Manifest:
        """PUT: with ``metadata.resourceVersion`` set, conditional on it (``Conflict`` if it moved)."""
        meta = obj["metadata"]
        return cast(Manifest, await self.request("PUT", res.path(meta.get("namespace"), meta["name"]), body=obj))

    async def apply(
        self, obj: Manifest, res: Resource | None = None, subresource: str | None = None, force: bool = True
    ) -> Manifest:
        """Server-side apply (of a child when ``res`` is left out: its kind says where). Without
        ``force`` a field another manager set differently is a ``Conflict``."""
        if res is None:
            res = BY_KIND.get(obj["kind"])
            if res is None:
                raise ValueError(f"unknown kind {obj['kind']}")
        meta = obj["metadata"]
        query = {"fieldManager": FIELD_MANAGER}
        if force:
            query["force"] = "true"
        path = res.path(meta.get("namespace"), meta["name"], subresource)
        return cast(Manifest, await self.request("PATCH", path, body=obj, query=query, content_type=APPLY_PATCH))

    async def delete(self, res: Resource, namespace: str | None, name: str, uid: str | None = None) -> bool:
        """False when there was nothing to delete: gone already, or (``uid``) a same-named successor."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if uid:
            # Only ever delete the exact object we looked at, never a same-named successor.
            body["preconditions"] = {"uid": uid}
        try:
            await self.request("DELETE", res.path(namespace, name), body=body)
            return True
        except (NotFound, Conflict):
            return False

    async def list(
        self,
        res: Resource,
        limit: int = 500,
        namespace: str | None = None,
        metadata_only: bool = False,
        query: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Manifest]:
        """The pages of a list, ``limit`` objects each: memory stays bounded however many there are.
        ``metadata_only``: each object's metadata alone (PartialObjectMetadata), as client-go's
        metadata informers read: a Secret's data never leaves the API server."""
        token = ""
        accept = METADATA_LIST if metadata_only else JSON
        while True:
            params = {**(query or {}), "limit": str(limit)}
            if token:
                params["continue"] = token
            page = await self.request("GET", res.path(namespace), query=params, timeout=120, accept=accept)
            yield page
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    async def served(self, res: Resource) -> bool | None:
        """Does API discovery list the resource? None when discovery itself failed."""
        try:
            doc = await self.request("GET", res.discovery_path, timeout=10)
        except asyncio.CancelledError:
            raise
        except NotFound:
            return False
        except Exception:
            return None
        if not isinstance(doc, dict):
            return None
        return any(isinstance(r, dict) and r.get("name") == res.plural for r in doc.get("resources") or [])

    async def watch(
        self,
        res: Resource,
        resource_version: str,
        timeout: int = 300,
        namespace: str | None = None,
        idle: float | None = None,
        opened: Callable[[], None] | None = None,
        metadata_only: bool = False,
        query: Mapping[str, str] | None = None,
    ) -> AsyncIterator[Manifest]:
        """Yield watch events ({type, object}) until the server ends the stream.

        A stream that brings nothing, not even a bookmark, for ``idle`` seconds
        is taken for a dead (half-open) connection: WatchIdle is raised; the
        same holds for a watch whose answer does not even begin. ``opened`` is
        called once the API server has answered.
        """
        params = {
            **(query or {}),
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
        # arrives as the awaited result does, and a busy stream makes that likely.
        try:
            async with asyncio.timeout(idle):
                stream = await self.transport.stream(
                    res.path(namespace), params, METADATA if metadata_only else JSON, timeout + 30
                )
        except TimeoutError:
            raise WatchIdle(f"watch {res.path()}: no answer for {idle}s") from None

        async def read() -> bytes:
            try:
                async with asyncio.timeout(idle):
                    return await stream.chunk()
            except TimeoutError:
                if idle is None:
                    raise
                raise WatchIdle(f"watch {res.path()}: nothing for {idle}s") from None

        try:
            if stream.status >= 300:
                raise for_status(stream.status, await stream.body(), "WATCH", res.path())
            if opened is not None:
                opened()
            async for event in json_lines(read):
                yield event
        finally:
            stream.release()


async def sleep_backoff(attempt: int, base: float = 0.2, cap: float = 30.0) -> None:
    # Jittered: the informers of one operator that fail together (an API server restart) do not
    # retry in lockstep.
    await asyncio.sleep(backoff.delay(attempt, base, cap))
