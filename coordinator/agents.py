"""The agent channel: one bidirectional stream per connected site agent.

On Hello the session claims the site's status key under a lease of its own
(presence), sends a full snapshot of the site's desired peerings, then a delta
each time the planner changes them; to an agent that takes pieces (Hello.pieces),
one over the piece size goes in pieces. Acks and observed reports from the agent
are written to the status key; the lease ends with the stream, so a site whose
agent is gone shows as disconnected within the lease TTL at the latest. After
the first snapshot or delta the session tells the agent where the site's event
history ends (EventsFrom); the agent's journal entries go to the event writer.

Status writes are paced per site by the record's size (``StatusWriter``), so a
site whose peerings change all the time costs etcd a bounded number of bytes a
second instead of its whole record per delta; the journal is not in the record
(the event history has it). Every LAST_REPORT_EVERY seconds, and when the
session ends, a status write also keeps a copy without the lease
(``last-status/{site}``): when the session ends, cleanly or not, the site's
status shows what its agent last reported, and since when it is disconnected
where the session saw it end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
from prometheus_client import Histogram

from isthmus.coordinator import registry as r
from isthmus.coordinator.auth import Auth, Principal, check_agent
from isthmus.coordinator.events import EventWriter
from isthmus.coordinator.health import HealthBook
from isthmus.coordinator.planner import Planner, plan_at
from isthmus.coordinator.store import Put, Store, absent, mod_is
from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.errors import InvalidArgument, IsthmusError, OutOfRange, Unavailable
from isthmus.core.wire import network as wire
from isthmus.core.wire import pieces
from isthmus.v1 import agent_pb2 as apb
from isthmus.v1 import agent_pb2_grpc
from isthmus.v1 import types_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")


OPEN_ANONYMOUS = Principal("anonymous", "", "")
JOURNAL_KEPT = 50  # journal entries of each site shown in its status (read from the event history)
COMPRESS_OVER = 512  # bytes of JSON over which a status record is stored compressed


def now_ms() -> int:
    return int(time.time() * 1000)


async def _unless(work: Awaitable[T], event: asyncio.Event) -> T | None:
    """``work``'s result, or None (``work`` cancelled) if ``event`` is set first."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    return None if task.cancelled() else task.result()


@dataclass
class AgentStatusRecord:
    """What the status key of a site holds while its agent is connected."""

    site: str
    instance_id: str
    agent_version: str
    host: str
    driver: str
    coordinator: str
    connected_since_ms: int
    applied_revision: int = 0
    last_report_ms: int = 0
    observed: list[m.ObservedPeering] = field(default_factory=list)
    overrides: list[m.Override] = field(default_factory=list)
    disconnected_ms: int = 0  # in a last report: when the session ended (0: still up, or it was not seen to end)

    def encode(self, texts: Texts | None = None) -> bytes:
        """JSON; over COMPRESS_OVER bytes, zlib-compressed (a site's observed peerings repeat their field names
        and connection names: a tenth of the bytes in etcd, written again with every status change).

        With ``texts`` (the session's), only the observed peerings and overrides not in the last encoding are
        encoded again: a site of a mesh reports hundreds of peerings, most of them unchanged.
        """
        texts = Texts() if texts is None else texts
        head = _dumps({name: getattr(self, name) for name in _HEAD})
        observed, overrides = texts.of(self.observed, self.overrides)
        raw = f'{head[:-1]},"observed":{observed},"overrides":{overrides}}}'.encode()
        return zlib.compress(raw, 1) if len(raw) > COMPRESS_OVER else raw

    def last_report(self, disconnected_ms: int = 0, texts: Texts | None = None) -> bytes:
        """The copy kept after the session, with when it ended."""
        return dataclasses.replace(self, disconnected_ms=disconnected_ms).encode(texts)

    @classmethod
    def decode(cls, raw: bytes) -> AgentStatusRecord:
        d: dict[str, Any] = json.loads(raw if raw[:1] == b"{" else zlib.decompress(raw))
        d.pop("journal", None)  # records written before the journal left the status key
        d["observed"] = [m.observed_from_json(o) for o in d.get("observed", [])]
        d["overrides"] = [m.override_from_json(o) for o in d.get("overrides", [])]
        return cls(**d)


