"""The central event history: agents' journals stored by the coordinators in etcd, complete and in order.

- agents cut off from the coordinator (one restarted meanwhile) deliver every event when it comes
  back, in order, none twice; a journal that overflowed leaves an explicit gap event;
- the writer is idempotent across coordinators, and an agent whose journal was lost numbers on;
- ListEvents filters, WatchEvents gives the history and then live events without a gap;
- retention trims by age and by count, as the leader's job.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from conftest import Proc, agent_cmd, await_for, coordinator_cmd, ctl, wait_for
from isthmus.agent.journal import Journal
from isthmus.agent.link import CoordinatorLink
from isthmus.agent.overrides import Overrides
from isthmus.agent.reconciler import Reconciler
from isthmus.agent.state import StateFile
from isthmus.coordinator import events as ev
from isthmus.coordinator.main import Coordinator, Options
from isthmus.coordinator.store import Store
from isthmus.core import model as m
from isthmus.drivers.base import DriverContext
from isthmus.drivers.fake import FakeDriver
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc, api_pb2_grpc, events_pb2_grpc
from isthmus.v1 import events_pb2 as epb
from isthmus.v1 import types_pb2 as pb

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (Debian package etcd-server)")


# ---------------------------------------------------------------- helpers


def admin(sock: Path) -> admin_pb2_grpc.AgentAdminStub:
    return admin_pb2_grpc.AgentAdminStub(grpc.insecure_channel(f"unix:{sock}"))


def journal(sock: Path) -> list[tuple[int, str, str]]:
    entries = admin(sock).Journal(adm.JournalRequest(limit=0), timeout=5).entries
    return [(e.seq, e.kind, e.message) for e in entries]


def central(addr: str, site: str) -> list[dict[str, Any]]:
    out = ctl("events", "--coordinator", addr, "--site", site, "--limit", "10000", "-o", "json").stdout
    return list(json.loads(out))


def as_entries(events: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(int(e["seq"]), e["kind"], e["message"]) for e in events]


def flap(sock: Path, connection: str, times: int, tag: str) -> None:
    """Disable and enable a peering locally: at least two journal entries each time."""
    stub = admin(sock)
    for i in range(times):
        stub.DisablePeering(adm.DisablePeeringRequest(connection=connection, reason=f"{tag} {i}"), timeout=5)
        stub.EnablePeering(adm.EnablePeeringRequest(connection=connection), timeout=5)


def start_coordinator(procs: Callable[..., Proc], tmp: Path, name: str, etcd: str, port: int = 0) -> tuple[Proc, str]:
    ready = tmp / f"{name}.addr"
    ready.unlink(missing_ok=True)
    proc = procs(name, coordinator_cmd(tmp / name, ready, etcd_endpoint=etcd, port=port), tmp / f"{name}.log")
    return proc, str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, f"{name} to be ready"))


def entry(seq: int, kind: str = "peering", message: str = "", level: str = "", time_ms: int = 0,
          connection: str = "") -> m.JournalEntry:
    return m.JournalEntry(seq, time_ms or int(time.time() * 1000), kind, connection, message or f"event {seq}",
                          m.event_level(kind, level))


async def connected_store(etcd: str) -> Store:
    store = Store([etcd])
    await store.connect()
    return store


def options(etcd: str, tmp: Path, **kw: Any) -> Options:
    return Options(listen=["127.0.0.1:0"], advertise="", etcd_endpoints=[etcd], data_dir=tmp, tls_cert="",
                   tls_key="", tls_ca="", insecure=False, lease_ttl=5, ready_file="", **kw)


# ---------------------------------------------------------------- cut-off sites, end to end


def test_events_of_cut_off_agents_arrive_complete_in_order_and_gaps_are_explicit(
        etcd: str, tmp_path: Path, procs: Callable[..., Proc]) -> None:
    coord, addr = start_coordinator(procs, tmp_path, "coord", etcd)
    ch = grpc.insecure_channel(addr)
    sites, endpoints = api_pb2_grpc.SiteServiceStub(ch), api_pb2_grpc.EndpointServiceStub(ch)
    for i, site in enumerate(("r1", "r2")):
        sites.CreateSite(pb.Site(name=site, kind=pb.SITE_KIND_REGION), timeout=5)
        endpoints.CreateEndpoint(pb.Endpoint(site=site, name="gw", address=f"192.0.2.{i + 1}", asn=65001 + i),
                                 timeout=5)
    api_pb2_grpc.ConnectionServiceStub(ch).CreateConnection(pb.Connection(
        name="r1--r2", type=pb.CONNECTION_TYPE_BGP, a=pb.EndpointRef(site="r1", name="gw"),
        b=pb.EndpointRef(site="r2", name="gw")), timeout=5)
    ch.close()
    r1_cmd = agent_cmd("r1", addr, tmp_path)
    agent_r1 = procs("agent-r1", r1_cmd, tmp_path / "agent-r1.log")
    procs("agent-r2", agent_cmd("r2", addr, tmp_path, "--journal-size", "20"), tmp_path / "agent-r2.log")
    s1, s2 = tmp_path / "r1" / "admin.sock", tmp_path / "r2" / "admin.sock"

    def established(sock: Path) -> bool:
        peerings = admin(sock).ListPeerings(adm.ListPeeringsRequest(), timeout=2).peerings
        return [p.observed.state for p in peerings] == [pb.PEERING_STATE_ESTABLISHED]

    for sock in (s1, s2):
        wait_for(lambda sock=sock: established(sock), 30, f"r1--r2 established at {sock.parent.name}")
    wait_for(lambda: as_entries(central(addr, "r2")) == journal(s2), 20, "r2's events to be stored centrally")
    stored_r2 = journal(s2)[-1][0]

    coord.stop()  # SIGTERM: every stream ends, the agents are cut off
    for sock in (s1, s2):
        wait_for(lambda sock=sock: admin(sock).Status(adm.AgentStatusRequest(), timeout=2).partitioned, 20,
                 f"{sock.parent.name} to be cut off")
    flap(s1, "r1--r2", 25, "before the restart")
    flap(s2, "r1--r2", 30, "overflow")
    # r1 restarts while cut off: its journal, and its sequence numbers, continue from disk.
    assert agent_r1.stop() == 0
    procs("agent-r1-again", r1_cmd, tmp_path / "agent-r1-again.log")
    wait_for(lambda: established(s1), 30, "r1--r2 established again after r1's restart")
    flap(s1, "r1--r2", 15, "after the restart")
    assert len(journal(s1)) > 2 * 50, "well over the 50 entries an agent used to send on connect"
    kept_r2 = journal(s2)
    assert len(kept_r2) == 20 and kept_r2[0][0] > stored_r2 + 1, "r2's journal must have overflowed"

    _, addr2 = start_coordinator(procs, tmp_path, "coord-again", etcd, port=int(addr.rsplit(":", 1)[1]))
    for sock in (s1, s2):
        wait_for(lambda sock=sock: admin(sock).Status(adm.AgentStatusRequest(), timeout=2).connected, 30,
                 f"{sock.parent.name} to reconnect")

    # r1: the central history is its whole journal, in order, each event once.
    def r1_complete() -> bool:
        have, want = as_entries(central(addr2, "r1")), journal(s1)
        assert have == want[:len(have)], "the central history differs from r1's journal"
        return have == want

    wait_for(r1_complete, 30, "r1's central history to equal its journal")
    seqs = [s for s, _, _ in journal(s1)]
    assert seqs == list(range(1, len(seqs) + 1))
    messages = [msg for _, kind, msg in journal(s1) if kind == "agent"]
    assert sum(msg.startswith("started") for msg in messages) == 2
    assert sum("before the restart" in msg for _, _, msg in journal(s1)) == 25
    assert sum("after the restart" in msg for _, _, msg in journal(s1)) == 15

    # r2: what it still held arrives after one gap event naming what its journal lost.
    def r2_history() -> list[dict[str, Any]]:
        have = central(addr2, "r2")
        return have if as_entries(have)[-20:] == journal(s2) else []

    history = wait_for(r2_history, 30, "r2's kept journal in the central history")
    gaps = [e for e in history if e["kind"] == "gap"]
    assert len(gaps) == 1, gaps
    gap = gaps[0]
    lost = re.fullmatch(rf"events {stored_r2 + 1}\.\.(\d+) lost: the agent's journal keeps 20", gap["message"])
    assert lost is not None, gap
    last_lost = int(lost[1])
    assert int(gap["seq"]) == stored_r2 + 1 and gap["level"] == "warning" and last_lost >= kept_r2[0][0] - 1
    seqs = [int(e["seq"]) for e in history]
    assert seqs == [*range(1, stored_r2 + 2), *range(last_lost + 1, last_lost + 1 + len(seqs) - stored_r2 - 1)]
    still_held = [x for x in kept_r2 if x[0] > last_lost]
    assert as_entries(history)[stored_r2 + 1:][:len(still_held)] == still_held

    table = ctl("events", "--coordinator", addr2, "--site", "r2", "--kind", "gap").stdout.splitlines()
    assert table[0].split() == ["TIME", "SITE", "SEQ", "KIND", "MESSAGE"]
    assert len(table) == 2 and re.search(rf" r2 +{stored_r2 + 1} +gap +WARNING: events ", table[1]), table


# ---------------------------------------------------------------- the writer and the agent link, in process


async def test_writer_stores_each_seq_once_across_coordinators_and_records_gaps(etcd: str) -> None:
    store = await connected_store(etcd)
    try:
        a, b = ev.EventWriter(store), ev.EventWriter(store)  # two coordinators' writers
        assert await a.cursor("r1") == 0
        a.add("r1", [entry(s) for s in range(1, 6)], journal_limit=20)
        await a.flush()
        # b saw an old cursor (a reconnect raced a slow write): it learns a's and stores only 6..7.
        await b.cursor("r1")
        b.cursors["r1"] = ev._Cursor(0, 0)
        b.add("r1", [entry(s) for s in range(1, 8)])
        await b.flush()
        a.add("r1", [entry(s) for s in range(3, 8)])  # repeats: nothing new
        await a.flush()
        kvs, _ = await store.get_prefix(ev.site_prefix("r1"))
        assert [ev.SiteEvent.decode(kv).seq for kv in kvs] == list(range(1, 8))
        assert all(kv.create_revision == kv.mod_revision for kv in kvs), "a stored event was written again"
        assert await a.cursor("r1") == 7 and await b.cursor("r1") == 7

        # Entries the agent's journal no longer held: one gap event in their place, then the rest.
        a.add("r1", [entry(s) for s in range(12, 15)], journal_limit=20)
        await a.flush()
        events, _ = await ev.list_events(store, ev.EventFilter(site="r1"))
        assert [(e.seq, e.kind) for e in events][-4:] == [(8, "gap"), (12, "peering"), (13, "peering"),
                                                           (14, "peering")]
        assert events[-4].message == "events 8..11 lost: the agent's journal keeps 20"

        # Many at once: several transactions of at most WRITE_BATCH puts, in order.
        before = a.transactions
        a.add("r2", [entry(s) for s in range(1, 351)])
        await a.flush()
        assert a.transactions - before == 4
        events, _ = await ev.list_events(store, ev.EventFilter(site="r2"), limit=1000)
        assert [e.seq for e in events] == list(range(1, 351))
    finally:
        await store.close()


class InProcessAgent:
    """An agent's reconciler (fake driver), journal and link in this event loop."""

    def __init__(self, site: str, coordinator: str, state_dir: Path) -> None:
        self.journal = Journal(state_dir / "journal.jsonl", limit=100)
        self.driver = FakeDriver(DriverContext(site, state_dir / "fake", {}))
        self.reconciler = Reconciler(site, [self.driver], Overrides(state_dir / "overrides.json", site=site),
                                     self.journal, interval=1.0)
        self.link = CoordinatorLink(site, [coordinator], self.reconciler, StateFile(state_dir), "fake",
                                    heartbeat=1.0)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reconciler.note("agent", "started")
        self.task = asyncio.create_task(self.link.run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.driver.close()


async def test_an_agent_whose_journal_was_lost_numbers_on_after_the_stored_history(etcd: str, tmp_path: Path) -> None:
    opts = options(etcd, tmp_path / "coord")
    coordinator = Coordinator(opts)
    await coordinator.start()
    try:
        async with grpc.aio.insecure_channel(coordinator.address) as ch:
            stub = events_pb2_grpc.EventServiceStub(ch)

            async def stored() -> list[epb.Event]:
                return list((await stub.ListEvents(epb.ListEventsRequest(site="r9"))).events)

            agent = InProcessAgent("r9", coordinator.address, tmp_path / "r9")
            agent.start()
            for i in range(5):
                agent.reconciler.note("sync", f"copied image {i}")
            await await_for(lambda: agent.link.connected, 15, "the agent to connect")
            await await_for(lambda: stored_seq_is(stored, agent.journal.seq), 15, "its events to be stored")
            first = await stored()
            assert [e.seq for e in first] == list(range(1, len(first) + 1))
            await agent.stop()

            # The state directory is lost: a new journal starts at 1, below what is stored.
            (tmp_path / "r9" / "journal.jsonl").unlink()
            agent = InProcessAgent("r9", coordinator.address, tmp_path / "r9")
            agent.start()
            agent.reconciler.note("error", "neutron is unreachable")
            await await_for(lambda: has_message(stored, "neutron is unreachable"), 15, "the new journal to be stored")
            events = await stored()
            await agent.stop()
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), "no seq reused, none skipped"
        new = events[len(first):]
        assert [e.message for e in new][:2] == ["started", "neutron is unreachable"]
        assert new[1].level == "error" and new[0].seq == first[-1].seq + 1
        assert any(e.kind == "agent" and e.message.startswith(f"journal numbered on after seq {first[-1].seq}")
                   and e.level == "warning" for e in new)
        assert not [e for e in events if e.kind == "gap"]
    finally:
        await coordinator.stop(grace=0.5)


