"""The worker loop: up to MAX_PROCESS_NUM requests at once, each answered before it is
acknowledged, usage published, errors reported, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pulsar.asyncio as pulsar_async

from ..reasons import Reason
from . import delivery, endpoints, gateway, local, openai_api, queue
from .delivery import DeliveryError
from .gateway import Request
from .openai_api import Failure
from .reports import ReportFn, Reports
from .settings import WorkerSettings
from .upstream import Upstream, UpstreamFailure

T = TypeVar("T")

log = logging.getLogger("aimodel_worker")

# Retries of a rate-limited request (each after the upstream's Retry-After) before it is answered with the 429.
RATE_LIMIT_RETRIES = 5


class Slots:
    """Room for MAX_PROCESS_NUM requests being worked on (received, not yet answered) and as many
    answered ones settling (usage record being published, then the acknowledgement). An answered
    request moves from ``working`` to ``settling``, so the next one is received at once; with all
    of ``settling`` taken (a stalled producer) it keeps its working slot and the worker receives
    no more: never more than 2 x MAX_PROCESS_NUM messages held unacknowledged."""

    def __init__(self, n: int) -> None:
        self.working = asyncio.Semaphore(n)
        self.settling = asyncio.Semaphore(n)


class Slot:
    """One request's place in ``Slots``, from its working slot (taken before it is received) to
    ``done()`` (released whatever happened, once)."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.state = "working"

    async def answered(self) -> None:
        """Move to a settling slot (waiting for one) and give the working slot to the next request."""
        if self.state != "working":
            return
        await self._slots.settling.acquire()
        self.state = "settling"
        self._slots.working.release()

    def done(self) -> None:
        if self.state == "working":
            self._slots.working.release()
        elif self.state == "settling":
            self._slots.settling.release()
        self.state = "done"


