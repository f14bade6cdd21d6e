"""A site whose desired state is larger than one gRPC message (4 MiB): it reaches its agent in pieces, and
every status and list answer about it still fits.

- plain Python: splitting a Snapshot or Delta and putting it back together; what the agent refuses; the
  trimming of a status row; the Neutron side following a site's peering pages;
- the agent's link against a scripted coordinator: a stream cut between pieces changes nothing it holds;
- the agent channel with a gRPC test client against a real coordinator and etcd: an agent that does not
  announce pieces gets each Snapshot and Delta whole, one that does gets them in pieces, also when it
  resumes from its revision;
- the status and list answers of a site with several MiB of desired state, paged and trimmed;
- real processes: a coordinator, an agent with the fake driver and isthmusctl, several MiB of desired
  state delivered, changed while connected, and changed while the agent was cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from test_faults import Proxy

from conftest import Proc, agent_cmd, await_for, coordinator_cmd, ctl, running_coordinator, wait_for
from isthmus.coordinator import answers
from isthmus.coordinator import registry as r
from isthmus.coordinator.store import Put
from isthmus.core import model as m
from isthmus.core.wire import network as wire
from isthmus.core.wire import pieces
from isthmus.neutron_plugin import infra_forms as forms
from isthmus.v1 import agent_pb2 as apb
from isthmus.v1 import agent_pb2_grpc, api_pb2_grpc
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import types_pb2 as pb

needs_etcd = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (Debian package etcd-server)")
MiB = 1024 * 1024


def props(tag: str, kib: int) -> dict[str, str]:
    """About ``kib`` KiB of endpoint properties, within today's rules (values of at most 1024 characters)."""
    return {f"{tag}.p{i:04d}": f"{tag}-{i}-".ljust(1000, "x") for i in range(kib)}


def peering_pb(name: str, kib: int) -> pb.DesiredPeering:
    return pb.DesiredPeering(
        connection=name, type=pb.CONNECTION_TYPE_BGP, admin_state=pb.ADMIN_STATE_UP,
        local=pb.Endpoint(site="big", name="gw", address="192.0.2.1", asn=65001, properties=props("l", kib)),
        remote=pb.Endpoint(site="dc", name=name, address="198.51.100.1", asn=64512, properties=props("r", kib)))


# ---------------------------------------------------------------- plain Python


def test_a_large_snapshot_splits_into_pieces_that_put_back_together_make_it_whole() -> None:
    whole = apb.CoordinatorMessage(snapshot=apb.Snapshot(revision=42, peerings=[
        peering_pb(f"c{i:03d}", 20) for i in range(120)]))
    assert whole.ByteSize() > pieces.MESSAGE_LIMIT  # ~4.7 MiB: one message could not carry it
    parts = pieces.split(whole)
    assert len(parts) == 5
    assert all(p.ByteSize() <= pieces.PIECE_BYTES for p in parts)
    assert [p.snapshot.more for p in parts] == [True, True, True, True, False]
    assert {p.snapshot.revision for p in parts} == {42}
    assembler = pieces.Assembler()
    assert [assembler.add(p) for p in parts[:-1]] == [None] * 4
    assert assembler.add(parts[-1]) == whole  # every peering, in order, `more` cleared

    # Small messages, and any other kind, go whole; a whole message passes the assembler as it is.
    small = apb.CoordinatorMessage(snapshot=apb.Snapshot(revision=43, peerings=[peering_pb("one", 1)]))
    events = apb.CoordinatorMessage(events_from=apb.EventsFrom(seq=7))
    assert pieces.split(small) == [small] and pieces.split(events) == [events]
    assert assembler.add(small) is small and assembler.add(events) is events

    # One peering over the piece size goes alone, never split: it always fits one message.
    huge = apb.CoordinatorMessage(snapshot=apb.Snapshot(revision=44, peerings=[
        peering_pb("a", 10), peering_pb("huge", 700), peering_pb("b", 10)]))
    parts = pieces.split(huge)
    assert [[p.connection for p in part.snapshot.peerings] for part in parts] == [["a"], ["huge"], ["b"]]
    assert parts[1].ByteSize() < pieces.MESSAGE_LIMIT


