"""REST paths: every name is one escaped path segment."""

import pytest

from aimodel_operator.kube import DEPLOYMENTS, SECRETS, resource_of, segment


def test_names_cannot_climb_out_of_their_namespace():
    path = SECRETS.path("team-a", "../../kube-system/secrets/x")
    assert path == "/api/v1/namespaces/team-a/secrets/..%2F..%2Fkube-system%2Fsecrets%2Fx"
    assert SECRETS.path("team-a", "a?b#c") == "/api/v1/namespaces/team-a/secrets/a%3Fb%23c"
    for bad in (".", ".."):
        with pytest.raises(ValueError):
            segment(bad)


def test_paths_and_the_resource_they_address():
    assert DEPLOYMENTS.path("ns", "d") == "/apis/apps/v1/namespaces/ns/deployments/d"
    assert DEPLOYMENTS.path() == "/apis/apps/v1/deployments"
    assert resource_of("/apis/model.youxam.com/v1alpha1/namespaces/ns/aimodels/m/status") == "aimodels/status"
    assert resource_of("/api/v1/namespaces/ns/events") == "events"


async def _serve(handler):
    """Serve ``handler`` for every path on a free loopback port: (runner, base URL)."""
    from aiohttp import web

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


class _Redirecting:
    """An "API server" on loopback that answers everything with a 307 to a second server, which
    records whatever reaches it."""

    def __init__(self) -> None:
        self.reached: list[tuple[str, str, str]] = []

    async def __aenter__(self) -> str:
        from aiohttp import web

        async def elsewhere(request: web.Request) -> web.Response:
            self.reached.append((request.method, request.headers.get("Authorization", ""), await request.text()))
            return web.json_response({"kind": "Status"})

        self.other, target = await _serve(elsewhere)

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect(target + request.path_qs)

        self.runner, url = await _serve(redirect)
        return url

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()
        await self.other.cleanup()


async def test_a_redirect_is_an_error_and_neither_token_nor_body_leave(caplog):
    from aimodel_operator.kube import ApiError, Kube
    from aimodel_worker.credentials import Credentials

    server = _Redirecting()
    async with server as url:
        kube = Kube(Credentials(server=url, token="bearer-sekret"))
        try:
            secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}}
            with pytest.raises(ApiError) as err:
                await kube.apply({**secret, "stringData": {"API_KEY": "sk-sekret"}})
            assert err.value.status == 307
            with pytest.raises(ApiError) as err:
                async for _ in kube.watch(SECRETS, "1", timeout=5, namespace="ns"):
                    pass
            assert err.value.status == 307
        finally:
            await kube.close()
    assert server.reached == []
    assert "sekret" not in caplog.text


def test_credentials_repr_shows_no_secret():
    from aimodel_worker.credentials import Credentials

    creds = Credentials(server="https://k8s:6443", token="bearer-sekret", key_data=b"-----BEGIN KEY sekret")
    assert "sekret" not in repr(creds) and "https://k8s:6443" in repr(creds)


async def test_a_refused_keep_warm_read_is_not_counted_as_one():
    """The keep-warm read's answer is looked at: a 401 (a token gone stale) warms nothing."""
    import asyncio

    from aiohttp import web

    from aimodel_operator.kube import Kube
    from aimodel_worker.credentials import Credentials

    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"kind": "Status", "code": 401}, status=401)

    runner, url = await _serve(refuse)
    kube = Kube(Credentials(server=url, token="t"), keep_warm=0.05)
    try:
        await kube.transport.send("GET", "/healthz")  # opens the pool, and with it the keep-warm loop
        async with asyncio.timeout(5):
            while seen.count("/version") < 3:  # noqa: ASYNC110 - the server counts the reads
                await asyncio.sleep(0.01)
        assert kube.transport.keep_warm_reads == 0  # type: ignore[attr-defined]
    finally:
        await kube.close()
        await runner.cleanup()
