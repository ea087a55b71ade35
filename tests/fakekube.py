"""The one fake API for unit tests: an in-memory API server behind the client's ``Transport``.

The operator's real ``Kube`` verbs run over it, so a unit test exercises the
same paths, queries, bodies and typed errors as production does; only the
socket is missing. What it keeps:

- objects by resource, namespace and name, each with a ``resourceVersion``
  from one counter, and the history of changes a watch streams from;
- every request (``requests``), for tests that count or inspect them.

What a test can script, per method and resource (``script``): answers that
come before the store is consulted (an ``Answer``, an exception, a
``Listing`` snapshot, or a callable taking the ``Request``), and per resource
the watch streams (``script_watch``): lists of events or exceptions, ``None``
for a watch that stays open with nothing to say. Discovery answers from the
resources the fake serves (``served``).

Behaviour against the real API server is what the e2e and fault suites test.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aimodel_operator import kube
from aimodel_operator.kube import Answer, Resource

ALL = tuple(getattr(kube, name) for name in kube.__all__ if isinstance(getattr(kube, name), Resource))


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    content_type: str
    accept: str
    resource: Resource | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None

    @property
    def is_list(self) -> bool:
        return self.method == "GET" and self.name is None and "watch" not in self.query


@dataclass
class Listing:
    """A scripted list answer: these items at this resourceVersion, paged like the server pages."""

    items: list[dict]
    rv: int | str


@dataclass
class _Watch:
    script: list[Any] | None
    request: Request
    status: int = 200
    error: Any = None
    _history_at: int = 0
    _api: FakeApi | None = None
    _queue: list[bytes] = field(default_factory=list)

    async def body(self) -> Any:
        return self.error

    async def chunk(self) -> bytes:
        if self.script is not None:
            if not self.script:
                return b""
            item = self.script.pop(0)
            if isinstance(item, BaseException):
                raise item
            return json.dumps(item).encode() + b"\n"
        assert self._api is not None
        return await self._api._next_event(self)

    def release(self) -> None:
        pass


def _status(code: int, reason: str, message: str, causes: list[dict] | None = None) -> Answer:
    body: dict[str, Any] = {"kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": code}
    if causes:
        body["details"] = {"causes": causes}
    return Answer(code, body)


class FakeApi:
    def __init__(self, *extra: Resource, delay: float = 0.0) -> None:
        self.resources = {r.path(): r for r in (*ALL, *extra)}
        self.served: dict[str, bool | BaseException] = {r.plural: True for r in self.resources.values()}
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.history: list[tuple[int, str, str, str, dict]] = []
        self.rv = 100
        self.requests: list[Request] = []
        self.scripts: dict[tuple[str, str], list[Any]] = {}
        self.watch_scripts: dict[str, list[list[Any] | None]] = {}
        self.writes_cancelled = 0
        self.delay = delay
        # Set when a watch has nothing more to say (a scripted ``None`` or an empty history).
        self.blocked = asyncio.Event()
        self._changed: asyncio.Condition | None = None

    # What a test sets up or reads.

    def script(self, method: str, res: Resource, *answers: Any) -> None:
        """Answers to the next requests of ``method`` on ``res``, in order; the last one repeats."""
        self.scripts[(method, res.plural)] = list(answers)

    def script_watch(self, res: Resource, *streams: list[Any] | None) -> None:
        self.watch_scripts[res.plural] = list(streams)

    def put(self, res: Resource, obj: dict) -> dict:
        """Store ``obj`` as if created or changed by someone else: a new resourceVersion, a watch event."""
        meta = obj.setdefault("metadata", {})
        key = (res.plural, meta.get("namespace") or "", meta["name"])
        kind = "MODIFIED" if key in self.objects else "ADDED"
        meta.setdefault("uid", f"uid-{meta['name']}-{self.rv + 1}")
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        return self._store(key, obj, kind)

    def remove(self, res: Resource, namespace: str | None, name: str) -> None:
        obj = self.objects.pop((res.plural, namespace or "", name))
        # As the API server does, the DELETED event carries the deletion's own revision.
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._event(res.plural, namespace or "", "DELETED", obj)

    def object(self, res: Resource, namespace: str | None, name: str) -> dict | None:
        obj = self.objects.get((res.plural, namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def calls(self, method: str | None = None, res: Resource | None = None) -> list[Request]:
        return [
            r for r in self.requests if (method is None or r.method == method) and (res is None or r.resource == res)
        ]

    def lists(self, res: Resource) -> list[Request]:
        return [r for r in self.calls("GET", res) if r.is_list]

    def watches(self, res: Resource) -> list[Request]:
        return [r for r in self.calls("WATCH", res)]

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method not in ("GET", "WATCH")]

    # The Transport.

    async def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
        accept: str = "application/json",
    ) -> Answer:
        request = self._parse(method, path, query, body, content_type, accept)
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        else:
            await asyncio.sleep(0)
        if request.resource is None:
            return self._discovery(path)
        scripted = self._scripted(request)
        if scripted is not None:
            return scripted
        return self._serve(request)

    async def stream(self, path: str, query: Mapping[str, str], accept: str, timeout: float) -> _Watch:
        request = self._parse("WATCH", path, query, None, "", accept)
        self.requests.append(request)
        assert request.resource is not None, path
        streams = self.watch_scripts.get(request.resource.plural)
        if streams is not None:
            script = streams.pop(0) if streams else None
            if isinstance(script, Answer):
                return _Watch([], request, status=script.status, error=script.body)
            if script is None:
                self.blocked.set()
                await asyncio.Event().wait()
            return _Watch(list(script or []), request)
        watch = _Watch(None, request, _api=self)
        watch._history_at = int(query.get("resourceVersion") or 0)
        return watch

    async def close(self) -> None:
        pass

    # Inside.

    def _parse(self, method: str, path: str, query: Any, body: Any, content_type: str, accept: str) -> Request:
        request = Request(method, path, dict(query or {}), copy.deepcopy(body), content_type, accept)
        for res in self.resources.values():
            prefix = res.discovery_path + "/"
            rest = path[len(prefix) :].split("/") if path.startswith(prefix) else None
            if rest is None:
                continue
            namespace = None
            if rest[0] == "namespaces" and len(rest) >= 3:
                namespace, rest = rest[1], rest[2:]
            if rest[0] != res.plural:
                continue
            request.resource, request.namespace = res, namespace
            request.name = rest[1] if len(rest) > 1 else None
            request.subresource = rest[2] if len(rest) > 2 else None
            return request
        return request

    def _discovery(self, path: str) -> Answer:
        group = [r for r in self.resources.values() if r.discovery_path == path]
        for r in group:
            served = self.served.get(r.plural)
            if isinstance(served, BaseException):
                raise served
        names = [r.plural for r in group if self.served.get(r.plural) is True]
        if not names:
            return _status(404, "NotFound", f"the server could not find the requested resource {path}")
        return Answer(200, {"kind": "APIResourceList", "resources": [{"name": n} for n in names]})

    def _scripted(self, request: Request) -> Answer | None:
        assert request.resource is not None
        answers = self.scripts.get((request.method, request.resource.plural))
        if not answers:
            return None
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if callable(answer) and not isinstance(answer, type):
            answer = answer(request)
        if answer is None:
            return None
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, Listing):
            return self._page(request, [copy.deepcopy(i) for i in answer.items], str(answer.rv))
        assert isinstance(answer, Answer), answer
        return answer

    def _page(self, request: Request, items: list[dict], rv: str) -> Answer:
        limit = int(request.query.get("limit") or 0) or len(items) or 1
        start = int(request.query.get("continue") or 0)
        page = items[start : start + limit]
        meta: dict[str, Any] = {"resourceVersion": rv}
        if start + limit < len(items):
            meta["continue"] = str(start + limit)
        return Answer(
            200,
            {"kind": f"{request.resource.kind}List" if request.resource else "List", "metadata": meta, "items": page},
        )

    def _serve(self, request: Request) -> Answer:
        res = request.resource
        assert res is not None
        ns = request.namespace or ""
        if request.method == "GET" and request.name is None:
            items = [
                copy.deepcopy(o)
                for (plural, o_ns, _), o in sorted(self.objects.items())
                if plural == res.plural and (not ns or o_ns == ns) and _selected(o, request.query)
            ]
            return self._page(request, items, str(self.rv))
        key = (res.plural, ns, request.name or (request.body or {}).get("metadata", {}).get("name", ""))
        live = self.objects.get(key)
        if request.method == "GET":
            return (
                Answer(200, copy.deepcopy(live))
                if live
                else _status(404, "NotFound", f"{res.plural} {key[2]} not found")
            )
        if request.method == "DELETE":
            if live is None:
                return _status(404, "NotFound", f"{res.plural} {key[2]} not found")
            uid = ((request.body or {}).get("preconditions") or {}).get("uid")
            if uid and uid != live["metadata"].get("uid"):
                return _status(409, "Conflict", "Precondition failed: UID in precondition")
            self.remove(res, ns, key[2])
            return Answer(200, {"kind": "Status", "status": "Success"})
        body = copy.deepcopy(request.body)
        meta = body.setdefault("metadata", {})
        if request.method == "POST":
            if live is not None:
                return _status(409, "AlreadyExists", f"{res.plural} {key[2]} already exists")
            meta["namespace"] = request.namespace
            meta.setdefault("uid", f"uid-{key[2]}-{self.rv + 1}")
            return Answer(201, self._store(key, body, "ADDED"))
        # PUT and apply: conditional on resourceVersion and uid when given.
        rv, uid = meta.get("resourceVersion"), meta.get("uid")
        if live is None:
            if request.method == "PUT" or request.subresource:
                return _status(404, "NotFound", f"{res.plural} {key[2]} not found")
            if uid:
                return _status(409, "Conflict", "uid mismatch: the object does not exist")
            # An apply creates a free name (a resourceVersion in it only guards an existing object).
            meta.pop("resourceVersion", None)
            meta["uid"] = f"uid-{key[2]}-{self.rv + 1}"
            return Answer(201, self._store(key, body, "ADDED"))
        if rv and rv != live["metadata"]["resourceVersion"]:
            return _status(
                409, "Conflict", "the object has been modified; please apply your changes to the latest version"
            )
        if uid and uid != live["metadata"].get("uid"):
            return _status(409, "Conflict", "Precondition failed: UID in precondition")
        new = copy.deepcopy(live)
        if request.subresource == "status":
            new["status"] = body.get("status")
        elif request.method == "PUT":
            new = {**body, "metadata": {**body["metadata"], "uid": live["metadata"]["uid"]}}
        else:
            for field_name, value in body.items():
                if field_name == "metadata":
                    new["metadata"] = {**live["metadata"], **{k: v for k, v in value.items() if k != "resourceVersion"}}
                elif field_name != "status":
                    new[field_name] = value
        if _same(new, live):
            return Answer(200, copy.deepcopy(live))
        return Answer(200, self._store(key, new, "MODIFIED"))

    def _store(self, key: tuple[str, str, str], obj: dict, kind: str) -> dict:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        if key[1]:
            obj["metadata"]["namespace"] = key[1]
        self.objects[key] = copy.deepcopy(obj)
        self._event(key[0], key[1], kind, obj)
        return copy.deepcopy(obj)

    def _event(self, plural: str, namespace: str, kind: str, obj: dict) -> None:
        self.history.append((self.rv, plural, namespace, kind, copy.deepcopy(obj)))
        if self._changed is not None:
            changed = self._changed

            async def notify() -> None:
                async with changed:
                    changed.notify_all()

            asyncio.get_running_loop().create_task(notify())

    async def _next_event(self, watch: _Watch) -> bytes:
        res, ns = watch.request.resource, watch.request.namespace or ""
        assert res is not None
        if self._changed is None:
            self._changed = asyncio.Condition()
        while True:
            for rv, plural, o_ns, kind, obj in self.history:
                if rv > watch._history_at and plural == res.plural and (not ns or o_ns == ns):
                    watch._history_at = rv
                    if _selected(obj, watch.request.query):
                        return json.dumps({"type": kind, "object": obj}).encode() + b"\n"
            self.blocked.set()
            async with self._changed:
                await self._changed.wait()


def _same(a: dict, b: dict) -> bool:
    strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}  # noqa: E731
    return strip(a) == strip(b)


def _field(obj: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _selected(obj: dict, query: Mapping[str, str]) -> bool:
    """``labelSelector`` equality terms (``k=v``, ``k!=v``, ``k``, ``!k``) and ``fieldSelector``
    equality terms on any field (``metadata.name=x``, ``type=Warning``)."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (query.get("labelSelector") or "").split(",")):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term not in labels:
            return False
    for term in filter(None, (query.get("fieldSelector") or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if str(_field(obj, k)) == v:
                return False
        else:
            k, v = term.split("=", 1)
            if str(_field(obj, k.rstrip("="))) != v:
                return False
    return True


def kube_over(api: FakeApi) -> kube.Kube:
    return kube.Kube.over(api)


__all__ = ["ALL", "Answer", "FakeApi", "Listing", "Request", "kube_over"]


async def until(what: str, condition: Callable[[], object], timeout: float = 5.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - waits on the informers' visible state
                await asyncio.sleep(0.001)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None