def test_a_large_delta_splits_with_its_removes_and_keeps_its_base() -> None:
    removes = [f"gone-{i:05d}-".ljust(60, "z") for i in range(30_000)]  # ~1.9 MiB of names alone
    whole = apb.CoordinatorMessage(delta=apb.Delta(revision=9, base_revision=5, removes=removes,
                                                   upserts=[peering_pb(f"c{i:03d}", 20) for i in range(60)]))
    parts = pieces.split(whole)
    assert len(parts) >= 4 and all(p.ByteSize() <= pieces.PIECE_BYTES for p in parts)
    assert {(p.delta.revision, p.delta.base_revision) for p in parts} == {(9, 5)}
    assert [p.delta.more for p in parts] == [True] * (len(parts) - 1) + [False]
    assembler = pieces.Assembler()
    got = [assembler.add(p) for p in parts]
    assert got[:-1] == [None] * (len(parts) - 1) and got[-1] == whole


def test_the_agent_refuses_pieces_that_do_not_make_one_message() -> None:
    parts = pieces.split(apb.CoordinatorMessage(snapshot=apb.Snapshot(revision=3, peerings=[
        peering_pb(f"c{i}", 20) for i in range(60)])))
    assert len(parts) >= 2

    def feed(*msgs: apb.CoordinatorMessage) -> None:
        assembler = pieces.Assembler()
        for msg in msgs:
            assembler.add(msg)

    other_rev = apb.CoordinatorMessage()
    other_rev.CopyFrom(parts[1])
    other_rev.snapshot.revision = 4
    with pytest.raises(pieces.PieceError, match="rev 4"):
        feed(parts[0], other_rev)
    with pytest.raises(pieces.PieceError, match="events_from came between the pieces of a snapshot"):
        feed(parts[0], apb.CoordinatorMessage(events_from=apb.EventsFrom(seq=1)))
    with pytest.raises(pieces.PieceError, match="delta came between"):
        feed(parts[0], apb.CoordinatorMessage(delta=apb.Delta(revision=3, base_revision=2)))


def test_a_status_row_too_large_is_trimmed_and_says_so() -> None:
    small = api.PeeringStatus(desired=peering_pb("small", 8))
    assert answers.trim_row(small) is small and not small.trimmed
    big = api.PeeringStatus(
        desired=peering_pb("big", 200),
        observed=pb.ObservedPeering(connection="big", state=pb.PEERING_STATE_ERROR, error="e" * 100_000,
                                    received_prefixes=[f"10.{i // 256}.{i % 256}.0/24" for i in range(20_000)]))
    assert big.ByteSize() > answers.ROW_BYTES
    row = answers.trim_row(big)
    assert row.trimmed and row.ByteSize() <= answers.ROW_BYTES
    assert not row.desired.local.properties and not row.desired.remote.properties
    assert row.desired.local.address == "192.0.2.1" and row.desired.remote.asn == 64512
    assert row.observed.state == pb.PEERING_STATE_ERROR and len(row.observed.error) <= answers.TEXT_CHARS
    assert 0 < len(row.observed.received_prefixes) < 20_000
    # Only names and states stay of a row that trimming cannot bring down.
    absurd = api.PeeringStatus(observed=pb.ObservedPeering(connection="x", driver="d" * 1_000_000,
                                                           state=pb.PEERING_STATE_DOWN))
    row = answers.trim_row(absurd)
    assert row.trimmed and row.observed.state == pb.PEERING_STATE_DOWN and row.ByteSize() < 4096


def test_the_neutron_side_reads_every_page_of_a_sites_peerings() -> None:
    pages = {"t1": {"peerings": [{"n": 2}], "overrides": [{"o": 2}], "next_page_token": "t2"},
             "t2": {"peerings": [{"n": 3}]}}
    asked: list[str] = []

    def next_page(token: str) -> dict[str, Any]:
        asked.append(token)
        return pages[token]

    status = forms.with_all_rows({"site": "s", "peerings": [{"n": 1}], "next_page_token": "t1"}, next_page)
    assert asked == ["t1", "t2"]
    assert status == {"site": "s", "peerings": [{"n": 1}, {"n": 2}, {"n": 3}], "overrides": [{"o": 2}]}