class Texts:
    """The JSON texts of the objects in a session's last status encoding, by identity (the objects are held, so
    an id is never another object's)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[object, str]] = {}

    def of(self, *lists: Sequence[object]) -> list[str]:
        """Each list's JSON text; what is not in this call is forgotten."""
        known, held = self._known, {}
        out = []
        for items in lists:
            parts = []
            for item in items:
                last = known.get(id(item))
                if last is None or last[0] is not item:
                    last = (item, _dumps(item))
                held[id(item)] = last
                parts.append(last[1])
            out.append("[" + ",".join(parts) + "]")
        self._known = held
        return out


_HEAD = tuple(f.name for f in dataclasses.fields(AgentStatusRecord) if f.name not in ("observed", "overrides"))


def _dumps(value: object) -> str:
    return json.dumps(m.to_json(value), sort_keys=True, separators=(",", ":"))


STATUS_DEBOUNCE = 0.05  # seconds
STATUS_BATCH = 60  # sessions written per etcd transaction: up to two puts each (etcd allows 128 operations)
# A site's status is written again at the earliest after its record's size at this rate: a site whose peerings
# change all the time (a mesh being built) costs etcd at most this many bytes a second, not its record per delta.
STATUS_BYTES_PER_SECOND = 1_000
STATUS_FREE_BYTES = 200  # a record up to this size is not paced (an agent with no peerings)
STATUS_MAX_INTERVAL = 5.0  # seconds: the pacing never holds a change back longer
# Observed peerings a session's record holds at most: a site's connections (checks.MAX_CONNECTIONS_PER_SITE) and
# as many added locally. Reports of changes add up, so the sum is bounded here rather than by the message size.
MAX_OBSERVED = 2 * checks.MAX_CONNECTIONS_PER_SITE
LAST_REPORT_EVERY = 10.0  # seconds between copies to last-status/{site} while the session lasts (and at its end)


def _went_down(s: AgentSession) -> bool:
    """Whether a peering that was ESTABLISHED in the session's last written record no longer is: a session lost
    (a flap, an outage) is written at once, whatever the pacing, so that the operator sees it centrally."""
    if not s._written_up:
        return False
    up = _up(s)
    known = s._down_for
    if known is None or known[0] is not up or known[1] is not s._written_up:  # the sets are replaced, never changed
        known = s._down_for = (up, s._written_up, not s._written_up <= up)
    return known[2]


def _up(s: AgentSession) -> set[str]:
    """The peerings ESTABLISHED in the session's record, worked out once per report (not for every paced session
    each time the writer wakes: that took a tenth of the coordinator's CPU while a mesh was being built)."""
    if s._up_of is not s.record.observed:
        s._up_of = s.record.observed
        s._up = {p.connection for p in s.record.observed if p.state == m.PeeringState.ESTABLISHED}
    return s._up


