"""A local model server beside the worker (``NODE_TYPE=local``): wait until it answers, and make
sure it serves the model, before taking a single request from the queue.

A consumer that has joined the subscription is sent messages at once (its receive queue), so the
worker does not connect to Pulsar before the server is ready: requests wait in the backlog, where
another worker (or this one, later) takes them. A server that answers but does not list
``MODEL_NAME`` is a configuration error, said with the seed's own words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from aimodel_contract import backoff

from ..reasons import Reason
from . import endpoints

log = logging.getLogger("aimodel_worker")

# Between two looks at a server that is not ready: 0.5 s, growing to this.
MAX_WAIT_SECONDS = 5.0
# How often the worker says, in its log, that it is still waiting and why.
SAY_EVERY_SECONDS = 10.0


class ModelNotServed(Exception):
    """The local server answers, but not for this model."""

    def __init__(self, model: str, served: list[str]) -> None:
        super().__init__(f'Local model "{model}" is not supported.')
        self.served = served


def models_url(chat_url: str) -> str:
    """``…/v1/models`` beside ``…/v1/chat/completions``."""
    base = chat_url.removesuffix("/chat/completions").rstrip("/")
    return base + "/models"


def served_models(body: Any) -> list[str]:
    """The model ids an OpenAI-style ``/v1/models`` answer lists."""
    data = body.get("data") if isinstance(body, dict) else None
    return [str(m["id"]) for m in data or [] if isinstance(m, dict) and isinstance(m.get("id"), str)]


async def wait_until_served(session: aiohttp.ClientSession, chat_url: str, model: str, stopping: asyncio.Event) -> bool:
    """True once the server lists ``model``; False if the worker is stopped first. Raises
    ModelNotServed when the server answers without it."""
    url = models_url(chat_url)
    attempt, said, started = 0, 0.0, time.monotonic()
    while not stopping.is_set():
        why = await _look(session, url, model)
        if why is None:
            log.info("local model server ready: %s serves %s", endpoints.redact(url), model)
            return True
        now = time.monotonic()
        if now - said >= SAY_EVERY_SECONDS:
            log.info("waiting for the local model server (%.0f s): %s", now - started, why)
            said = now
        attempt += 1
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(backoff.delay(attempt, 0.5, MAX_WAIT_SECONDS, jitter=0.2)):
                await stopping.wait()
    return False


async def wait_for_server(
    chat_url: str, model: str, stopping: asyncio.Event, report: Callable[[Reason, str], None]
) -> int | None:
    """Wait for the local model server: None once it serves ``model``; else the worker's exit
    code (0: stopped while waiting; 1: the server does not serve the model, which is reported)."""
    try:
        async with aiohttp.ClientSession() as session:
            ready = await wait_until_served(session, chat_url, model, stopping)
    except ModelNotServed as exc:
        log.error("%s The local server serves: %s", exc, ", ".join(exc.served) or "nothing")
        report(Reason.CONFIGURATION_ERROR, str(exc))
        return 1
    return None if ready else 0


async def _look(session: aiohttp.ClientSession, url: str, model: str) -> str | None:
    """None when the server serves ``model``; else why not yet."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=5), allow_redirects=False) as resp:
            if resp.status != 200:
                return f"{endpoints.redact(url)} answered HTTP {resp.status}"
            body = await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
        return f"{endpoints.redact(url)}: {type(exc).__name__}: {exc}"
    served = served_models(body)
    if model not in served:
        raise ModelNotServed(model, served)
    return None
