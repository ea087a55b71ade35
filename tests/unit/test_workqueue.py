"""The keyed work queue: collapsing, one reconcile per key at a time, delayed re-queues."""

import asyncio

import pytest

from aimodel_operator.workqueue import WorkQueue

A = ("default", "a")
B = ("default", "b")
TIMEOUT = 2.0


async def get(q: WorkQueue) -> tuple[str, str]:
    return await asyncio.wait_for(q.get(), TIMEOUT)


async def assert_empty(q: WorkQueue) -> None:
    """Nothing is ready: a get() does not complete once the loop has had its turn."""
    task = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_repeated_adds_collapse():
    q = WorkQueue()
    for _ in range(50):
        q.add(A)
    assert len(q) == 1
    assert await get(q) == A
    assert len(q) == 0
    await assert_empty(q)
    q.done(A)
    await assert_empty(q)


async def test_keys_are_fifo():
    q = WorkQueue()
    q.add(A)
    q.add(B)
    q.add(A)
    assert len(q) == 2
    assert [await get(q), await get(q)] == [A, B]


async def test_add_while_active_requeues_after_done():
    q = WorkQueue()
    q.add(A)
    assert await get(q) == A
    # Triggers during the reconcile do not start a second one in parallel...
    q.add(A)
    q.add(A)
    assert len(q) == 0
    await assert_empty(q)
    # ... but one more follows it.
    q.done(A)
    assert len(q) == 1
    assert await get(q) == A
    q.done(A)
    await assert_empty(q)


async def test_other_keys_run_while_one_is_active():
    q = WorkQueue()
    q.add(A)
    assert await get(q) == A
    q.add(B)
    assert await get(q) == B
    q.done(B)
    q.done(A)
    await assert_empty(q)


async def test_get_waits_for_add():
    q = WorkQueue()
    task = asyncio.ensure_future(get(q))
    await asyncio.sleep(0)
    assert not task.done()
    q.add(B)
    assert await task == B


async def test_add_after_fires_later():
    q = WorkQueue()
    q.add_after(A, 0.01)
    assert len(q) == 0
    assert await get(q) == A


async def test_add_after_keeps_earliest():
    q = WorkQueue()
    q.add_after(A, 0.01)
    q.add_after(A, 60)
    assert await get(q) == A
    q.done(A)

    q.add_after(B, 60)
    q.add_after(B, 0.01)
    assert await get(q) == B
    q.done(B)
    assert q._timers == {}


async def test_add_after_while_active_requeues_after_done():
    q = WorkQueue()
    q.add(A)
    assert await get(q) == A
    fired = asyncio.Event()
    fire = q._fire

    def spy(key):
        fire(key)
        fired.set()

    q._fire = spy
    q.add_after(A, 0.01)
    # The timer fires while A is still being reconciled: it only marks A dirty.
    await asyncio.wait_for(fired.wait(), TIMEOUT)
    assert A not in q._timers
    await assert_empty(q)
    q.done(A)
    assert await get(q) == A


async def test_drop_cancels_timer():
    q = WorkQueue()
    q.add_after(A, 0.01)
    q.drop(A)
    q.add_after(B, 0.02)
    # B fires after A would have: A never came.
    assert await get(q) == B
    assert len(q) == 0
    await assert_empty(q)


async def test_rate_limited_delays_double_until_forgotten():
    q = WorkQueue(base_delay=0.5, max_delay=4)
    assert [q.add_rate_limited(A) for _ in range(5)] == [0.5, 1, 2, 4, 4]
    assert q.num_requeues(A) == 5
    q.forget(A)
    assert q.num_requeues(A) == 0
    assert q.add_rate_limited(A) == 0.5
    q.drop(A)
    assert q.num_requeues(A) == 0
    assert A not in q._timers


async def test_an_urgent_key_goes_ahead_of_a_thousand_queued():
    q = WorkQueue()
    keys = [("ns", f"m{i}") for i in range(1000)]
    for key in keys:
        q.add(key)
    report = ("ns", "reported")
    q.add_urgent(report)
    assert await get(q) == report
    # One already queued moves ahead, once; the others keep their order.
    q.add_urgent(keys[500])
    q.add_urgent(keys[500])
    assert len(q) == 1000
    assert await get(q) == keys[500]
    assert await get(q) == keys[0]
    assert await get(q) == keys[1]
    # Reported while being reconciled: it runs again right after, ahead of the rest.
    q.add_urgent(keys[0])
    q.done(keys[0])
    assert await get(q) == keys[0]
    rest = [await get(q) for _ in range(len(q))]
    assert rest == [k for k in keys[2:] if k != keys[500]]
    await assert_empty(q)