async def has_message(stored: Callable[[], Any], message: str) -> bool:
    return any(e.message == message for e in await stored())


async def stored_seq_is(stored: Callable[[], Any], seq: int) -> bool:
    events = await stored()
    return bool(events) and events[-1].seq >= seq


# ---------------------------------------------------------------- the API


async def _write(etcd: str, site_events: dict[str, list[m.JournalEntry]]) -> None:
    store = await connected_store(etcd)
    try:
        writer = ev.EventWriter(store)
        for site, entries in site_events.items():
            writer.add(site, entries, journal_limit=1000)
        await writer.flush()
    finally:
        await store.close()


async def test_list_events_filters_and_orders(etcd: str, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    await _write(etcd, {
        "r1": [entry(1, "link", "connected", time_ms=now - 3_600_000), entry(2, "peering", "new -> established",
                                                                              time_ms=now - 60_000, connection="x"),
               entry(3, "peering", "established -> error: down", "error", time_ms=now - 30_000, connection="x"),
               entry(4, "quota", "headroom low", "warning", time_ms=now - 10_000)],
        "r2": [entry(1, "link", "connected", time_ms=now - 50_000), entry(2, "override", "disabled", time_ms=now)],
    })
    opts = options(etcd, tmp_path / "coord")
    coordinator = Coordinator(opts)
    await coordinator.start()
    try:
        async with grpc.aio.insecure_channel(coordinator.address) as ch:
            stub = events_pb2_grpc.EventServiceStub(ch)

            async def listed(**kw: Any) -> list[tuple[str, int]]:
                return [(e.site, e.seq) for e in (await stub.ListEvents(epb.ListEventsRequest(**kw))).events]

            assert await listed() == [("r1", 1), ("r1", 2), ("r2", 1), ("r1", 3), ("r1", 4), ("r2", 2)]
            assert await listed(site="r1") == [("r1", 1), ("r1", 2), ("r1", 3), ("r1", 4)]
            assert await listed(since_unix_ms=now - 40_000) == [("r1", 3), ("r1", 4), ("r2", 2)]
            assert await listed(kind="link") == [("r1", 1), ("r2", 1)]
            assert await listed(level="warning") == [("r1", 3), ("r1", 4)]
            assert await listed(level="error", site="r1") == [("r1", 3)]
            assert await listed(limit=2) == [("r1", 4), ("r2", 2)]
            assert await listed(site="r3") == []
            one = (await stub.ListEvents(epb.ListEventsRequest(site="r1", kind="peering", level="error"))).events[0]
            assert (one.connection, one.message, one.level, one.time_unix_ms) == (
                "x", "established -> error: down", "error", now - 30_000)
            assert one.revision > 0
            for bad, field in ((dict(level="loud"), "level"), (dict(limit=10_001), "limit"),
                               (dict(site="Not_A_Site"), "site"), (dict(since_unix_ms=-1), "since_unix_ms")):
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await stub.ListEvents(epb.ListEventsRequest(**bad))
                assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert (exc.value.details() or "").startswith(field)
    finally:
        await coordinator.stop(grace=0.5)


async def test_watch_events_gives_history_then_live_events_without_gaps(etcd: str, tmp_path: Path) -> None:
    opts = options(etcd, tmp_path / "coord")
    coordinator = Coordinator(opts)
    await coordinator.start()
    store = await connected_store(etcd)
    writer = ev.EventWriter(store)
    total = 120

    async def produce() -> None:
        """One event at a time, so that the watch starts while events are being stored."""
        for seq in range(1, total + 1):
            writer.add("r1", [entry(seq, "sync", f"step {seq}")])
            await writer.flush()
            writer.add("r2", [entry(seq, "link", f"other site {seq}")])
            await asyncio.sleep(0.002)
        await writer.flush()

    producer = asyncio.create_task(produce())
    try:
        async with grpc.aio.insecure_channel(coordinator.address) as ch:
            stub = events_pb2_grpc.EventServiceStub(ch)
            await await_for(lambda: writer.cursors.get("r1", ev._Cursor(0, 0)).seq >= 30, 10, "some history")
            live_from_now = stub.WatchEvents(epb.WatchEventsRequest(site="r1"))
            call = stub.WatchEvents(epb.WatchEventsRequest(site="r1", since_unix_ms=1, kind="sync"))
            seen: list[int] = []

            async def follow() -> None:
                async for e in call:
                    assert e.site == "r1" and e.kind == "sync"
                    seen.append(e.seq)
                    if e.seq == total:
                        return

            await asyncio.wait_for(follow(), 20)
            assert seen == list(range(1, total + 1)), "history then live: every event once, in order"
            first_live = await asyncio.wait_for(live_from_now.read(), 10)
            assert first_live.seq > 1, "without since or limit the watch starts at now"
            live_from_now.cancel()
            # Resuming from a revision gives what was stored from there on, without history.
            resumed = stub.WatchEvents(epb.WatchEventsRequest(site="r1", start_revision=first_live.revision))
            assert (await asyncio.wait_for(resumed.read(), 10)).seq == first_live.seq
            resumed.cancel()
        await producer
    finally:
        producer.cancel()
        await store.close()
        await coordinator.stop(grace=0.5)


# ---------------------------------------------------------------- retention


async def test_retention_trims_by_age_and_by_count_and_runs_as_the_leader_job(etcd: str, tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    old = [entry(s, time_ms=now - 3 * 3_600_000 + s) for s in range(1, 31)]
    recent = [entry(s, time_ms=now - 1000 + s) for s in range(31, 61)]
    await _write(etcd, {"r1": old + recent, "r2": [entry(s, time_ms=now - 500 + s) for s in range(1, 51)]})
    store = await connected_store(etcd)
    try:
        assert await ev.trim_events(store, max_age_s=3600, max_per_site=40, now_ms=now) == 30 + 10
        r1, _ = await ev.list_events(store, ev.EventFilter(site="r1"))
        r2, _ = await ev.list_events(store, ev.EventFilter(site="r2"))
        assert [e.seq for e in r1] == list(range(31, 61)) and [e.seq for e in r2] == list(range(11, 51))
        assert await ev.trim_events(store, max_age_s=3600, max_per_site=40, now_ms=now) == 0

        # A trimmed seq is never stored again: the cursor remembers where the history ends.
        writer = ev.EventWriter(store)
        writer.add("r1", old + recent)
        await writer.flush()
        assert await store.count(ev.site_prefix("r1")) == 30

        # The leader applies --event-retention and --event-max-per-site.
        coordinator = Coordinator(options(etcd, tmp_path / "coord", event_retention_s=3600, event_max_per_site=5))
        await coordinator.start()
        try:
            await await_for(lambda: counts_are(store, {"r1": 5, "r2": 5}), 15, "the leader's trim")
        finally:
            await coordinator.stop(grace=0.5)
    finally:
        await store.close()


async def counts_are(store: Store, want: dict[str, int]) -> bool:
    have = {site: await store.count(ev.site_prefix(site)) for site in want}
    assert have == want, f"events per site: {have}"
    return True


def test_coordinator_options_for_retention() -> None:
    from isthmus.coordinator.main import parse_args

    opts = parse_args(["--event-retention", "2h", "--event-max-per-site", "500"])
    assert (opts.event_retention_s, opts.event_max_per_site) == (7200, 500)
    defaults = parse_args([])
    assert (defaults.event_retention_s, defaults.event_max_per_site) == (7 * 86400, 10_000)
    with pytest.raises(SystemExit):
        parse_args(["--event-retention", "a week"])


def test_since_takes_a_duration_ago_or_an_iso_time() -> None:
    from isthmus.ctl.events import since_ms

    assert since_ms("15m", now=10_000.0) == (10_000 - 900) * 1000
    assert since_ms("2024-05-01T12:00:00+00:00") == 1_714_564_800_000
    with pytest.raises(Exception, match="duration ago"):
        since_ms("yesterday")