class StatusWriter:
    """Writes the status records of all sessions, many per etcd transaction.

    Sessions mark their record dirty; the writer takes everything dirty whose
    pacing allows (``due``) at once and writes it in batches, each put comparing
    the mod revision of the session's last write. If a batch fails, some session
    was taken over: the writer retries that batch one record at a time and tells
    the session that lost. Updates made while a write is in flight or paced
    coalesce into the next one, except a peering leaving ESTABLISHED (``_went_down``), which is written at
    once: a flap must show centrally even when the session comes back before the pacing allows a write.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dirty: dict[int, AgentSession] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.transactions = 0
        self.bytes_written = 0
        self.looked_at = 0.0  # monotonic time at which the last finished pass looked at the dirty sessions

    def mark(self, session: AgentSession) -> None:
        self.dirty[id(session)] = session
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="status-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # A short pause lets an agent's ack, observed report and local report land in one write.
            await asyncio.sleep(STATUS_DEBOUNCE)
            self._wake.clear()
            now = time.monotonic()
            batch = []
            for key, s in list(self.dirty.items()):
                if s.taken_over.is_set() or s.closed:
                    del self.dirty[key]
                elif s._due <= now or _went_down(s):
                    del self.dirty[key]
                    batch.append(s)
            for start in range(0, len(batch), STATUS_BATCH):
                await self._write(batch[start:start + STATUS_BATCH])
            self.looked_at = now
            self._wake_when_due()

    def _wake_when_due(self) -> None:
        """Wake the writer when the first paced session may be written."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.dirty:
            delay = min(s._due for s in self.dirty.values()) - time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(max(0.0, delay), self._wake.set)

    def _ops(self, s: AgentSession, now: float) -> list[Put]:
        value = s.record.encode(s.texts)
        s._due = now + min(STATUS_MAX_INTERVAL, max(0, len(value) - STATUS_FREE_BYTES) / STATUS_BYTES_PER_SECOND)
        s._written_up = _up(s)
        ops = [Put(r.status_key(s.site), value, s.lease)]
        if now - s._copied >= LAST_REPORT_EVERY:
            s._copied = now
            ops.append(Put(r.last_status_key(s.site), s.record.last_report(texts=s.texts)))
        return ops

    async def _write(self, sessions: list[AgentSession]) -> None:
        now = time.monotonic()
        ops = [op for s in sessions for op in self._ops(s, now)]
        try:
            ok, rev = await self.store.txn([mod_is(r.status_key(s.site), s._written_rev) for s in sessions], ops)
            self.transactions += 1
        except Unavailable as exc:
            log.warning("cannot write the status of %d sites (%s); retrying", len(sessions), exc)
            for s in sessions:
                s._copied = 0.0
                self.dirty[id(s)] = s
            await asyncio.sleep(0.5)
            self._wake.set()
            return
        except IsthmusError as exc:  # etcd refused these records (too large, say): retrying cannot help
            log.error("cannot write the status of %s: %s", ", ".join(s.site for s in sessions), exc)
            return
        if ok:
            self.bytes_written += sum(len(op.value) for op in ops)
            for s in sessions:
                s._written_rev = rev
            return
        if len(sessions) == 1:
            sessions[0].taken_over.set()
            return
        for s in sessions:  # find the one(s) taken over
            s._copied = 0.0
            await self._write([s])


class Leased(Protocol):
    """What the lease keeper keeps alive: a lease, and the event it sets when the lease is gone."""

    lease: int
    lease_lost: asyncio.Event


class LeaseKeeper:
    """Keeps every session's presence lease alive over one keep-alive stream per round.

    One stream for all leases instead of one per session and refresh: with a
    thousand agents the per-session streams cost a fifth of a core and stalled
    the event loop periodically. An etcd hiccup shorter than the TTL ends no
    session; a lease etcd reports gone ends its session.
    """

    def __init__(self, store: Store, ttl: int) -> None:
        self.store = store
        self.ttl = ttl
        self.sessions: dict[int, Leased] = {}
        self._task: asyncio.Task[None] | None = None
        self.last_error = ""  # why the last refresh failed ("" after one that worked)

    def add(self, session: Leased) -> None:
        self.sessions[session.lease] = session
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="lease-keeper")

    def remove(self, session: Leased) -> None:
        if self.sessions.get(session.lease) is session:
            del self.sessions[session.lease]

    async def _run(self) -> None:
        last_ok = time.monotonic()
        while self.sessions:
            await asyncio.sleep(self.ttl / 3)
            leases = list(self.sessions)
            try:
                ttls = await self.store.refresh_leases(leases)
            except IsthmusError as exc:
                self.last_error = str(exc)
                if time.monotonic() - last_ok > self.ttl:
                    for lease in leases:
                        if lease in self.sessions:
                            self.sessions[lease].lease_lost.set()
                else:
                    log.warning("refreshing %d presence leases failed (%s); retrying", len(leases), exc)
                continue
            last_ok = time.monotonic()
            self.last_error = ""
            for lease in leases:
                if ttls.get(lease, 0) <= 0 and lease in self.sessions:
                    self.sessions.pop(lease).lease_lost.set()


class SiteTaken(Exception):
    """Another live agent holds the site."""