class ScriptedCoordinator(agent_pb2_grpc.AgentServiceServicer):
    """Answers each Connect with the messages of ``script``; None there ends the stream with UNAVAILABLE. After
    the whole script, it waits for the agent's first Ack and then ends the stream with UNAVAILABLE too."""

    def __init__(self) -> None:
        self.script: list[apb.CoordinatorMessage | None] = []
        self.hellos: list[apb.Hello] = []
        self.acks: list[int] = []

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        first = await request_iterator.__anext__()
        self.hellos.append(first.hello)
        for msg in self.script:
            if msg is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "cut between pieces")
            yield msg
        async for report in request_iterator:
            if report.HasField("ack"):
                self.acks.append(report.ack.revision)
                break
        await context.abort(grpc.StatusCode.UNAVAILABLE, "done")


async def test_a_stream_that_breaks_between_pieces_changes_nothing_at_the_agent(tmp_path: Path) -> None:
    from isthmus.agent.journal import Journal
    from isthmus.agent.link import CoordinatorLink, LinkClosed
    from isthmus.agent.overrides import Overrides
    from isthmus.agent.reconciler import Reconciler
    from isthmus.agent.state import DesiredState, StateFile
    from isthmus.drivers.base import DriverContext
    from isthmus.drivers.fake import FakeDriver

    coordinator = ScriptedCoordinator()
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(coordinator, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        reconciler = Reconciler("big", [FakeDriver(DriverContext("big", tmp_path / "fake"))],
                                Overrides(tmp_path / "overrides.json", "big"), Journal(tmp_path / "journal.jsonl"))
        state_file = StateFile(tmp_path / "state")
        held = {f"c{i:03d}": wire.peering_from_pb(peering_pb(f"c{i:03d}", 1)) for i in range(3)}
        state_file.save(DesiredState("big", 5, held))
        reconciler.set_desired(state_file.load("big"))
        link = CoordinatorLink("big", [address], reconciler, state_file, "fake", heartbeat=60)
        before = state_file.path.read_bytes()

        snapshot = pieces.split(apb.CoordinatorMessage(snapshot=apb.Snapshot(revision=9, peerings=[
            peering_pb(f"c{i:03d}", 20) for i in range(100)])))
        delta = pieces.split(apb.CoordinatorMessage(delta=apb.Delta(
            revision=9, base_revision=5, removes=["c000"],
            upserts=[peering_pb(f"c{i:03d}", 20) for i in range(1, 100)])))
        assert len(snapshot) == 4 and len(delta) == 4
        # Cut after some pieces of a snapshot, then of a delta: the agent holds what it held.
        for script in (snapshot[:3], delta[:1]):
            coordinator.script = [*script, None]
            with pytest.raises((LinkClosed, grpc.aio.AioRpcError), match="cut between pieces"):
                await link._session(address)
            assert not link._synced
            assert reconciler.desired.revision == 5 and reconciler.desired.peerings == held
            assert state_file.path.read_bytes() == before
        assert [h.pieces for h in coordinator.hellos] == [True, True]
        assert {(h.desired_revision, h.desired_digest) for h in coordinator.hellos} == {(5, m.peerings_digest(held))}

        # Every piece: the whole is taken, persisted, and the stream counts as synced.
        coordinator.script = [*delta, apb.CoordinatorMessage(events_from=apb.EventsFrom(seq=0))]
        with pytest.raises((LinkClosed, grpc.aio.AioRpcError)):
            await link._session(address)
        assert link._synced and coordinator.acks
        assert reconciler.desired.revision == 9 and sorted(reconciler.desired.peerings) == [
            f"c{i:03d}" for i in range(1, 100)]
        assert state_file.load("big") == reconciler.desired
    finally:
        await server.stop(0)


# ---------------------------------------------------------------- a site with several MiB of desired state


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.sites = api_pb2_grpc.SiteServiceStub(channel)
        self.endpoints = api_pb2_grpc.EndpointServiceStub(channel)
        self.connections = api_pb2_grpc.ConnectionServiceStub(channel)
        self.status = api_pb2_grpc.StatusServiceStub(channel)


async def seed_big(c: Client, n: int, kib: int) -> None:
    """Site ``big`` (a region) with endpoint gw, and ``n`` connections to the remote endpoints p000... of the
    external site ``dc``; every endpoint with ``kib`` KiB of properties: ~2 * kib KiB of desired state per
    connection at big."""
    await c.sites.CreateSite(pb.Site(name="big", kind=pb.SITE_KIND_REGION))
    await c.sites.CreateSite(pb.Site(name="dc", kind=pb.SITE_KIND_EXTERNAL))
    await c.endpoints.CreateEndpoint(pb.Endpoint(site="big", name="gw", address="192.0.2.1", asn=65001,
                                                 properties=props("gw", kib)))
    await asyncio.gather(*(c.endpoints.CreateEndpoint(pb.Endpoint(
        site="dc", name=f"p{i:03d}", address=f"198.51.{100 + i // 250}.{i % 250 + 1}", asn=64512 + i,
        role=pb.ENDPOINT_ROLE_REMOTE, properties=props(f"p{i:03d}", kib))) for i in range(n)))
    await asyncio.gather(*(c.connections.CreateConnection(pb.Connection(
        name=f"big-p{i:03d}", type=pb.CONNECTION_TYPE_BGP, a=pb.EndpointRef(site="big", name="gw"),
        b=pb.EndpointRef(site="dc", name=f"p{i:03d}"))) for i in range(n)))


async def set_gw_properties(c: Client, tag: str, kib: int) -> None:
    gw = await c.endpoints.GetEndpoint(api.GetEndpointRequest(site="big", name="gw"))
    gw.properties.clear()
    gw.properties.update(props(tag, kib))
    await c.endpoints.UpdateEndpoint(gw)


class HandAgent:
    """An agent's side of AgentService.Connect, by hand: Hello, then whatever the coordinator sends."""

    def __init__(self, channel: grpc.aio.Channel, hello: apb.Hello) -> None:
        self.outbox: asyncio.Queue[apb.AgentMessage] = asyncio.Queue()
        self.outbox.put_nowait(apb.AgentMessage(hello=hello))
        self.call = agent_pb2_grpc.AgentServiceStub(channel).Connect(self._requests())

    async def _requests(self) -> AsyncIterator[apb.AgentMessage]:
        while True:
            yield await self.outbox.get()

    async def read(self) -> apb.CoordinatorMessage:
        msg = await asyncio.wait_for(self.call.read(), 15)
        assert msg is not grpc.aio.EOF, f"stream ended: {await self.call.code()} {await self.call.details()}"
        return msg  # type: ignore[no-any-return]

    async def read_whole(self) -> list[apb.CoordinatorMessage]:
        """The messages of one Snapshot or Delta: one, or its pieces up to the one without ``more``."""
        got = [await self.read()]
        kind = got[0].WhichOneof("msg")
        assert kind in ("snapshot", "delta"), got[0]
        while getattr(got[-1], kind).more:
            got.append(await self.read())
            assert got[-1].WhichOneof("msg") == kind
        return got

    def close(self) -> None:
        self.call.cancel()


def hello(takes_pieces: bool, held: apb.CoordinatorMessage | None = None,
          peerings: dict[str, m.DesiredPeering] | None = None) -> apb.Hello:
    h = apb.Hello(site="big", agent_version="test", instance_id="test-agent", driver="fake", pieces=takes_pieces)
    if held is not None and peerings is not None:
        kind = held.WhichOneof("msg")
        h.desired_revision = getattr(held, kind).revision
        h.desired_digest = m.peerings_digest(peerings)
    return h


def joined(parts: list[apb.CoordinatorMessage]) -> apb.CoordinatorMessage:
    assembler = pieces.Assembler()
    out = [assembler.add(p) for p in parts]
    assert out[:-1] == [None] * (len(parts) - 1) and out[-1] is not None
    return out[-1]


def applied(peerings: dict[str, m.DesiredPeering], msg: apb.CoordinatorMessage) -> dict[str, m.DesiredPeering]:
    if msg.HasField("snapshot"):
        return {p.connection: wire.peering_from_pb(p) for p in msg.snapshot.peerings}
    out = {k: v for k, v in peerings.items() if k not in set(msg.delta.removes)}
    out.update({p.connection: wire.peering_from_pb(p) for p in msg.delta.upserts})
    return out


@needs_etcd
async def test_only_an_agent_that_announces_pieces_gets_them(etcd: str, tmp_path: Path) -> None:
    async with running_coordinator(etcd, tmp_path) as coord, grpc.aio.insecure_channel(coord.address) as ch:
        c = Client(ch)
        await seed_big(c, n=183, kib=7)  # ~2.6 MiB: over the piece size, under the message limit
        planner = coord.planner
        assert planner is not None
        await await_for(lambda: len(planner.desired("big")[0]) == 183, 10, "the coordinator to plan big")

        # An agent that does not announce pieces: one whole Snapshot, as before pieces existed.
        old = HandAgent(ch, hello(False))
        got = await old.read_whole()
        assert len(got) == 1 and not got[0].snapshot.more
        whole = got[0]
        assert len(whole.snapshot.peerings) == 183 and whole.ByteSize() > 2 * pieces.PIECE_BYTES
        assert (await old.read()).HasField("events_from")
        old.close()

        # One that does: the same Snapshot in pieces, each under the piece size, then EventsFrom.
        new = HandAgent(ch, hello(True))
        parts = await new.read_whole()
        assert len(parts) == 3 and all(p.ByteSize() <= pieces.PIECE_BYTES for p in parts)
        assert joined(parts) == whole
        assert (await new.read()).HasField("events_from")
        held = applied({}, whole)

        # A change of every peering while connected: a Delta in pieces from the snapshot's revision.
        await set_gw_properties(c, "v2", 7)
        parts = await new.read_whole()
        assert len(parts) == 3
        delta = joined(parts)
        assert delta.delta.base_revision == whole.snapshot.revision < delta.delta.revision
        assert len(delta.delta.upserts) == 183 and not delta.delta.removes
        held = applied(held, delta)
        assert all(p.local.properties == props("v2", 7) for p in held.values())
        new.close()

        # Changed while the agent was away: resuming from its revision and digest gives a Delta, in pieces
        # to an agent that takes them, whole to one that does not.
        await set_gw_properties(c, "v3", 7)
        await await_for(lambda: planner.desired("big")[0]["big-p000"].local.properties == props("v3", 7), 10,
                        "the coordinator to see the change")
        for takes_pieces, count in ((True, 3), (False, 1)):
            again = HandAgent(ch, hello(takes_pieces, delta, held))
            parts = await again.read_whole()
            assert len(parts) == count, [p.ByteSize() for p in parts]
            resumed = joined(parts)
            assert resumed.HasField("delta") and resumed.delta.base_revision == delta.delta.revision
            assert all(p.local.properties == props("v3", 7) for p in applied(held, resumed).values())
            again.close()


def follow_rows(first: api.SiteStatus, get: Callable[[str], api.SiteStatus]) -> list[api.PeeringStatus]:
    rows = list(first.peerings)
    st = first
    while st.next_page_token:
        st = get(st.next_page_token)
        assert st.ByteSize() < 2 * MiB
        rows += st.peerings
    return rows


@needs_etcd
async def test_status_and_list_answers_of_a_very_large_site_fit(etcd: str, tmp_path: Path) -> None:
    async with running_coordinator(etcd, tmp_path) as coord, grpc.aio.insecure_channel(coord.address) as ch:
        c = Client(ch)
        await seed_big(c, n=411, kib=7)  # ~5.8 MiB of desired state at big
        await c.sites.CreateSite(pb.Site(name="small", kind=pb.SITE_KIND_REGION))
        # alpha: 55 connections of ~14 KiB, most of a page, listed before big.
        await c.sites.CreateSite(pb.Site(name="alpha", kind=pb.SITE_KIND_REGION))
        await c.endpoints.CreateEndpoint(pb.Endpoint(site="alpha", name="gw", address="192.0.2.2", asn=65002,
                                                     properties=props("alpha", 7)))
        await asyncio.gather(*(c.connections.CreateConnection(pb.Connection(
            name=f"alpha-p{i:03d}", type=pb.CONNECTION_TYPE_BGP, a=pb.EndpointRef(site="alpha", name="gw"),
            b=pb.EndpointRef(site="dc", name=f"p{i:03d}"))) for i in range(55)))
        # One peering's remote end with 300 KiB of properties, as data written before the input budgets could be
        # (the API refuses it now, so it goes into etcd directly): its status row is trimmed.
        fat = await c.endpoints.GetEndpoint(api.GetEndpointRequest(site="dc", name="p007"))
        stored = wire.endpoint_from_pb(fat)
        stored = dataclasses.replace(stored, properties={**stored.properties, **props("fat", 300)}, version=0)
        await coord.store.txn([], [Put(r.endpoint_key("dc", "p007"), r.encode(stored))])
        planner = coord.planner
        assert planner is not None
        await await_for(lambda: len(planner.desired("big")[0]["big-p007"].remote.properties) == 307, 30,
                        "the coordinator to see the new properties")

        first = await c.status.GetSiteStatus(api.GetSiteStatusRequest(site="big"))
        assert first.ByteSize() < 2 * MiB and first.next_page_token
        pages = [first]
        while pages[-1].next_page_token:
            pages.append(await c.status.GetSiteStatus(api.GetSiteStatusRequest(
                site="big", page_token=pages[-1].next_page_token)))
        assert all(p.ByteSize() < 2 * MiB for p in pages) and len(pages) >= 5
        assert sum(p.ByteSize() for p in pages) > pieces.MESSAGE_LIMIT  # one answer could not have held it
        rows = [r for p in pages for r in p.peerings]
        assert [r.desired.connection for r in rows] == [f"big-p{i:03d}" for i in range(411)]
        trimmed = {r.desired.connection for r in rows if r.trimmed}
        assert trimmed == {"big-p007"}
        row = next(r for r in rows if r.desired.connection == "big-p007")
        assert not row.desired.remote.properties and row.desired.remote.address == fat.address
        assert rows[0].desired.local.properties == props("gw", 7)  # a row that fits keeps everything
        # GetEndpoint has what a trimmed row leaves out.
        assert len((await c.endpoints.GetEndpoint(api.GetEndpointRequest(site="dc", name="p007"))).properties) == 307

        bad = await asyncio.gather(c.status.GetSiteStatus(api.GetSiteStatusRequest(site="big", page_token="%%")),
                                   return_exceptions=True)
        assert isinstance(bad[0], grpc.aio.AioRpcError) and bad[0].code() == grpc.StatusCode.INVALID_ARGUMENT

        # ListSiteStatus: big does not fit after alpha, so it starts the next page, where it passes the page
        # alone: it shows its first rows and names the next. dc and small fit after it.
        await await_for(lambda: len(planner.desired("alpha")[0]) == 55, 10, "alpha's peerings")
        listed = await c.status.ListSiteStatus(api.ListSiteStatusRequest())
        assert listed.ByteSize() < 2 * MiB
        assert [(s.site, bool(s.next_page_token), len(s.peerings)) for s in listed.sites] == [("alpha", False, 55)]
        rest = await c.status.ListSiteStatus(api.ListSiteStatusRequest(page_token=listed.next_page_token))
        assert rest.ByteSize() < 2 * MiB
        assert [(s.site, bool(s.next_page_token)) for s in rest.sites] == [("big", True), ("dc", False),
                                                                          ("small", False)]
        assert not rest.next_page_token
        assert rest.sites[0].peerings == pages[0].peerings

        # Lists of large objects are paged by size too: 411 endpoints of 7 KiB and one of 307 KiB.
        eps: list[pb.Endpoint] = []
        token, answers_seen = "", 0
        while True:
            page = await c.endpoints.ListEndpoints(api.ListEndpointsRequest(site="dc", page_token=token))
            assert page.ByteSize() < 2 * MiB
            eps += page.endpoints
            answers_seen += 1
            token = page.next_page_token
            if not token:
                break
        assert answers_seen >= 3 and [e.name for e in eps] == [f"p{i:03d}" for i in range(411)]
        conns = await c.connections.ListConnections(api.ListConnectionsRequest(site="big"))
        assert len(conns.connections) == 411 and not conns.next_page_token  # small objects: one page

        # The status events of Watch carry the first page too.
        watch = c.status.Watch(api.WatchRequest(kinds=["status"], site="big"))
        agent = HandAgent(ch, hello(True))
        await agent.read_whole()

        async def status_event() -> api.WatchEvent:
            async for ev in watch:
                return ev  # type: ignore[no-any-return]
            raise AssertionError("the watch ended")

        ev = await asyncio.wait_for(status_event(), 15)
        assert ev.status.site == "big" and ev.status.connected and ev.status.next_page_token
        assert ev.ByteSize() < 2 * MiB
        watch.cancel()
        agent.close()


# ---------------------------------------------------------------- real processes


class LinkProxy(Proxy):
    """test_faults' proxy, whose cut also wakes the thread blocked in accept(): on Linux, closing a listening
    socket that another thread waits on leaves it accepting one more connection."""

    def cut(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
        super().cut()


def ctl_ok(*args: str) -> str:
    """isthmusctl's output; an AssertionError (which wait_for retries) if it fails."""
    res = ctl(*args, check=False)
    if res.returncode != 0:
        raise AssertionError(f"isthmusctl {' '.join(args)}: {res.stderr}")
    return res.stdout


def coordinator_log_lines(path: Path, pattern: str) -> list[str]:
    return [line for line in path.read_text().splitlines() if re.search(pattern, line)]


@needs_etcd
def test_agent_process_takes_several_mib_in_pieces_and_status_answers(etcd: str, tmp_path: Path,
                                                                      procs: Callable[..., Proc]) -> None:
    ready = tmp_path / "addr"
    coord_log = tmp_path / "coord.log"
    procs("coordinator", coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd) + ["--write-rate", "0"],
          coord_log)
    addr = str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator"))
    n = 366

    async def seed() -> None:
        async with grpc.aio.insecure_channel(addr) as ch:
            await seed_big(Client(ch), n=n, kib=7)  # ~5.2 MiB of desired state at big

    asyncio.run(seed())
    names = {f"big-p{i:03d}" for i in range(n)}
    proxy = LinkProxy(addr)  # the agent's link, to cut later
    try:
        run_big_site(addr, proxy, tmp_path, procs, coord_log, n, names)
    finally:
        proxy.cut()


def run_big_site(addr: str, proxy: Proxy, tmp_path: Path, procs: Callable[..., Proc], coord_log: Path, n: int,
                 names: set[str]) -> None:
    sock = tmp_path / "big" / "admin.sock"
    state = tmp_path / "big" / "state"
    c = ("--coordinator", addr)
    local = ("local", "--socket", str(sock), "-o", "json")

    def established_locally() -> bool:
        rows = json.loads(ctl_ok(*local, "peerings"))
        states = {r["desired"]["connection"]: r.get("observed", {}).get("state") for r in rows}
        if set(states) != names or set(states.values()) != {"PEERING_STATE_ESTABLISHED"}:
            raise AssertionError(f"{len(states)} peerings, states {set(states.values())}")
        return True

    # Status answers before the agent connects, and says the coordinator planned every peering.
    wait_for(lambda: len(json.loads(ctl_ok(*c, "status", "big", "-o", "json"))["peerings"]) == n, 20,
             "the coordinator to plan every peering of big")
    started = time.monotonic()
    procs("agent-big", agent_cmd("big", proxy.address, tmp_path), tmp_path / "agent-big.log")
    wait_for(established_locally, 40, "every peering of big applied and ESTABLISHED at its agent")
    delivered = time.monotonic() - started
    print(f"\n{n} peerings, {n * 14} KiB of desired state: applied {delivered:.1f}s after the agent started")
    snapshot_lines = coordinator_log_lines(coord_log, r"site big: snapshot of rev \d+ is \d+ bytes: sent in \d+ pieces")
    assert snapshot_lines, coord_log.read_text()[-3000:]
    size, count = map(int, re.findall(r"is (\d+) bytes: sent in (\d+) pieces", snapshot_lines[-1])[0])
    least = -(-size // pieces.PIECE_BYTES)  # pieces of at most 1 MiB, filled but for the last
    assert size > pieces.MESSAGE_LIMIT and least <= count <= least + 1, (size, count)
    rows = json.loads(ctl(*local, "peerings").stdout)
    assert rows[0]["desired"]["local"]["properties"] == props("gw", 7)

    # isthmusctl status answers, for every site and for big with a row per peering.
    def status_caught_up() -> bool:
        table = ctl_ok(*c, "status")
        row = next(line.split() for line in table.splitlines() if line.startswith("big "))
        if row[1] != "connected" or row[3] != row[2] or row[4] != f"{n}/{n}":
            raise AssertionError(table)
        return True

    wait_for(status_caught_up, 20, "isthmusctl status to show big connected, caught up, 80/80")
    detail = ctl(*c, "status", "big").stdout
    assert sum(1 for line in detail.splitlines() if line.startswith("big-p")) == n
    as_json = json.loads(ctl(*c, "status", "big", "-o", "json").stdout)
    assert len(as_json["peerings"]) == n and "next_page_token" not in as_json
    ctl(*c, "status", "--wait-established", "--wait-timeout", "20")

    # Every peering changes while the agent is connected: a delta in pieces, applied whole.
    ops = tmp_path / "big" / "state" / "fake" / "operations.jsonl"
    mark = len(ops.read_text().splitlines())
    gw = json.loads(ctl(*c, "endpoint", "get", "big/gw", "-o", "json").stdout)
    ctl(*c, "endpoint", "update", "big/gw", "--property", f"gw.p0000={'v2'.ljust(1000, 'y')}",
        "--version", gw["version"])
    wait_for(lambda: len(ops.read_text().splitlines()) - mark == n, 20, "an update of every peering at big")
    wait_for(lambda: coordinator_log_lines(coord_log, r"site big: delta of rev \d+ is \d+ bytes: sent in \d+ pieces"),
             10, "the delta to be sent in pieces")

    # The agent is cut off while every peering changes again: it resumes from its revision with a delta, in
    # pieces, applied whole: one update per peering, nothing removed or created.
    proxy.cut()
    wait_for(lambda: json.loads(ctl_ok(*local, "status")).get("partitioned"), 20, "big to be cut off")
    gw = json.loads(ctl(*c, "endpoint", "get", "big/gw", "-o", "json").stdout)
    ctl(*c, "endpoint", "update", "big/gw", "--property", f"gw.p0001={'v3'.ljust(1000, 'y')}",
        "--version", gw["version"])
    mark = len(ops.read_text().splitlines())
    proxy.heal()
    wait_for(lambda: len(ops.read_text().splitlines()) - mark >= n, 30, "the resumed agent to update every peering")
    after = [json.loads(line) for line in ops.read_text().splitlines()[mark:]]
    assert sorted((o["op"], o["connection"]) for o in after) == sorted(("update", name) for name in names)
    assert coordinator_log_lines(coord_log, r"site big: resuming from rev")
    assert len(coordinator_log_lines(coord_log, r"site big: delta of rev \d+ is \d+ bytes: sent in \d+ pieces")) == 2
    wait_for(established_locally, 20, "every peering ESTABLISHED again")
    wait_for(status_caught_up, 20, "isthmusctl status to show big caught up again")
    assert json.loads((state / "desired.json").read_text())["revision"] == \
        int(json.loads(ctl(*local, "status").stdout)["desired_revision"])
