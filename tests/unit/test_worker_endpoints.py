"""Where the reference worker's answers may go: the allow-list, loopback and link-local refused,
names resolving there refused at connect time, redirects refused, URLs logged without secrets."""

from __future__ import annotations

import socket

import pytest
from aiohttp import web

from aimodel_worker.runner import delivery, endpoints
from aimodel_worker.runner.delivery import DeliveryError


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:8080/res",
        "http://127.8.9.1/res",
        "ws://localhost:8080/res/ws",
        "http://LOCALHOST./res",
        "http://[::1]:80/res",
        "http://[::ffff:127.0.0.1]/res",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1%25eth0]/res",
        "http://0.0.0.0/res",
    ],
)
def test_with_no_allow_list_loopback_and_link_local_are_refused(endpoint):
    with pytest.raises(endpoints.EndpointRefused, match="loopback or link-local"):
        endpoints.Policy().check(endpoint)


@pytest.mark.parametrize("endpoint", ["http://gateway.uplion:8080/res", "wss://10.0.0.7/res/ws", "https://gw/res"])
def test_with_no_allow_list_other_endpoints_pass(endpoint):
    endpoints.Policy().check(endpoint)


def test_the_allow_list_is_origin_and_path_prefix_with_ws_and_http_alike():
    policy = endpoints.Policy(["http://127.0.0.1:8080/res", "https://gw.example"])
    for ok in (
        "http://127.0.0.1:8080/res",
        "ws://127.0.0.1:8080/res/ws",
        "https://gw.example:443/any",
        "wss://GW.example/x",
    ):
        policy.check(ok)
    for refused in (
        "http://127.0.0.1:8081/res",  # another port
        "http://127.0.0.1:8080/result",  # a path that only starts with the same letters
        "https://127.0.0.1:8080/res",  # another scheme
        "http://gw.example/res",  # https only
        "http://169.254.169.254/latest",
    ):
        with pytest.raises(endpoints.EndpointRefused, match="not an allowed answer endpoint"):
            policy.check(refused)


@pytest.mark.parametrize(
    ("endpoint", "error"),
    [
        ("file:///etc/passwd", "not an http"),
        ("http://user:pw@gw/res", "user:password@"),
        ("http://gw:99999/res", "not a URL"),
        ("http:///res", "not an http"),
    ],
)
def test_malformed_endpoints_are_refused_naming_why(endpoint, error):
    with pytest.raises(endpoints.EndpointRefused, match=error):
        endpoints.Policy(["http://gw"]).check(endpoint)


def test_redact_drops_userinfo_query_and_fragment():
    assert (
        endpoints.redact("https://u:secret@api.example:8443/v1/chat?key=sk-1#x") == "https://api.example:8443/v1/chat"
    )
    assert endpoints.redact("http://[::1]:80/res") == "http://[::1]:80/res"
    assert "secret" not in endpoints.redact("http://u:secret@h:bad/")


async def test_a_name_resolving_to_loopback_fails_to_connect():
    resolver = endpoints.GuardedResolver()
    try:
        with pytest.raises(OSError, match="only to loopback or link-local"):
            await resolver.resolve("localhost", 80, socket.AF_UNSPEC)
    finally:
        await resolver.close()


class Redirecting:
    """A loopback server: /res redirects (307) to /elsewhere, which records what it received."""

    def __init__(self) -> None:
        self.reached: list[str] = []

    async def __aenter__(self) -> str:
        app = web.Application()

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPTemporaryRedirect("/elsewhere")

        async def elsewhere(request: web.Request) -> web.Response:
            self.reached.append(await request.text())
            return web.json_response({"ok": True})

        app.router.add_route("*", "/res", redirect)
        app.router.add_route("*", "/res/ws", redirect)
        app.router.add_route("*", "/elsewhere", elsewhere)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_answers_follow_no_redirect_post_or_websocket():
    server = Redirecting()
    async with server as base, endpoints.Policy([base]).session() as session:
        with pytest.raises(DeliveryError, match="HTTP 307: redirects are not followed"):
            await delivery.post(session, f"{base}/res", {"request_id": "r1", "data": {"secret": 1}})
        stream = delivery.Stream(session, f"{base}/res/ws")
        with pytest.raises(DeliveryError, match="redirects are not followed"):
            await stream.send({"request_id": "r1", "end": True})
        await stream.close()
    assert server.reached == []


async def test_the_guarded_session_refuses_a_name_that_resolves_to_loopback():
    server = Redirecting()
    async with server as base:
        port = base.rsplit(":", 1)[1]
        async with endpoints.Policy().session() as session:
            with pytest.raises(DeliveryError, match="only to loopback or link-local"):
                await delivery.post(session, f"http://localhost:{port}/elsewhere", {"request_id": "r1"})
    assert server.reached == []
