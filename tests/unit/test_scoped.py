"""Namespace scoping: the flag's parsing, and per-namespace informers read as one."""

from __future__ import annotations

import argparse
import asyncio

import pytest

from aimodel_operator.config import load, namespace_list
from aimodel_operator.informer import Informer
from aimodel_operator.kube import Kube, Resource
from aimodel_operator.scoped import Scoped
from fakekube import FakeApi

THINGS = Resource("example.com", "v1", "things", "Thing")


def test_namespace_list():
    assert namespace_list("") == ()
    assert namespace_list(" team-a, team-b ,team-a,") == ("team-a", "team-b")
    with pytest.raises(argparse.ArgumentTypeError, match="'Team_A' is not a namespace name"):
        namespace_list("Team_A")


def test_the_flag_and_the_environment():
    assert load(["run"], {"WATCH_NAMESPACES": "x,y"}).namespaces == ("x", "y")
    assert load(["run", "--namespaces", "z"], {"WATCH_NAMESPACES": "x,y"}).namespaces == ("z",)
    assert load(["run"], {}).namespaces == ()


def obj(ns, name):
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": "3"}}


async def test_scoped_informers_read_only_their_namespaces_and_answer_as_one():
    api = FakeApi(THINGS)
    for o in (obj("a", "x"), obj("b", "y"), obj("elsewhere", "secret")):
        api.put(THINGS, o)
    seen = []
    scoped = Scoped(
        lambda ns: Informer(Kube.over(api), THINGS, lambda k, o: seen.append(o["metadata"]["name"]), namespace=ns),
        ("a", "b"),
    )
    task = asyncio.create_task(scoped.run())
    try:
        async with asyncio.timeout(2):
            await scoped.synced.wait()
            await scoped.current.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Never a cluster-wide list or watch.
    assert sorted(r.namespace for r in api.lists(THINGS)) == ["a", "b"]
    assert sorted(r.namespace for r in api.watches(THINGS)) == ["a", "b"]
    assert sorted(seen) == ["x", "y"]
    assert sorted(scoped) == [("a", "x"), ("b", "y")] and len(scoped) == 2
    assert ("a", "x") in scoped and ("elsewhere", "secret") not in scoped
    assert scoped.get("b", "y")["metadata"]["name"] == "y" and scoped.get("elsewhere", "secret") is None
    assert scoped.remember({"metadata": {"name": "z", "namespace": "a", "resourceVersion": "9"}})
    assert not scoped.remember({"metadata": {"name": "z", "namespace": "elsewhere", "resourceVersion": "9"}})
    scoped.forget("a", "z")
    assert ("a", "z") not in scoped
    assert scoped.available is True and scoped.synced.is_set()


async def test_all_set_waits_until_every_event_is_set_at_the_same_time():
    from aimodel_operator.scoped import AllSet

    a, b = asyncio.Event(), asyncio.Event()
    a.set()
    both = AllSet([a, b])
    waiter = asyncio.create_task(both.wait())
    await asyncio.sleep(0)
    a.clear()  # one namespace's watch breaks while another's is still coming up
    b.set()
    await asyncio.sleep(0.01)
    assert not waiter.done()
    a.set()
    async with asyncio.timeout(1):
        assert await waiter
