"""The informer against a scripted API: relists report deletions, pages, idle watches, confirmed absence.

The fake below plays only the list/watch/discovery protocol; the informer's
behaviour against the real API server is covered by the fault suite.
"""

from __future__ import annotations

import asyncio

import pytest

from aimodel_operator.informer import ABSENCE_CONFIRMATIONS, Informer
from aimodel_operator.kube import Answer, Kube, Resource, WatchIdle

THINGS = Resource("example.com", "v1", "things", "Thing")

from fakekube import FakeApi, Listing  # noqa: E402


def obj(name, rv, ns="ns"):
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(rv), "managedFields": [1]}}


def scripted(snapshots, watches=(), served=True) -> FakeApi:
    """Each list answers the next snapshot (paged; the last one repeats), each watch plays the next
    script (then the stream ends; ``None``: it stays open, silent)."""
    api = FakeApi(THINGS)
    api.script("GET", THINGS, *[s if isinstance(s, (Exception, Answer)) else Listing(*s) for s in snapshots])
    api.script_watch(THINGS, *watches)
    api.served[THINGS.plural] = served
    return api


def lists(api: FakeApi) -> int:
    return len(api.lists(THINGS))


def watched_from(api: FakeApi) -> list[str]:
    return [w.query["resourceVersion"] for w in api.watches(THINGS)]


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr("aimodel_operator.informer.sleep_backoff", lambda n: asyncio.sleep(0))


async def run_until(informer, condition, timeout=2.0):
    task = asyncio.create_task(informer.run())
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - polls the informer's visible state
                await asyncio.sleep(0.001)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_relist_reports_what_vanished_while_no_watch_ran():
    api = scripted(
        [([obj("a", 1), obj("b", 2)], 2), ([obj("a", 1)], 9)],
        watches=[[{"type": "ERROR", "object": {"code": 500, "message": "boom"}}]],
    )
    seen = []
    informer = Informer(Kube.over(api), THINGS, lambda kind, o: seen.append((kind, o["metadata"]["name"])))
    await run_until(informer, lambda: lists(api) == 2 and api.blocked.is_set())
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "b")]
    assert informer.get("ns", "b") is None
    assert informer.get("ns", "a")["metadata"].get("managedFields") is None
    assert watched_from(api) == ["2", "9"]


async def test_lists_are_paged_and_unchanged_objects_are_not_reported_again():
    api = scripted([([obj(f"o{n}", n) for n in range(1, 8)], 7)], watches=[[], None])
    seen = []
    informer = Informer(Kube.over(api), THINGS, lambda kind, o: seen.append(kind), page_size=3)
    await run_until(informer, lambda: api.blocked.is_set())
    assert [r.query["limit"] for r in api.lists(THINGS)] == ["3"] * 3
    # The server ended the first watch: watched again from where it was, no relist.
    assert watched_from(api) == ["7", "7"]
    assert len(informer) == 7
    assert seen == ["ADDED"] * 7


async def test_an_uncached_kind_delivers_every_object_and_keeps_none():
    api = scripted([([obj("e1", 1), obj("e2", 2)], 2)], watches=[None])
    seen = []
    informer = Informer(Kube.over(api), THINGS, lambda kind, o: seen.append(o["metadata"]["name"]), keep=False)
    await run_until(informer, lambda: api.blocked.is_set())
    assert seen == ["e1", "e2"] and len(informer) == 0


async def test_a_silent_watch_is_watched_again_from_the_last_version_without_a_relist():
    api = scripted(
        [([], 5)],
        watches=[[{"type": "ADDED", "object": obj("a", 6)}, WatchIdle("nothing for 5s")], None],
    )
    informer = Informer(Kube.over(api), THINGS, None)
    await run_until(informer, lambda: api.blocked.is_set())
    assert lists(api) == 1
    assert watched_from(api) == ["5", "6"]


async def test_an_expired_history_relists_at_once(monkeypatch):
    api = scripted([([], 5), ([obj("a", 20)], 20)], watches=[Answer(410, {"reason": "Expired"}), None])
    informer = Informer(Kube.over(api), THINGS, None)
    await run_until(informer, lambda: api.blocked.is_set())
    assert lists(api) == 2 and informer.get("ns", "a") is not None


