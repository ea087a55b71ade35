"""Pulsar: the request subscription and the result producer (pulsar-client's asyncio API)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import pulsar
import pulsar.asyncio as pulsar_async

from .settings import WorkerSettings


class QueueUnavailable(Exception):
    """Pulsar could not be reached or refused the subscription: a MessageQueueConnectionError."""


@dataclass
class Queue:
    client: pulsar_async.Client
    consumer: pulsar_async.Consumer
    producer: pulsar_async.Producer
    dead_letter_topic: str = ""
    _dead_letters: pulsar_async.Producer | None = None

    async def dead_letter(self, msg: pulsar.Message, why: str) -> None:
        """Send ``msg`` to the dead-letter topic at once, then acknowledge it. For a message that
        no redelivery can help and that the client's own dead-letter policy cannot move: one
        above the broker's size limit (it came chunked, and the policy's producer does not chunk)."""
        if self._dead_letters is None:
            self._dead_letters = await self.client.create_producer(
                self.dead_letter_topic, chunking_enabled=True, batching_enabled=False
            )
        properties = {**msg.properties(), "DEAD_LETTER_REASON": why[:200]}
        await self._dead_letters.send(msg.data(), properties=properties)
        await self.consumer.acknowledge(msg)

    async def close(self) -> None:
        """Close the consumer first: messages received but not acknowledged go to other workers."""
        closes = [self.consumer.close, self.producer.close]
        if self._dead_letters is not None:
            closes.append(self._dead_letters.close)
        for close in closes:
            with contextlib.suppress(pulsar_async.PulsarException):
                await close()
        await self.client.close()


def producer_options(settings: WorkerSettings) -> tuple[bool, int, int]:
    """The result producer's (batching_enabled, batching_max_publish_delay_ms, max_pending_messages):
    usage records sent together within USAGE_PUBLISH_DELAY_MS (whole milliseconds, at least 1), or
    each alone with 0; room for every record that can be pending at once (one per settling request,
    at most MAX_PROCESS_NUM), so that a send is never refused for a full queue."""
    delay = settings.usage_publish_delay_ms
    pending = max(1000, settings.max_process_num)
    if delay <= 0:
        return False, 10, pending
    return True, max(1, round(delay)), pending


async def connect(settings: WorkerSettings, consumer_name: str | None = None) -> Queue:
    auth = pulsar.AuthenticationToken(settings.pulsar_token) if settings.pulsar_token else None
    try:
        client = pulsar_async.Client(
            settings.pulsar_url,
            authentication=auth,
            operation_timeout_seconds=15,
            connection_timeout_ms=5000,
            logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Warn),
        )
    except (ValueError, pulsar.PulsarException, pulsar_async.PulsarException) as exc:
        raise QueueUnavailable(f"cannot use PULSAR_URL {settings.pulsar_url!r}: {exc}") from exc
    try:
        consumer = await client.subscribe(
            settings.topic,
            settings.subscription,
            consumer_type=pulsar.ConsumerType.Shared,
            # No more prefetched than can be worked on: other replicas get the rest.
            receiver_queue_size=max(1, min(settings.max_process_num, 1000)),
            # A request handed back (shutdown, an endpoint that could not be reached) comes back soon.
            negative_ack_redelivery_delay_ms=1000,
            consumer_name=consumer_name,
            initial_position=pulsar.InitialPosition.Earliest,
            # A message handed back again and again (one no worker can process, an answer that
            # cannot be delivered) leaves the subscription for model-<model>-DLQ, kept there
            # under its own subscription: it can neither pin a consumer nor the backlog.
            dead_letter_policy=pulsar.ConsumerDeadLetterPolicy(
                settings.max_redeliveries,
                settings.dead_letter_topic,
                settings.dead_letter_subscription,
            ),
        )
        batching, delay_ms, pending = producer_options(settings)
        producer = await client.create_producer(
            settings.res_topic,
            batching_enabled=batching,
            batching_max_publish_delay_ms=delay_ms,
            max_pending_messages=pending,
        )
    except pulsar_async.PulsarException as exc:
        await client.close()
        raise QueueUnavailable(f"cannot subscribe to {settings.topic} at {settings.pulsar_url}: {exc}") from exc
    return Queue(client, consumer, producer, settings.dead_letter_topic)
