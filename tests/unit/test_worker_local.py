"""The reference worker in local mode waits for the model server beside it (runner/local.py),
against a stand-in OpenAI-style server on loopback."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web

from aimodel_worker.reasons import Reason
from aimodel_worker.runner import local


class LocalServer:
    """Answers /v1/models with 503 until ``ready`` is set, then with ``models``."""

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.ready = asyncio.Event()
        self.looks = 0

    async def __aenter__(self) -> str:
        async def models(request: web.Request) -> web.Response:
            self.looks += 1
            if not self.ready.is_set():
                return web.json_response({"error": "loading model"}, status=503)
            return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

        app = web.Application()
        app.router.add_get("/v1/models", models)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/v1/chat/completions"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


def test_models_url_sits_beside_chat_completions():
    assert local.models_url("http://127.0.0.1:8000/v1/chat/completions") == "http://127.0.0.1:8000/v1/models"


def test_served_models_reads_only_well_formed_ids():
    assert local.served_models({"data": [{"id": "a"}, {"id": 3}, "x", {"name": "b"}]}) == ["a"]
    assert local.served_models(["not", "a", "dict"]) == []


async def test_waits_for_the_server_then_goes_on(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="aimodel_worker")
    monkeypatch.setattr(local, "SAY_EVERY_SECONDS", 0.0)
    server = LocalServer(["TinyLlama-1.1B"])
    async with server as url, aiohttp.ClientSession() as session:
        waiting = asyncio.create_task(local.wait_until_served(session, url, "TinyLlama-1.1B", asyncio.Event()))
        async with asyncio.timeout(5):
            while server.looks < 2:  # noqa: ASYNC110 - the stand-in counts the worker's looks
                await asyncio.sleep(0.01)
        assert not waiting.done(), "ready before the server answers"
        server.ready.set()
        async with asyncio.timeout(10):
            assert await waiting is True
    assert "waiting for the local model server" in caplog.text and "HTTP 503" in caplog.text


async def test_a_server_that_does_not_serve_the_model_is_the_seeds_configuration_error():
    reports: list[tuple[Reason, str]] = []
    server = LocalServer(["other-model"])
    server.ready.set()
    async with server as url:
        code = await local.wait_for_server(url, "TinyLlama-1.1B", asyncio.Event(), lambda r, m: reports.append((r, m)))
    assert code == 1
    assert reports == [(Reason.CONFIGURATION_ERROR, 'Local model "TinyLlama-1.1B" is not supported.')]


async def test_stopping_while_waiting_ends_without_a_report():
    stopping = asyncio.Event()
    reports: list = []
    server = LocalServer(["m"])
    async with server as url:
        waiting = asyncio.create_task(local.wait_for_server(url, "m", stopping, lambda r, m: reports.append(r)))
        async with asyncio.timeout(5):
            while server.looks < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        stopping.set()
        async with asyncio.timeout(5):
            assert await waiting == 0
    assert reports == []


async def test_an_unreachable_server_is_waited_for_not_reported(monkeypatch):
    looks: list[str | None] = []
    look = local._look

    async def counted(*args):
        looks.append(await look(*args))
        return looks[-1]

    monkeypatch.setattr(local, "_look", counted)
    stopping = asyncio.Event()
    # Nothing listens on the discard port: connection refused, again and again.
    async with aiohttp.ClientSession() as session:
        waiting = asyncio.create_task(local.wait_until_served(session, "http://127.0.0.1:9/v1", "m", stopping))
        async with asyncio.timeout(10):
            while len(looks) < 2:  # noqa: ASYNC110 - counts the worker's looks
                await asyncio.sleep(0.01)
        assert not waiting.done() and all("ClientConnectorError" in (why or "") for why in looks)
        stopping.set()
        async with asyncio.timeout(5):
            assert await waiting is False