class AgentSession:
    """One agent's stream: presence, desired-state push, status write-back."""

    def __init__(self, service: AgentService, hello: apb.Hello, peer: str) -> None:
        self.service = service
        self.site = hello.site
        self.peer = peer
        self.record = AgentStatusRecord(
            site=hello.site,
            instance_id=hello.instance_id,
            agent_version=hello.agent_version,
            host=hello.host,
            driver=hello.driver,
            coordinator=service.advertise,
            connected_since_ms=now_ms(),
            applied_revision=hello.applied_revision,
        )
        self.lease = 0
        self._reported: dict[str, tuple[pb.ObservedPeering, m.ObservedPeering]] = {}  # by connection: ``_observed``
        self.texts = Texts()  # of the last status written: ``AgentStatusRecord.encode``
        self._written_rev = 0  # mod revision of our last status write: a takeover shows as a mismatch
        self._due = 0.0  # monotonic time from which the status writer may write this record again (pacing)
        self._written_up: set[str] = set()  # peerings ESTABLISHED in the last record written (one going down: now)
        self._up: set[str] = set()  # peerings ESTABLISHED in ``_up_of`` (``_up``)
        self._up_of: list[m.ObservedPeering] | None = None
        self._down_for: tuple[set[str], set[str], bool] | None = None  # ``_went_down``'s last answer, for its sets
        self._copied = 0.0  # monotonic time of the last copy to last-status/{site} (0: none yet)
        self.taken_over = asyncio.Event()
        self.lease_lost = asyncio.Event()
        self.sent: dict[str, m.DesiredPeering] = {}
        self.closed = False
        self.journal_limit = hello.journal_limit
        self.takes_pieces = hello.pieces
        self.ending = asyncio.Event()  # set when one of the stream's other tasks ends: ``updates`` returns
        self.side: asyncio.Queue[apb.CoordinatorMessage] = asyncio.Queue()  # log requests, between whole updates
        self.asked: dict[int, asyncio.Future[apb.LogAnswer]] = {}
        self._asks = 0
        self.log_streams = 0  # LogService.ReadLogs streams reading from this agent now

    async def ask(self, request: apb.LogRequest, timeout: float) -> apb.LogAnswer:
        """Send a log request to the agent and wait for its answer (Unavailable when none comes in time)."""
        self._asks += 1
        request.id = self._asks
        answer: asyncio.Future[apb.LogAnswer] = asyncio.get_running_loop().create_future()
        self.asked[request.id] = answer
        self.side.put_nowait(apb.CoordinatorMessage(log_request=request))
        self.service.planner.changed_event(self.site).set()  # wakes ``updates``, which sends it
        try:
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError:
            raise Unavailable(f"site {self.site}: its agent did not answer within {timeout:g}s (an agent older than "
                              "this coordinator does not read logs)") from None
        finally:
            self.asked.pop(request.id, None)

    @property
    def store(self) -> Store:
        return self.service.store

    async def claim(self) -> None:
        """Write the status key under a new lease unless another agent instance holds it."""
        key = r.status_key(self.site)
        self.lease = await self.store.grant_lease(self.service.lease_ttl)
        for _ in range(r.MAX_ATTEMPTS):
            current = await self.store.get(key)
            if current is not None:
                holder = AgentStatusRecord.decode(current.value)
                if holder.instance_id != self.record.instance_id:
                    await self.store.revoke_lease(self.lease)
                    raise SiteTaken(
                        f"site {self.site} already has a connected agent on {holder.host or '?'} "
                        f"(via coordinator {holder.coordinator}); stop it first"
                    )
                compare = mod_is(key, current.mod_revision)
            else:
                compare = absent(key)
            ok, rev = await self.store.txn([compare], [Put(key, self.record.encode(), self.lease)])
            if ok:
                self._written_rev = rev
                return
        raise Unavailable(f"could not claim the status of site {self.site}")

    async def release(self) -> None:
        """Keep the last report with the time the session ended (unless another session holds the site), then
        end the presence. Best effort: when etcd cannot be written, the lease expires on its own."""
        self.closed = True
        self.service.lease_keeper.remove(self)
        for answer in self.asked.values():
            if not answer.done():
                answer.set_exception(Unavailable(f"site {self.site}: its agent disconnected"))
        with contextlib.suppress(IsthmusError):
            await self.store.txn([mod_is(r.status_key(self.site), self._written_rev)],
                                 [Put(r.last_status_key(self.site), self.record.last_report(now_ms(), self.texts))])
        with contextlib.suppress(IsthmusError):
            await self.store.revoke_lease(self.lease)

    async def keep_alive(self) -> None:
        """Ends (Unavailable) when the lease keeper could not keep the presence lease alive."""
        keeper = self.service.lease_keeper
        keeper.add(self)
        await self.lease_lost.wait()
        if keeper.last_error:
            raise Unavailable(f"the presence of site {self.site} could not be kept alive for {keeper.ttl}s: "
                              f"{keeper.last_error}")
        raise Unavailable(f"the presence lease of site {self.site} expired")

    async def write_status(self) -> None:
        """Ends (SiteTaken) when the status writer finds that another session took the site over."""
        await self.taken_over.wait()
        raise SiteTaken(f"site {self.site}: another session of the same agent took over")

    def mark_dirty(self) -> None:
        self.service.status_writer.mark(self)

    def handle(self, msg: apb.AgentMessage) -> None:
        kind = msg.WhichOneof("msg")
        if kind == "ack":
            self.record.applied_revision = msg.ack.revision
            self.record.last_report_ms = now_ms()  # an agent whose peerings are as they were sends the ack alone
            self.mark_dirty()
            log.debug("site %s acked rev %d", self.site, msg.ack.revision)
        elif kind == "observed":
            report = msg.observed
            self.record.observed = self._observed(report.peerings, report.gone if report.changes else None)
            self.record.last_report_ms = now_ms()
            self.mark_dirty()
        elif kind == "local":
            self.record.overrides = [wire.override_from_pb(o) for o in msg.local.overrides]
            if msg.local.journal:
                self.service.events.add(self.site, [wire.journal_from_pb(e) for e in msg.local.journal],
                                        self.journal_limit)
            self.mark_dirty()
        elif kind == "heartbeat":
            pass
        elif kind == "log_answer":
            answer = self.asked.get(msg.log_answer.id)
            if answer is not None and not answer.done():
                answer.set_result(msg.log_answer)
        elif kind == "health":
            self.service.health.take(self.site, msg.health)
        else:
            log.warning("site %s sent an unexpected %s message; ignored", self.site, kind)

    def _observed(self, reported: Iterable[pb.ObservedPeering], gone: Iterable[str] | None) -> list[m.ObservedPeering]:
        """The observed peerings after a report: the whole list, or (``gone`` not None) the changes to the last.

        One reported as before keeps its object (the status writer encodes it again only when it changed:
        ``Texts``), and the established set (``_up``) is updated from the changed ones only.
        """
        known = self._reported
        held = {} if gone is None else dict(known)
        up = set(_up(self))  # a copy: the last written set may be this one (``_written_up``)
        for p in reported:
            last = known.get(p.connection)
            if last is None or last[0] != p:
                kept = pb.ObservedPeering()
                kept.CopyFrom(p)  # not ``p``: a part of the message would keep all of it alive
                last = (kept, wire.observed_from_pb(p))
                if last[1].state == m.PeeringState.ESTABLISHED:
                    up.add(p.connection)
                else:
                    up.discard(p.connection)
            held[p.connection] = last
        for name in (known.keys() - held.keys()) if gone is None else gone:
            held.pop(name, None)
            up.discard(name)
        if len(held) > MAX_OBSERVED:
            raise InvalidArgument(f"{len(held)} peerings observed, over the {MAX_OBSERVED} a site can report",
                                  "observed.peerings")
        out = [o for _, o in held.values()]
        self._reported = held
        self._up, self._up_of = up, out  # ``_up`` without going through every peering again
        return out

    async def first_message(self, hello: apb.Hello) -> apb.CoordinatorMessage:
        """A delta from the state the agent holds when it can be rebuilt from etcd's history, else a snapshot."""
        planner = self.service.planner
        if hello.desired_revision > planner.revision and not await planner.wait_for_revision(
            hello.desired_revision, timeout=10
        ):
            # Never answer with a view older than what the agent already holds.
            raise Unavailable(f"this coordinator is at rev {planner.revision}, behind the agent's "
                              f"rev {hello.desired_revision}; try another")
        peerings, revision = planner.desired(self.site)
        self.sent = peerings
        if hello.desired_revision and hello.desired_digest:
            try:
                held = await plan_at(self.store, self.site, hello.desired_revision)
            except OutOfRange:
                held = None  # compacted: a full snapshot
            if held is not None and m.peerings_digest(held) == hello.desired_digest:
                upserts = [p for name, p in peerings.items() if held.get(name) != p]
                removes = [name for name in held if name not in peerings]
                log.info("site %s: resuming from rev %d: delta to rev %d (%d upserts, %d removes)",
                         self.site, hello.desired_revision, revision, len(upserts), len(removes))
                return apb.CoordinatorMessage(delta=apb.Delta(
                    revision=revision, base_revision=hello.desired_revision,
                    upserts=[wire.peering_to_pb(p) for p in upserts], removes=removes))
        log.info("site %s: snapshot of %d peerings at rev %d", self.site, len(peerings), revision)
        return apb.CoordinatorMessage(snapshot=apb.Snapshot(
            revision=revision, peerings=[wire.peering_to_pb(p) for p in peerings.values()]))

    def in_pieces(self, msg: apb.CoordinatorMessage) -> list[apb.CoordinatorMessage]:
        """``msg`` in pieces if the agent takes them and it is over the piece size; else ``msg`` whole."""
        if self.takes_pieces:
            parts = pieces.split(msg)
            if len(parts) > 1:
                kind = msg.WhichOneof("msg")
                log.info("site %s: %s of rev %d is %d bytes: sent in %d pieces", self.site, kind,
                         getattr(msg, kind).revision, msg.ByteSize(), len(parts))
            return parts
        size = msg.ByteSize()
        if size > pieces.MESSAGE_LIMIT:
            log.warning("site %s: the desired state (%d bytes) is over the agent's %d byte message limit and its agent "
                        "(version %s) does not take pieces; it cannot receive it: upgrade the agent", self.site, size,
                        pieces.MESSAGE_LIMIT, self.record.agent_version or "?")
        return [msg]

    async def _unless_ending(self, work: Awaitable[T]) -> T | None:
        """``work``'s result, or None (``work`` cancelled) if the session ends first."""
        return await _unless(work, self.ending)

    async def updates(self, hello: apb.Hello) -> AsyncIterator[apb.CoordinatorMessage]:
        """The first message (delta or snapshot), then a delta each time the site's desired peerings change.

        Each goes whole or in pieces (``in_pieces``); the pieces of one follow each other with nothing between.
        """
        changed = self.service.planner.changed_event(self.site)
        changed.clear()
        first = await self._unless_ending(self.first_message(hello))
        if first is None:
            return
        for piece in self.in_pieces(first):
            yield piece
        # Where the site's event history ends: the agent sends every journal entry after it.
        cursor = await self._unless_ending(self.service.events.cursor(self.site))
        if cursor is None:
            return
        # The agent may report its observed peerings as changes from now on (ObservedReport.changes).
        yield apb.CoordinatorMessage(events_from=apb.EventsFrom(seq=cursor, observed_changes=True))
        base = first.snapshot.revision if first.HasField("snapshot") else first.delta.revision
        while True:
            # One event wakes the stream: a change of the site's desired peerings, a log request (``ask``) or the
            # session's end (no task per wait: with a thousand agents those cost a tenth of the fan-out's CPU). A
            # log request queued before this stream cleared the event is sent without waiting for a change.
            if self.side.empty():
                await changed.wait()
            if self.ending.is_set():
                return  # leaving the change event set: a new session of the site may be waiting on it
            woke = time.monotonic()
            changed.clear()
            while not self.side.empty():
                yield self.side.get_nowait()
            peerings, revision = self.service.planner.desired(self.site)
            upserts = [p for name, p in peerings.items() if (q := self.sent.get(name)) is not p and q != p]
            removes = [name for name in self.sent if name not in peerings]
            self.sent = peerings
            if not upserts and not removes:
                continue
            # Debug: a change of a hub endpoint is a delta for every site (the planner's line at info names them).
            log.debug(
                "site %s: delta at rev %d (%d upserts, %d removes)", self.site, revision, len(upserts), len(removes)
            )
            delta = apb.CoordinatorMessage(
                delta=apb.Delta(
                    revision=revision, base_revision=base,
                    upserts=[wire.peering_to_pb(p) for p in upserts], removes=removes,
                )
            )
            for piece in self.in_pieces(delta):
                yield piece
            if self.service.push_seconds is not None:
                self.service.push_seconds.observe(time.monotonic() - woke)
            base = revision


