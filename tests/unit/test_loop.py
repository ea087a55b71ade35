"""The generic reconcile loop (loop.py), driven by fake reconcilers on the real work queue: a
reconcile says when to look again, and only the loop touches the queue."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from aimodel_operator.loop import DONE, Failed, Loop, Result
from aimodel_operator.workqueue import WorkQueue

KEY = ("ns", "m")


class Fake:
    """Answers each reconcile of KEY with the next of ``answers`` (a Result, or an exception to
    raise), recording when it was called; ``finished`` is set once they are all used."""

    def __init__(self, *answers: Result | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[float] = []
        self.errors: list[tuple[Exception, float, bool]] = []
        self.finished = asyncio.Event()

    async def reconcile(self, key):
        assert key == KEY
        self.calls.append(asyncio.get_running_loop().time())
        answer = self.answers.pop(0)
        if not self.answers:
            self.finished.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def on_error(self, key, err, delay, first):
        self.errors.append((err, delay, first))


async def run(fake: Fake, queue: WorkQueue, **options) -> Loop:
    loop = Loop(queue, fake.reconcile, fake.on_error, **options)
    task = asyncio.create_task(loop.run())
    try:
        queue.add(KEY)
        await asyncio.wait_for(fake.finished.wait(), 5)
        # Let the loop hand the last result to the queue.
        await asyncio.sleep(0)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return loop


async def until(condition) -> None:
    """Yield to the loop until ``condition()`` holds (a few turns of the event loop at most)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def gaps(calls: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(calls)]


async def test_a_failure_is_retried_with_growing_pauses_and_a_success_clears_them():
    queue = WorkQueue(base_delay=0.02, max_delay=1)
    boom = RuntimeError("boom")
    fake = Fake(boom, boom, boom, DONE)
    await run(fake, queue)
    assert len(fake.calls) == 4
    assert [round(d, 2) for _, d, _ in fake.errors] == [0.02, 0.04, 0.08]
    assert [first for _, _, first in fake.errors] == [True, False, False]
    for gap, delay in zip(gaps(fake.calls), (0.02, 0.04, 0.08), strict=True):
        assert gap >= delay * 0.9
    assert queue.num_requeues(KEY) == 0, "a success forgets the failures"


async def test_requeue_after_runs_again_after_that_long_and_is_not_a_failure():
    queue = WorkQueue(base_delay=0.02, max_delay=1)
    fake = Fake(RuntimeError("once"), Result(requeue_after=0.15), DONE)
    await run(fake, queue)
    assert len(fake.calls) == 3
    assert gaps(fake.calls)[1] >= 0.14
    assert queue.num_requeues(KEY) == 0


async def test_backoff_cap_looks_again_with_pauses_growing_to_the_cap():
    queue = WorkQueue(base_delay=0.02, max_delay=1)
    look_again = Result(backoff_cap=0.05)
    fake = Fake(look_again, look_again, look_again, look_again, DONE)
    await run(fake, queue)
    observed = gaps(fake.calls)
    for gap, delay in zip(observed, (0.02, 0.04, 0.05, 0.05), strict=True):
        assert gap >= delay * 0.9, observed
    assert max(observed) < 0.5
    assert fake.errors == [], "waiting is not failing"


async def test_done_is_not_run_again_until_queued():
    queue = WorkQueue(base_delay=0.02)
    fake = Fake(DONE)
    await run(fake, queue)
    assert len(queue) == 0 and not queue._timers


async def test_not_leading_means_not_reconciling():
    queue = WorkQueue()
    gate = asyncio.Event()
    fake = Fake(DONE)
    loop = Loop(queue, fake.reconcile, fake.on_error, gate=gate)
    task = asyncio.create_task(loop.run())
    queue.add(KEY)
    # The worker took the key and is now waiting for the gate.
    await until(lambda: KEY not in queue._queued and KEY not in queue._active)
    assert fake.calls == []
    gate.set()
    queue.add(KEY)
    await asyncio.wait_for(fake.finished.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert len(fake.calls) == 1


async def test_a_reconcile_waits_until_the_caches_are_current():
    queue = WorkQueue()
    ready = asyncio.Event()
    fake = Fake(DONE)
    loop = Loop(queue, fake.reconcile, fake.on_error, ready=ready)
    task = asyncio.create_task(loop.run())
    queue.add(KEY)
    await until(lambda: KEY not in queue._queued)
    for _ in range(10):
        await asyncio.sleep(0)
    assert fake.calls == []
    ready.set()
    await asyncio.wait_for(fake.finished.wait(), 5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize(
    ("result", "seconds", "expected"),
    [
        (DONE, None, DONE),
        (DONE, 3.0, Result(requeue_after=3.0)),
        (Result(requeue_after=1.0), 3.0, Result(requeue_after=1.0)),
        (Result(requeue_after=5.0), 3.0, Result(requeue_after=3.0)),
        (Result(backoff_cap=30.0), 3.0, Result(requeue_after=3.0, backoff_cap=30.0)),
    ],
)
def test_sooner_keeps_the_earliest(result, seconds, expected):
    assert result.sooner(seconds) == expected


async def test_a_failure_that_knows_when_to_look_again_is_retried_by_then_at_the_latest():
    """A reconcile that deferred its status write and then failed: the retry comes when the
    status is due, not after a failure pause that has grown longer."""
    queue = WorkQueue(base_delay=5, max_delay=60)
    boom = RuntimeError("refused")
    fake = Fake(Failed(boom, requeue_after=0.05), DONE)
    await run(fake, queue)
    assert len(fake.calls) == 2 and gaps(fake.calls)[0] < 1
    assert fake.errors[0][0] is boom, "the cause is what is told"
