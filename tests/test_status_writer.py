"""The agents' status write-back against a real etcd: paced by size, compressed, the last change never lost.

A site whose observed peerings change with every delta (a mesh being built) used to have its whole record,
journal included, written twice per change; etcd's database grew by tens of kB per connection. Now the record is
written at most at a bounded rate per site, compressed, without the journal, and copied to last-status/{site}
at most every LAST_REPORT_EVERY seconds: whatever the pacing skips, the newest record still lands.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import grpc
import grpc.aio
import pytest

from conftest import await_for
from isthmus.coordinator import agents
from isthmus.coordinator import registry as r
from isthmus.coordinator.agents import AgentService, AgentSession, AgentStatusRecord, LeaseKeeper, StatusWriter
from isthmus.coordinator.store import Store
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument
from isthmus.v1 import agent_pb2 as apb
from isthmus.v1 import agent_pb2_grpc
from isthmus.v1 import types_pb2 as tpb


def observed(n: int, state: m.PeeringState = m.PeeringState.ESTABLISHED) -> list[m.ObservedPeering]:
    return [m.ObservedPeering(f"s{i:03d}--hub", state, since_ms=1_700_000_000_000 + i, driver="fake")
            for i in range(n)]


async def test_a_busy_site_is_written_paced_and_compressed_and_its_last_change_lands(etcd: str) -> None:
    store = Store([etcd])
    await store.connect()
    try:
        service = cast(AgentService, SimpleNamespace(advertise="127.0.0.1:1", store=store, lease_ttl=10,
                                                     lease_keeper=LeaseKeeper(store, 10)))
        session = AgentSession(service, apb.Hello(site="hub", instance_id="i1", agent_version="t"), "peer")
        await session.claim()
        writer = StatusWriter(store)
        session.record.observed = observed(200)
        # 40 changes over about a second, as an agent applying one delta after another reports them.
        t0 = time.monotonic()
        for rev in range(1, 41):
            session.record.applied_revision = rev
            writer.mark(session)
            await asyncio.sleep(0.025)
        changing_for = time.monotonic() - t0

        async def written() -> AgentStatusRecord | None:
            kv = await store.get(r.status_key("hub"))
            record = AgentStatusRecord.decode(kv.value) if kv else None
            return record if record is not None and record.applied_revision == 40 else None

        record = await await_for(written, 10, "the last change to be written")
        assert isinstance(record, AgentStatusRecord) and record.observed == session.record.observed
        kv = await store.get(r.status_key("hub"))
        assert kv is not None and kv.lease == session.lease
        plain = json.dumps(m.to_json(session.record), sort_keys=True, separators=(",", ":")).encode()
        assert not kv.value.startswith(b"{") and len(kv.value) < len(plain) / 4, (len(kv.value), len(plain))
        # Paced by the compressed size: far fewer writes than changes (one at first, then one per interval).
        interval = (len(kv.value) - agents.STATUS_FREE_BYTES) / agents.STATUS_BYTES_PER_SECOND
        assert interval > 0
        assert writer.transactions <= changing_for / interval + 3 < 40, (writer.transactions, interval)
        # The copy kept after the session: written with the first write, not with every one.
        last = await store.get(r.last_status_key("hub"))
        assert last is not None and last.lease == 0 and last.mod_revision < kv.mod_revision
        assert AgentStatusRecord.decode(last.value).observed == session.record.observed
        session.closed = True
        await session.release()
        last = await store.get(r.last_status_key("hub"))
        assert last is not None and AgentStatusRecord.decode(last.value).applied_revision == 40
    finally:
        await store.close()


def test_a_small_record_is_plain_json_and_an_old_record_with_a_journal_still_reads() -> None:
    small = AgentStatusRecord("r1", "i1", "0.1", "h", "fake", "c:1", 1, observed=observed(1))
    assert small.encode().startswith(b"{") and AgentStatusRecord.decode(small.encode()) == small
    old = m.to_json(small) | {"journal": [{"seq": 1, "time_unix_ms": 5, "kind": "agent", "message": "up"}]}
    assert AgentStatusRecord.decode(json.dumps(old).encode()) == small


async def test_a_peering_that_goes_down_is_written_at_once_whatever_the_pacing(
        etcd: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flap must show centrally: a peering leaving ESTABLISHED is written without waiting for the pacing (held
    at a minute here, so that only that rule can write it within the deadline); one coming up waits its turn."""
    monkeypatch.setattr(agents, "STATUS_MAX_INTERVAL", 60.0)
    monkeypatch.setattr(agents, "STATUS_BYTES_PER_SECOND", 1)
    store = Store([etcd])
    await store.connect()
    try:
        service = cast(AgentService, SimpleNamespace(advertise="127.0.0.1:1", store=store, lease_ttl=10,
                                                     lease_keeper=LeaseKeeper(store, 10)))
        session = AgentSession(service, apb.Hello(site="edge", instance_id="i1", agent_version="t"), "peer")
        await session.claim()
        writer = StatusWriter(store)

        async def shown() -> list[m.PeeringState]:
            kv = await store.get(r.status_key("edge"))
            record = AgentStatusRecord.decode(kv.value) if kv else None
            return [p.state for p in record.observed] if record is not None else []

        async def shows(states: list[m.PeeringState]) -> bool:
            return await shown() == states

        session.record.observed = observed(20)
        writer.mark(session)
        await await_for(lambda: shows([m.PeeringState.ESTABLISHED] * 20), 10, "the first record")
        written = writer.transactions
        # A change that is no loss (a new applied revision) waits for the pacing: not written meanwhile.
        session.record.applied_revision = 7
        writer.mark(session)
        # One peering goes down: written at once, with the change that waited.
        down = observed(20)
        down[3] = m.ObservedPeering(down[3].connection, m.PeeringState.CONNECTING, error="NOTIFICATION received: Cease")
        session.record.observed = down
        writer.mark(session)
        states = [m.PeeringState.ESTABLISHED] * 20
        states[3] = m.PeeringState.CONNECTING
        await await_for(lambda: shows(states), 10, "the peering that went down to be written")
        assert writer.transactions == written + 1
        kv = await store.get(r.status_key("edge"))
        assert kv is not None and AgentStatusRecord.decode(kv.value).applied_revision == 7
        # It comes back: no loss, so the pacing holds the write (a minute here).
        session.record.observed = observed(20)
        marked = time.monotonic()
        writer.mark(session)
        await await_for(lambda: writer.looked_at >= marked, 10, "a finished pass of the writer over the session")
        assert await shown() == states and writer.transactions == written + 1  # held by the pacing
    finally:
        await store.close()