class Worker:
    def __init__(self, settings: WorkerSettings, report: ReportFn | None = None, name: str | None = None) -> None:
        self.settings = settings
        self.name = name
        self.stopping = asyncio.Event()
        self.handled = 0
        self.failed = 0
        self._resume_at = 0.0
        self.reports = Reports(report)
        self.answers = endpoints.Policy(settings.answer_endpoints)
        self._inflight: set[asyncio.Task[None]] = set()

    # -- reporting -------------------------------------------------------------------

    def report(self, reason: Reason, message: str) -> None:
        self.reports.report(reason, message)

    async def flush_reports(self, timeout: float = 15.0) -> None:
        await self.reports.flush(timeout)

    # -- running ---------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)

    async def run(self) -> int:
        """Serve until SIGTERM; 1 if Pulsar cannot be reached at start."""
        s = self.settings
        if s.node_type == "local":
            ended = await local.wait_for_server(s.chat_url, s.model_name, self.stopping, self.report)
            if ended is not None:
                await self.flush_reports()
                return ended
        try:
            q = await queue.connect(s, self.name)
        except queue.QueueUnavailable as exc:
            self.report(Reason.MESSAGE_QUEUE_CONNECTION_ERROR, str(exc))
            await self.flush_reports()
            return 1
        log.info(
            "consuming %s (%s) with up to %d requests at once; upstream %s; answers to %s",
            s.topic,
            s.subscription,
            s.max_process_num,
            endpoints.redact(s.chat_url),
            ", ".join(map(endpoints.redact, s.answer_endpoints)) or "any endpoint but loopback and link-local",
        )
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        try:
            async with aiohttp.ClientSession(connector=connector) as calls, self.answers.session() as session:
                upstream = Upstream(calls, s.chat_url, s.api_key, s.upstream_timeout)
                await self._consume(q, session, upstream)
        finally:
            await q.close()
            await self.flush_reports()
        log.info("stopped: %d requests answered, %d with an error", self.handled, self.failed)
        return 0

    async def _consume(self, q: queue.Queue, session: aiohttp.ClientSession, upstream: Upstream) -> None:
        slots = Slots(self.settings.max_process_num)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            while not self.stopping.is_set():
                await slots.working.acquire()
                slot = Slot(slots)
                await self._rate_limit_gate()
                receive = asyncio.ensure_future(q.consumer.receive())
                await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not receive.done():
                    receive.cancel()
                    slot.done()
                    break
                try:
                    msg = receive.result()
                except pulsar_async.PulsarException as exc:
                    slot.done()
                    log.warning("receive failed (the client reconnects): %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                task = asyncio.create_task(self._handle(q, session, upstream, msg, slot))
                self._inflight.add(task)

                def finished(t: asyncio.Task[None], slot: Slot = slot) -> None:
                    self._inflight.discard(t)
                    slot.done()

                task.add_done_callback(finished)
        finally:
            stop.cancel()
            await self._drain()

    async def _drain(self) -> None:
        """Let in-flight requests finish within the grace period; hand the others back to Pulsar."""
        if not self._inflight:
            return
        log.info("stopping: %d requests in flight", len(self._inflight))
        _, pending = await asyncio.wait(set(self._inflight), timeout=self.settings.shutdown_grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _rate_limit_gate(self) -> None:
        delay = self._resume_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _back_off(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    # -- one request -----------------------------------------------------------------

    async def _handle(
        self, q: queue.Queue, session: aiohttp.ClientSession, upstream: Upstream, msg: Any, slot: Slot | None = None
    ) -> None:
        """One message, whatever it holds: acknowledged once answered (or refused with an answer),
        otherwise handed back; handed back too often, Pulsar moves it to the dead-letter topic.
        Its ``slot`` is given up for the next request once the answer is delivered, while its usage
        record is published and then the message acknowledged (still in flight till then)."""
        try:
            await self._serve(q, session, upstream, msg, slot)
        except asyncio.CancelledError:
            # Stopping before it was answered, or answered but before its usage record was
            # published: another worker gets it (answers it again) and publishes the record.
            await self._hand_back(q, msg)
            raise
        except pulsar_async.PulsarException as exc:
            log.warning("Pulsar failed while finishing a request, handing it back: %s", exc)
            await self._hand_back(q, msg)
        except Exception as exc:  # a message must not be able to pin a consumer, whatever it holds
            log.error("message %s could not be processed: %s: %s", msg.message_id(), type(exc).__name__, exc)
            await self._hand_back(q, msg)

    async def _hand_back(self, q: queue.Queue, msg: Any) -> None:
        try:
            await q.consumer.negative_acknowledge(msg)
        except pulsar_async.PulsarException as exc:
            log.warning("could not hand message %s back (Pulsar redelivers it): %s", msg.message_id(), exc)

    async def _serve(
        self, q: queue.Queue, session: aiohttp.ClientSession, upstream: Upstream, msg: Any, slot: Slot | None = None
    ) -> None:
        s = self.settings
        try:
            request = gateway.parse_request(msg.data(), s.model_name, s.max_message_bytes)
            self.answers.check(request.endpoint)
        except gateway.TooLarge as exc:
            # No redelivery helps, and the client's dead-letter policy cannot move it: at once.
            log.warning("message %s dead-lettered: %s", msg.message_id(), exc)
            await q.dead_letter(msg, f"{exc} (MAX_MESSAGE_BYTES)")
            return
        except endpoints.EndpointRefused as exc:
            # Nobody to tell: handed back until it reaches the dead-letter topic.
            log.warning("request %s refused, its endpoint: %s", request.request_id, exc)
            await self._hand_back(q, msg)
            return
        except gateway.BadRequest as exc:
            if await self._refuse(session, exc):
                await q.consumer.acknowledge(msg)
            else:
                await self._hand_back(q, msg)
            return
        try:
            if request.stream:
                usage = await self._stream(session, upstream, request)
            else:
                usage = await self._complete(session, upstream, request)
        except DeliveryError as exc:
            if exc.gone:
                log.warning("request %s dropped: %s", request.request_id, exc)
                await q.consumer.acknowledge(msg)
            else:
                log.warning("request %s handed back: %s", request.request_id, exc)
                await self._hand_back(q, msg)
            return
        self.handled += 1
        if slot is not None:
            # Answered: the next request may start while this one's usage is published. Billing's
            # order stays: acknowledged only once the record is durably published (a send that
            # fails hands the message back; a crash before the ack gets it redelivered).
            await slot.answered()
        if usage is not None:
            model, counts = usage
            record = gateway.usage_record(request.request_id, counts, model, s.aimodel_name, s.aimodel_namespace)
            await q.producer.send(json.dumps(record, separators=(",", ":")).encode())
        await q.consumer.acknowledge(msg)

    async def _refuse(self, session: aiohttp.ClientSession, exc: gateway.BadRequest) -> bool:
        """A message that is not a request: its sender is told why if it can be (True)."""
        log.warning("refusing a message that is not a request: %s", exc)
        if not (exc.request_id and exc.endpoint):
            return False
        try:
            self.answers.check(exc.endpoint)
        except endpoints.EndpointRefused as err:
            log.warning("not telling %s: %s", exc.request_id, err)
            return False
        body = openai_api.error_body(f"the worker could not read the request: {exc}", "invalid_request_error")
        try:
            await delivery.post(session, exc.endpoint, gateway.answer(exc.request_id, body))
        except DeliveryError as err:
            log.warning("could not tell %s: %s", exc.request_id, err)
            return False
        return True

    def _failed(self, failure: Failure) -> None:
        self.failed += 1
        if failure.reason is not None:
            self.report(failure.reason, failure.message)

    async def _call(
        self, call: Callable[[], Awaitable[T]], may_retry: Callable[[], bool] = lambda: True
    ) -> T | Failure:
        """``call()`` to the upstream, waiting out its rate limit: a 429 with a Retry-After is tried
        again after it (every request of the worker waits too), up to RATE_LIMIT_RETRIES times while
        ``may_retry()``. Returns what the call returned, or the failure to answer with (reported
        when it says something about the model's setup)."""
        for attempt in range(RATE_LIMIT_RETRIES + 1):
            await self._rate_limit_gate()
            try:
                return await call()
            except UpstreamFailure as exc:
                failure = exc.failure
                if failure.retry_after is not None and attempt < RATE_LIMIT_RETRIES and may_retry():
                    self._back_off(failure.retry_after)
                    continue
                self._failed(failure)
                return failure
        raise AssertionError("unreachable")

    async def _complete(
        self, session: aiohttp.ClientSession, upstream: Upstream, request: Request
    ) -> tuple[str, dict[str, Any]] | None:
        doc = await self._call(lambda: upstream.complete(request.data))
        if isinstance(doc, Failure):
            await delivery.post(session, request.endpoint, gateway.answer(request.request_id, doc.body))
            return None
        await delivery.post(session, request.endpoint, gateway.answer(request.request_id, doc))
        usage = openai_api.usage_of(doc)
        return None if usage is None else (openai_api.booked_model(doc, self.settings.model_name), usage)

    async def _stream(
        self, session: aiohttp.ClientSession, upstream: Upstream, request: Request
    ) -> tuple[str, dict[str, Any]] | None:
        body, added = openai_api.with_usage_requested(request.data)
        out = delivery.Stream(session, request.endpoint)

        async def relay() -> tuple[str, dict[str, Any] | None]:
            usage: dict[str, Any] | None = None
            model = self.settings.model_name
            async for piece in upstream.stream(body):
                usage = openai_api.usage_of(piece) or usage
                model = openai_api.booked_model(piece, model)
                if added:
                    # What the requester did not ask for: the usage-only chunk, the usage keys.
                    if not piece.get("choices"):
                        continue
                    piece.pop("usage", None)
                await out.send(gateway.chunk(request.request_id, piece))
            return model, usage

        try:
            # Tried again only while nothing has reached the requester.
            relayed = await self._call(relay, may_retry=lambda: out.sent == 0)
            if isinstance(relayed, Failure):
                await out.send(gateway.end(request.request_id, relayed.body))
                return None
            await out.send(gateway.end(request.request_id))
            model, usage = relayed
            return None if usage is None else (model, usage)
        finally:
            await out.close()
