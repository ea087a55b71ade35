"""The operator's API client against the real API server: connections kept across quiet spells."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aimodel_operator.kube import Kube, Resource
from aimodel_worker.credentials import kubeconfig_credentials

NAMESPACE = "/api/v1/namespaces/default"


@contextlib.asynccontextmanager
async def _client(kubeconfig, **options) -> AsyncIterator[Kube]:
    kube = Kube(kubeconfig_credentials(kubeconfig), **options)
    try:
        yield kube
    finally:
        await kube.close()


async def _until(what: str, check, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def test_an_idle_client_keeps_one_connection_warm(kubeconfig):
    """A worker's report after a quiet spell finds an open connection: no TLS handshake first."""

    async def run() -> None:
        async with _client(kubeconfig, keep_warm=0.2, keepalive=0.6) as kube:
            await kube.request("GET", NAMESPACE)
            assert kube.transport.connections_opened == 1
            quiet = time.monotonic()
            # Quiet for several keep-alive periods: only the keep-warm reads can keep the connection.
            await _until("ten keep-warm reads", lambda: kube.transport.keep_warm_reads >= 10)
            assert time.monotonic() - quiet > 3 * 0.6
            await kube.request("GET", NAMESPACE)
            assert kube.transport.connections_opened == 1

    asyncio.run(run())


def test_without_keep_warm_reads_a_quiet_client_reconnects(kubeconfig):
    """What the test above guards against: the pool drops a connection idle past its keep-alive."""

    async def run() -> None:
        async with _client(kubeconfig, keepalive=0.3) as kube:
            await kube.request("GET", NAMESPACE)
            assert kube.transport.connections_opened == 1
            await asyncio.sleep(1.0)  # the quiet spell itself: three keep-alive periods, nothing sent
            await kube.request("GET", NAMESPACE)
            assert kube.transport.connections_opened == 2
            assert kube.transport.keep_warm_reads == 0

    asyncio.run(run())


def test_a_busy_client_sends_no_keep_warm_reads(kubeconfig):
    async def run() -> None:
        async with _client(kubeconfig, keep_warm=0.5, keepalive=2) as kube:
            end = time.monotonic() + 2
            while time.monotonic() < end:
                await kube.request("GET", NAMESPACE)
                await asyncio.sleep(0.1)
            assert kube.transport.keep_warm_reads == 0
            assert kube.transport.connections_opened == 1

    asyncio.run(run())


def test_a_watch_never_takes_the_connection_a_request_would_use(kubeconfig):
    """A watch holds its connection as long as it runs and closes it when abandoned: from the request
    pool it would leave the next write a new TLS connection to open (and, with a watch per kind and
    namespace, could take every connection)."""
    namespaces = Resource("", "v1", "namespaces", "Namespace")

    async def run() -> None:
        async with _client(kubeconfig) as kube:
            rv = (await kube.request("GET", "/api/v1/namespaces"))["metadata"]["resourceVersion"]
            for _ in range(3):
                opened = asyncio.Event()

                async def follow(opened: asyncio.Event = opened) -> None:
                    async for _event in kube.watch(namespaces, rv, opened=opened.set):
                        pass

                watch = asyncio.create_task(follow())
                await asyncio.wait_for(opened.wait(), 10)
                await kube.request("GET", NAMESPACE)
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            assert kube.transport.connections_opened == 1

    asyncio.run(run())