def test_reports_of_changes_update_the_record_and_a_runaway_list_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """After EventsFrom.observed_changes an agent reports only what changed; the record is the merge, unchanged
    peerings keep their objects, and however many reports add up, a list over MAX_OBSERVED is refused, the record
    as it was."""
    marked: list[AgentSession] = []
    service = cast(AgentService, SimpleNamespace(advertise="127.0.0.1:1", store=None, lease_ttl=10,
                                                 status_writer=SimpleNamespace(mark=marked.append)))
    session = AgentSession(service, apb.Hello(site="edge", instance_id="i1", agent_version="t"), "peer")

    def report(*states: tuple[str, str], gone: tuple[str, ...] = (), changes: bool = True) -> apb.AgentMessage:
        peerings = [tpb.ObservedPeering(connection=name, state=tpb.PeeringState.Value(f"PEERING_STATE_{state}"),
                                        driver="fake") for name, state in states]
        return apb.AgentMessage(observed=apb.ObservedReport(peerings=peerings, gone=list(gone), changes=changes))

    def shown() -> dict[str, m.PeeringState]:
        return {o.connection: o.state for o in session.record.observed}

    session.handle(report(("a", "ESTABLISHED"), ("b", "ESTABLISHED"), ("c", "CONNECTING"), changes=False))
    assert shown() == {"a": m.PeeringState.ESTABLISHED, "b": m.PeeringState.ESTABLISHED,
                       "c": m.PeeringState.CONNECTING}
    assert marked == [session]
    b_before = next(o for o in session.record.observed if o.connection == "b")
    session.handle(report(("c", "ESTABLISHED"), ("d", "ERROR"), gone=("a", "never-there")))
    assert shown() == {"b": m.PeeringState.ESTABLISHED, "c": m.PeeringState.ESTABLISHED, "d": m.PeeringState.ERROR}
    assert next(o for o in session.record.observed if o.connection == "b") is b_before
    assert agents._up(session) == {"b", "c"}
    # Established b and c written; c going down must be seen as such (written at once, whatever the pacing).
    session._written_up = agents._up(session)
    session.handle(report(("c", "CONNECTING")))
    assert agents._went_down(session) and agents._up(session) == {"b"}
    # An agent whose peerings are as they were sends an Ack alone: it still counts as a report.
    session.record.last_report_ms = 0
    session.handle(apb.AgentMessage(ack=apb.Ack(revision=12)))
    assert session.record.applied_revision == 12 and session.record.last_report_ms > 0
    # A complete list replaces everything.
    session.handle(report(("z", "ESTABLISHED"), changes=False))
    assert shown() == {"z": m.PeeringState.ESTABLISHED}

    monkeypatch.setattr(agents, "MAX_OBSERVED", 3)
    session.handle(report(("y", "ESTABLISHED"), ("x", "ESTABLISHED")))
    with pytest.raises(InvalidArgument) as exc:
        session.handle(report(("w", "ESTABLISHED")))
    assert exc.value.field == "observed.peerings" and "4 peerings" in str(exc.value)
    assert shown() == {"z": m.PeeringState.ESTABLISHED, "y": m.PeeringState.ESTABLISHED,
                       "x": m.PeeringState.ESTABLISHED}


