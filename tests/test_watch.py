"""The one loop of every planner (isthmus.coordinator.watch) against a real etcd: list, follow, list again after
a compaction; and the sync and views planners, which run it, reloading after a compaction."""

from __future__ import annotations

import asyncio
import json

from conftest import await_for
from isthmus.coordinator.multisite.sync_planner import InventoryRecord, SyncPlanner, inventory_key
from isthmus.coordinator.multisite.views_planner import QUOTAS, ViewsPlanner
from isthmus.coordinator.planner import Planner
from isthmus.coordinator.registry import ROOT
from isthmus.coordinator.store import KV, Event, Store
from isthmus.coordinator.watch import Watcher

PREFIX = ROOT + "watch-test/"


class Recorder(Watcher[list[str]]):
    """Keeps the keys under PREFIX; notes what each step saw."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, PREFIX, "recorder")
        self.keys: set[str] = set()
        self.steps: list[tuple[str, int, bool]] = []  # (relist | apply, revision, ready then)
        self.reconciled: list[tuple[list[str], int]] = []  # (work, the watcher's revision then)

    def relist(self, kvs: list[KV], revision: int) -> list[str]:
        self.keys = {kv.key[len(PREFIX):] for kv in kvs}
        self.steps.append(("relist", revision, self.ready.is_set()))
        return sorted(self.keys)

    def apply(self, revision: int, events: list[Event]) -> list[str]:
        for e in events:
            (self.keys.discard if e.deleted else self.keys.add)(e.kv.key[len(PREFIX):])
        self.steps.append(("apply", revision, self.ready.is_set()))
        return [e.kv.key[len(PREFIX):] for e in events]

    async def reconcile(self, work: list[str]) -> None:
        self.reconciled.append((work, self.revision))


async def test_a_watcher_lists_follows_and_lists_again_after_a_compaction(etcd: str) -> None:
    store = Store([etcd])
    await store.connect()
    first = await store.put(PREFIX + "a", b"1")
    w = Recorder(store)
    await w.start()
    assert w.keys == {"a"} and w.ready.is_set() and w.revision >= first
    assert w.steps == [("relist", w.revision, False)] and w.reconciled == [(["a"], w.revision)]

    rev = await store.put(PREFIX + "b", b"2")
    assert await w.wait_for_revision(rev, 10), f"the watcher stayed at rev {w.revision}"
    assert w.keys == {"a", "b"} and w.steps[-1] == ("apply", rev, True)
    assert w.reconciled[-1] == (["b"], rev)  # reconcile runs once the revision has moved on

    # Stop following, change things, compact the history away: the watcher must list again, not miss it.
    await w.stop()
    await store.delete(PREFIX + "a")
    later = await store.put(PREFIX + "c", b"3")
    await store.compact(later)
    task = asyncio.create_task(w._follow())
    try:
        await await_for(lambda: w.keys == {"b", "c"}, 10, f"the watcher to list again (it holds {w.keys})")
        kind, listed_at, ready = w.steps[-1]
        assert kind == "relist" and listed_at >= later and ready
        assert w.revision >= later and w.reconciled[-1] == (["b", "c"], w.revision)
        assert not await w.wait_for_revision(w.revision + 1000, 0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()


async def test_the_sync_and_views_planners_reload_after_a_compaction(etcd: str) -> None:
    store = Store([etcd])
    await store.connect()
    sync = SyncPlanner(store)
    await sync.start()
    woken: list[int] = []
    planner = Planner(store)
    await planner.start()
    views = ViewsPlanner(store, planner, lambda: woken.append(views.revision))
    await views.start()
    quota = QUOTAS + "p1/instances"
    try:
        await sync.stop()
        await views.stop()
        await store.put(inventory_key("r1"), InventoryRecord("r1", "RegionOne").encode())
        later = await store.put(quota, json.dumps({"hard": 10, "soft": -1}).encode())
        await store.compact(later)
        tasks = [asyncio.create_task(sync._follow()), asyncio.create_task(views._follow())]
        await await_for(lambda: "r1" in sync.view.inventories and ("p1", "instances") in views.state.quotas, 10,
                        "the sync and views planners to reload after the compaction")
        assert sync.revision >= later and views.revision >= later
        assert woken and woken[-1] >= later  # the agents' streams look at their quota targets again
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await planner.stop()
        await store.close()
