"""The reference worker's slots: a request gives up its working slot once answered (while its
usage record is published and it is acknowledged), bounded so that a stalled result producer
cannot make the worker pull messages without end; and the result producer's batching."""

from __future__ import annotations

import asyncio

import pytest

from aimodel_worker.runner import queue
from aimodel_worker.runner.settings import SettingsError, WorkerSettings
from aimodel_worker.runner.worker import Slot, Slots

ENV = {"MODEL_NAME": "gpt-4o", "API_URL": "http://api", "MAX_PROCESS_NUM": "2"}


def free(sem: asyncio.Semaphore) -> int:
    return sem._value  # what a waiter would get without waiting


async def test_an_answered_request_frees_its_working_slot_for_the_next():
    slots = Slots(1)
    await slots.working.acquire()
    first = Slot(slots)
    await first.answered()
    # The next request can be received while the first one's record is being published.
    assert (free(slots.working), free(slots.settling), first.state) == (1, 0, "settling")
    await slots.working.acquire()
    second = Slot(slots)
    first.done()
    assert (free(slots.working), free(slots.settling), first.state) == (0, 1, "done")
    second.done()
    second.done()  # once only, whatever calls it again
    assert (free(slots.working), free(slots.settling)) == (1, 1)


async def test_with_every_settling_slot_taken_an_answered_request_keeps_its_working_slot():
    """A stalled producer: at most MAX_PROCESS_NUM settling and MAX_PROCESS_NUM working, no more received."""
    slots = Slots(1)
    await slots.working.acquire()
    stalled = Slot(slots)
    await stalled.answered()
    await slots.working.acquire()
    waiting = Slot(slots)
    moving = asyncio.create_task(waiting.answered())
    await asyncio.wait({moving}, timeout=0)  # it runs until it waits for a settling slot
    assert not moving.done() and waiting.state == "working"
    assert slots.working.locked() and slots.settling.locked()
    stalled.done()  # the first record published and acknowledged
    await moving
    assert (waiting.state, free(slots.working), free(slots.settling)) == ("settling", 1, 0)


async def test_a_request_cancelled_while_waiting_to_settle_gives_its_working_slot_back():
    slots = Slots(1)
    await slots.working.acquire()
    await Slot(slots).answered()
    await slots.working.acquire()
    waiting = Slot(slots)
    moving = asyncio.create_task(waiting.answered())
    await asyncio.wait({moving}, timeout=0)
    moving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await moving
    waiting.done()
    assert (free(slots.working), free(slots.settling)) == (1, 0)


async def test_a_request_that_ends_before_its_answer_gives_its_working_slot_back():
    slots = Slots(2)
    await slots.working.acquire()
    slot = Slot(slots)
    slot.done()
    await slot.answered()  # too late: nothing moves
    assert (slot.state, free(slots.working), free(slots.settling)) == ("done", 2, 2)


@pytest.mark.parametrize(
    ("delay", "batching", "delay_ms"),
    [("", True, 10), ("0", False, 10), ("2.4", True, 2), ("0.2", True, 1), ("50", True, 50)],
)
def test_the_result_producer_batches_within_usage_publish_delay_ms(delay, batching, delay_ms):
    s = WorkerSettings.from_env({**ENV, "USAGE_PUBLISH_DELAY_MS": delay})
    assert queue.producer_options(s) == (batching, delay_ms, 1000)


def test_the_result_producer_has_room_for_every_settling_record():
    s = WorkerSettings.from_env({**ENV, "MAX_PROCESS_NUM": "4096"})
    assert queue.producer_options(s)[2] == 4096


def test_a_negative_usage_publish_delay_is_refused():
    with pytest.raises(SettingsError, match="USAGE_PUBLISH_DELAY_MS='-1' must be at least 0"):
        WorkerSettings.from_env({**ENV, "USAGE_PUBLISH_DELAY_MS": "-1"})