class ReportRecorder(agent_pb2_grpc.AgentServiceServicer):
    """A coordinator that sends a snapshot of c0 and c1 (rev 9) and EventsFrom saying ``changes``, then, once
    rev 9 is acked, a delta (rev 10) removing c0 and adding c2; it keeps every ObservedReport until rev 10 is
    acked, then ends the stream."""

    def __init__(self, changes: bool) -> None:
        self.changes = changes
        self.reports: list[apb.ObservedReport] = []

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await request_iterator.__anext__()  # Hello
        yield apb.CoordinatorMessage(snapshot=apb.Snapshot(revision=9, peerings=[peering("c0"), peering("c1")]))
        yield apb.CoordinatorMessage(events_from=apb.EventsFrom(seq=0, observed_changes=self.changes))
        delta_sent = False
        async for msg in request_iterator:
            if msg.HasField("observed"):
                self.reports.append(msg.observed)
            if msg.HasField("ack") and msg.ack.revision >= 9 and not delta_sent:
                delta_sent = True
                yield apb.CoordinatorMessage(delta=apb.Delta(revision=10, base_revision=9, removes=["c0"],
                                                             upserts=[peering("c2")]))
            if msg.HasField("ack") and msg.ack.revision == 10:
                break
        await context.abort(grpc.StatusCode.UNAVAILABLE, "done")


def peering(name: str) -> tpb.DesiredPeering:
    return tpb.DesiredPeering(
        connection=name, type=tpb.CONNECTION_TYPE_BGP, admin_state=tpb.ADMIN_STATE_UP,
        local=tpb.Endpoint(site="edge", name="gw", address="192.0.2.1", asn=65001),
        remote=tpb.Endpoint(site="dc", name=name, address="198.51.100.1", asn=64512))


@pytest.mark.parametrize("changes", [True, False], ids=["coordinator-takes-changes", "older-coordinator"])
async def test_the_agent_reports_changes_only_to_a_coordinator_that_takes_them(tmp_path: Path, changes: bool) -> None:
    from isthmus.agent.journal import Journal
    from isthmus.agent.link import CoordinatorLink, LinkClosed
    from isthmus.agent.overrides import Overrides
    from isthmus.agent.reconciler import Reconciler
    from isthmus.agent.state import StateFile
    from isthmus.drivers.base import DriverContext
    from isthmus.drivers.fake import FakeDriver

    coordinator = ReportRecorder(changes)
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(coordinator, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    reconciler = Reconciler("edge", [FakeDriver(DriverContext("edge", tmp_path / "fake"))],
                            Overrides(tmp_path / "overrides.json", "edge"), Journal(tmp_path / "journal.jsonl"))
    runner = asyncio.create_task(reconciler.run())
    try:
        link = CoordinatorLink("edge", [address], reconciler, StateFile(tmp_path / "state"), "fake", heartbeat=60)
        with pytest.raises((LinkClosed, grpc.aio.AioRpcError), match="done"):
            await asyncio.wait_for(link._session(address), 20)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await server.stop(0)

    reports = coordinator.reports
    assert reports and not reports[0].changes  # a stream's first report is always the complete list
    last = reports[-1]
    if changes:
        # The delta's effect as a change: c2 added, c0 gone, c1 (as it was) not sent again.
        assert last.changes and [p.connection for p in last.peerings] == ["c2"] and list(last.gone) == ["c0"]
    else:
        assert not any(r.changes for r in reports)
        assert sorted(p.connection for p in last.peerings) == ["c1", "c2"] and not last.gone