async def test_an_own_write_newer_than_the_list_is_neither_lost_nor_echoed():
    api = scripted([([], 5)], watches=[[{"type": "MODIFIED", "object": obj("a", 6)}], None])
    seen = []
    informer = Informer(Kube.over(api), THINGS, lambda kind, o: seen.append(kind))
    assert informer.remember(obj("a", 6))
    assert not informer.remember(obj("a", 5)), "an older answer must not replace a newer object"
    await run_until(informer, lambda: api.blocked.is_set())
    assert seen == []


async def test_an_optional_kind_is_given_up_only_after_repeated_confirmation():
    gone = Answer(404, {"message": "not found"})
    api = scripted([([obj("s", 1)], 1), gone], watches=[Answer(500, {})])
    changes = []
    informer = Informer(Kube.over(api), THINGS, None, optional=True, absent_retry=0.003)
    informer.on_availability = changes.append
    # Discovery still serves the kind: a 404 on the list is a blip, never an absence.
    await run_until(informer, lambda: lists(api) >= 10)
    assert informer.available is True and changes == []
    assert informer.get("ns", "s") is not None
    # Discovery agrees it is gone: given up after ABSENCE_CONFIRMATIONS looks.
    api.served[THINGS.plural] = False
    await run_until(informer, lambda: informer.available is False)
    assert changes == [False]
    assert informer.get("ns", "s") is None
    assert ABSENCE_CONFIRMATIONS >= 2


async def test_an_optional_kind_missing_at_start_is_absent_once_discovery_says_so():
    api = scripted([Answer(404, {})], served=False)
    informer = Informer(Kube.over(api), THINGS, None, optional=True, absent_retry=0.01)
    await run_until(informer, lambda: informer.synced.is_set())
    assert informer.available is False and lists(api) == 1


async def test_a_forbidden_kind_is_given_up_only_when_forbidden_again_and_again():
    api = scripted([Answer(403, {})], served=True)
    informer = Informer(Kube.over(api), THINGS, None, optional=True, absent_retry=0.01)
    await run_until(informer, lambda: informer.synced.is_set())
    assert informer.available is False and lists(api) == ABSENCE_CONFIRMATIONS


async def test_a_failing_absence_check_never_ends_the_informer():
    api = scripted([Answer(404, {}), ([obj("a", 1)], 1)], watches=[None])
    api.served[THINGS.plural] = RuntimeError("connection reset during discovery")
    informer = Informer(Kube.over(api), THINGS, None, optional=True, absent_retry=0.01)
    await run_until(informer, lambda: informer.get("ns", "a") is not None)
    assert informer.available is True


async def test_a_late_deletion_of_a_predecessor_keeps_its_successor():
    api = scripted([([], 5)], watches=[[{"type": "DELETED", "object": obj("a", 7)}], None])
    seen = []
    informer = Informer(Kube.over(api), THINGS, lambda kind, o: seen.append(kind))
    informer.remember(obj("a", 9))  # created anew by us after the deletion
    await run_until(informer, lambda: api.blocked.is_set())
    assert informer.get("ns", "a")["metadata"]["resourceVersion"] == "9"
    assert seen == []


async def test_a_change_the_transform_drops_is_stored_but_not_reported():
    """A pod's new resourceVersion with nothing the operator keeps changed wakes nobody."""

    def keep_phase(o):
        return {"metadata": {"name": o["metadata"]["name"], "namespace": "ns"}, "phase": o.get("phase")}

    def pod(rv, phase):
        return {**obj("p", rv), "phase": phase}

    api = scripted(
        [([pod(1, "Running")], 1)],
        watches=[
            [
                {"type": "MODIFIED", "object": pod(2, "Running")},  # e.g. a heartbeat timestamp
                {"type": "MODIFIED", "object": pod(3, "Failed")},
                {"type": "MODIFIED", "object": pod(4, "Failed")},
            ],
            None,
        ],
    )
    seen = []
    informer = Informer(
        Kube.over(api), THINGS, lambda kind, o: seen.append((kind, o["metadata"]["resourceVersion"])), keep_phase
    )
    await run_until(informer, lambda: api.blocked.is_set())
    assert seen == [("ADDED", "1"), ("MODIFIED", "3")]
    assert informer.get("ns", "p")["phase"] == "Failed"
    assert informer.store[("ns", "p")][0] == 4  # the newest version is known: older events stay stale
