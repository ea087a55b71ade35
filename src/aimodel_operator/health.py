"""The health endpoints: ``/healthz`` (every loop alive) and ``/readyz`` (caches synced).

Served from the first moment of the process, before any list: a start-up
that takes long (a cluster with many objects) is not killed for it by a
liveness probe, it is only not ready yet.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

Check = Callable[[], str | None]


class HealthServer:
    """``alive`` and ``ready`` return None when fine, else what is wrong."""

    def __init__(self, host: str, port: int, alive: Check, ready: Check) -> None:
        self.host = host
        self.port = port
        self.alive = alive
        self.ready = ready
        self._runner: web.AppRunner | None = None

    @staticmethod
    def _answer(check: Check) -> web.Response:
        problem = check()
        if problem is None:
            return web.Response(text="ok")
        return web.Response(status=503, text=problem)

    async def start(self) -> None:
        app = web.Application()

        async def healthz(_: web.Request) -> web.Response:
            return self._answer(self.alive)

        async def readyz(_: web.Request) -> web.Response:
            return self._answer(self.ready)

        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