class AgentService(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, store: Store, planner: Planner, advertise: str, lease_ttl: int = 10,
                 auth: Auth | None = None) -> None:
        self.auth = auth
        self.push_seconds: Histogram | None = None  # set when the coordinator serves metrics
        self.store = store
        self.planner = planner
        self.advertise = advertise
        self.lease_ttl = lease_ttl
        self.sessions: dict[str, AgentSession] = {}
        self.status_writer = StatusWriter(store)
        self.events = EventWriter(store)
        self.lease_keeper = LeaseKeeper(store, lease_ttl)
        self.health = HealthBook(store)
        self._closing = asyncio.Event()
        self._finishing: set[asyncio.Task[None]] = set()

    def close_all(self) -> None:
        """Ask every stream to end now (coordinator shutdown): agents reconnect elsewhere at once."""
        self._closing.set()

    async def Connect(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[apb.AgentMessage], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[apb.CoordinatorMessage]:
        requests = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(requests.__anext__(), timeout=30)
        except (StopAsyncIteration, TimeoutError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello: the agent must send Hello first")
        if first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello: the agent must send Hello first")
        hello = first.hello
        try:
            m.check_name(hello.site, "hello.site")
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await check_agent(self.auth, context, hello.site, "/isthmus.v1.AgentService/Connect")
        known = self.planner.sites.get(hello.site)
        if known is not None and known.kind == m.SiteKind.EXTERNAL:
            log.warning("refused agent from %s: site %s is external", context.peer(), hello.site)
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"site {hello.site} is external: it runs no isthmus agent (create it as a region, "
                                "cell or instance to connect one)")
        session = AgentSession(self, hello, context.peer())
        try:
            await session.claim()
        except SiteTaken as exc:
            log.warning("refused agent from %s: %s", context.peer(), exc)
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
        except IsthmusError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.code_name), str(exc))
        if hello.site not in self.planner.sites:
            log.warning("agent connected for site %s, which is not defined (yet)", hello.site)
        log.info(
            "agent for site %s connected from %s (version %s, driver %s, applied rev %d)",
            hello.site, context.peer(), hello.agent_version, hello.driver, hello.applied_revision,
        )
        self.sessions[hello.site] = session

        async def read() -> None:
            async for msg in requests:
                session.handle(msg)

        tasks = [
            asyncio.create_task(read(), name=f"read-{hello.site}"),
            asyncio.create_task(session.keep_alive(), name=f"lease-{hello.site}"),
            asyncio.create_task(session.write_status(), name=f"status-{hello.site}"),
            asyncio.create_task(self._closing.wait(), name=f"closing-{hello.site}"),
        ]
        # No task or wait per message: when one of the tasks ends, it sets ``session.ending`` and wakes the
        # updates, which then return (with a thousand agents, a wait over five futures per delta cost a third
        # of the coordinator's CPU per delta).
        ended: list[asyncio.Task[Any]] = []
        changed = self.planner.changed_event(hello.site)

        def stop(task: asyncio.Task[Any]) -> None:
            ended.append(task)
            session.ending.set()
            changed.set()

        for t in tasks:
            t.add_done_callback(stop)
        reason = "agent closed the stream"
        try:
            try:
                async for msg in session.updates(hello):
                    yield msg
            except IsthmusError as exc:
                reason = str(exc)
                await context.abort(getattr(grpc.StatusCode, exc.code_name), reason)
            finished = ended[0] if ended else None
            if finished is tasks[3]:
                reason = "coordinator shutting down"
            elif finished is not None and not finished.cancelled() and finished.exception() is not None:
                reason = f"{finished.get_name()}: {finished.exception()}"
                if isinstance(finished.exception(), Unavailable):  # etcd: say so, the agent tries elsewhere
                    await context.abort(grpc.StatusCode.UNAVAILABLE, str(finished.exception()))
        finally:
            pending: list[asyncio.Future[Any]] = list(tasks)
            for t in tasks:
                t.remove_done_callback(stop)
                t.cancel()
            # In a task of its own: the stream ends now even when etcd is slow to take the release, and a second
            # cancellation of the stream cannot skip releasing the site.
            finish = asyncio.create_task(self._finish(session, pending, reason), name=f"release-{hello.site}")
            self._finishing.add(finish)
            finish.add_done_callback(self._finishing.discard)

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) for ended sessions to release their sites (coordinator shutdown)."""
        if self._finishing:
            await asyncio.wait(list(self._finishing), timeout=timeout)

    async def _finish(self, session: AgentSession, tasks: list[asyncio.Future[Any]], reason: str) -> None:
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.sessions.get(session.site) is session:
            del self.sessions[session.site]
            self.health.forget(session.site)
        await session.release()
        log.info("agent for site %s disconnected (%s)", session.site, reason)
