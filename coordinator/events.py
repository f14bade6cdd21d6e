"""The central event history: every site's journal entries, stored by the coordinators in etcd.

Agents report their journal entries on the agent stream; each session hands
them to its coordinator's ``EventWriter``, which stores them as
``events/{site}/{seq:020d}`` together with the site's cursor
``event-cursors/{site}`` (the newest seq stored), many to a transaction. Each
transaction compares the cursor's mod revision, so whichever coordinator
writes, a seq is stored once and the history never goes back. Entries the
agent's journal no longer held become one ``gap`` event. The leader trims the
history by age and by count per site; ``EventService`` lists and follows it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from isthmus.coordinator import registry as r
from isthmus.coordinator.store import KV, Delete, Put, Store, mod_is, prefix_end
from isthmus.core import model as m
from isthmus.core.edge import grpc_errors
from isthmus.core.errors import InvalidArgument, IsthmusError
from isthmus.core.wire import pieces
from isthmus.v1 import events_pb2 as epb
from isthmus.v1 import events_pb2_grpc

log = logging.getLogger(__name__)

EVENTS = r.ROOT + "events/"
CURSORS = r.ROOT + "event-cursors/"

DEFAULT_RETENTION_S = 7 * 86_400
DEFAULT_MAX_PER_SITE = 10_000
COORDINATOR_SITE = "_coordinators"  # not a DNS label: no agent's journal can collide with it
TRIM_EVERY = 60.0  # seconds between the leader's trim runs
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_MESSAGE = 4096  # characters of a message kept
WRITE_BATCH = 100  # puts per etcd transaction (etcd allows 128 operations)
WRITE_DEBOUNCE = 0.05  # seconds: a burst of reports lands in one transaction
READ_PAGE = 500  # events per range read
READ_PARALLEL = 32  # sites read at once by a query across sites


def site_prefix(site: str) -> str:
    return f"{EVENTS}{site}/"


def event_key(site: str, seq: int) -> str:
    return f"{EVENTS}{site}/{seq:020d}"


def cursor_key(site: str) -> str:
    return CURSORS + site


@dataclass(frozen=True)
class SiteEvent:
    """One event of a site's history: a journal entry of its agent, or a gap the coordinator recorded."""

    site: str
    seq: int
    time_unix_ms: int
    kind: str
    level: str
    message: str
    connection: str = ""
    revision: int = 0  # etcd revision it was stored at (not part of the stored value)

    @classmethod
    def from_journal(cls, site: str, e: m.JournalEntry) -> SiteEvent:
        return cls(site, e.seq, e.time_ms, e.kind, m.event_level(e.kind, e.level), e.message[:MAX_MESSAGE],
                   e.connection)

    def to_journal(self) -> m.JournalEntry:
        return m.JournalEntry(self.seq, self.time_unix_ms, self.kind, self.connection, self.message, self.level)

    def encode(self) -> bytes:
        return json.dumps({"site": self.site, "seq": self.seq, "time_unix_ms": self.time_unix_ms, "kind": self.kind,
                           "level": self.level, "connection": self.connection, "message": self.message},
                          sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, kv: KV) -> SiteEvent:
        d: dict[str, Any] = json.loads(kv.value)
        return cls(d["site"], int(d["seq"]), int(d["time_unix_ms"]), d["kind"], m.event_level(d["kind"], d["level"]),
                   d.get("message", ""), d.get("connection", ""), kv.mod_revision)


def _level_rank(level: str) -> int:
    return m.EVENT_LEVELS.index(level) if level in m.EVENT_LEVELS else 0


@dataclass(frozen=True)
class EventFilter:
    """Which events a query wants; empty fields match everything."""

    site: str = ""
    since_ms: int = 0
    kind: str = ""
    level: str = ""  # the minimum level
    before: tuple[int, str, int] | None = None  # only events that come before this place (see place)

    def place(self, e: SiteEvent) -> tuple[int, str, int]:
        """Where ``e`` goes in this query's answer: by seq within one site, by time across sites."""
        return (0, e.site, e.seq) if self.site else (e.time_unix_ms, e.site, e.seq)

    def check(self) -> EventFilter:
        """Self, or InvalidArgument naming the field."""
        if self.site and self.site != COORDINATOR_SITE:
            m.check_name(self.site, "site")
        if self.since_ms < 0:
            raise InvalidArgument(f"{self.since_ms} is negative", "since_unix_ms")
        if self.level and self.level not in m.EVENT_LEVELS:
            raise InvalidArgument(f"{self.level!r} is not one of {', '.join(m.EVENT_LEVELS)}", "level")
        return self

    def matches(self, e: SiteEvent, with_since: bool = True) -> bool:
        return ((not self.site or e.site == self.site) and (not with_since or e.time_unix_ms >= self.since_ms)
                and (not self.kind or e.kind == self.kind) and _level_rank(e.level) >= _level_rank(self.level)
                and (self.before is None or self.place(e) < self.before))


# ---------------------------------------------------------------- writing


@dataclass
class _Cursor:
    seq: int  # newest seq stored for the site
    mod_revision: int  # of the cursor key (0: absent)


def _cursor_value(kv: KV | None) -> _Cursor:
    if kv is None:
        return _Cursor(0, 0)
    return _Cursor(int(json.loads(kv.value)["seq"]), kv.mod_revision)


class EventWriter:
    """Stores the journal entries of every session of this coordinator, many per etcd transaction.

    Entries wait in ``pending`` (per site, by seq, so a repeat is harmless)
    until stored; nothing is dropped when a session ends or etcd is away, only
    when the site's cursor shows it stored. A transaction fails only when
    another writer moved a cursor; the writer then reads it and goes on after it.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.pending: dict[str, dict[int, SiteEvent]] = {}
        self.cursors: dict[str, _Cursor] = {}
        self.journal_limits: dict[str, int] = {}
        self.transactions = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # One flush at a time in this coordinator: two interleaved flushes could write from each other's
        # stale view of a cursor (other coordinators are kept apart by the compare on the cursor).
        self._flushing = asyncio.Lock()

    async def cursor(self, site: str) -> int:
        """The newest seq stored for ``site``, read from etcd (another coordinator may have stored more)."""
        read = _cursor_value(await self.store.get(cursor_key(site)))
        known = self.cursors.get(site)
        if known is None or read.mod_revision >= known.mod_revision:
            self.cursors[site] = known = read
        return known.seq

    def add(self, site: str, entries: Iterable[m.JournalEntry], journal_limit: int = 0) -> None:
        """Queue a site's journal entries (any order, repeats allowed); they are stored within milliseconds."""
        if journal_limit:
            self.journal_limits[site] = journal_limit
        known = self.cursors.get(site)
        floor = known.seq if known else 0
        pending = self.pending.setdefault(site, {})
        for e in entries:
            if e.seq > floor:
                pending[e.seq] = SiteEvent.from_journal(site, e)
        if not pending:
            del self.pending[site]
            return
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="event-writer")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(WRITE_DEBOUNCE)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:  # etcd away, or a bug: the events stay pending and are retried
                waiting = sum(len(p) for p in self.pending.values())
                if isinstance(exc, IsthmusError):
                    log.warning("cannot store %d events of %d sites (%s); retrying", waiting, len(self.pending), exc)
                else:
                    log.exception("storing %d events failed unexpectedly; retrying", waiting)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def flush(self) -> None:
        """Store everything pending now (raises Unavailable when etcd is away; nothing is lost then)."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        for _ in range(1000):  # each round stores something or learns a cursor; bounded all the same
            for site in [s for s in self.pending if s not in self.cursors]:
                await self.cursor(site)
            batch: list[tuple[str, list[SiteEvent]]] = []
            puts = 0
            for site in list(self.pending):
                events = self._next(site, WRITE_BATCH - 1)
                if not events:
                    continue
                if batch and puts + len(events) + 1 > WRITE_BATCH:
                    await self._write(batch)
                    batch, puts = [], 0
                batch.append((site, events))
                puts += len(events) + 1
            if not batch:
                return
            await self._write(batch)

    def _next(self, site: str, room: int) -> list[SiteEvent]:
        """The site's next events to store after its cursor, oldest first, a gap event where seqs are missing."""
        cursor = self.cursors[site]
        pending = self.pending.get(site, {})
        for seq in [s for s in pending if s <= cursor.seq]:
            del pending[seq]
        if not pending:
            self.pending.pop(site, None)
            return []
        out: list[SiteEvent] = []
        expected = cursor.seq + 1
        for seq in sorted(pending):
            if len(out) >= room:
                break
            if seq > expected:
                out.append(self._gap(site, expected, seq - 1, pending[seq].time_unix_ms))
                if len(out) >= room:
                    break
            out.append(pending[seq])
            expected = seq + 1
        return out

    def _gap(self, site: str, first: int, last: int, time_ms: int) -> SiteEvent:
        limit = self.journal_limits.get(site, 0)
        what = f"events {first}..{last}" if last > first else f"event {first}"
        why = f"the agent's journal keeps {limit}" if limit else "the agent's journal no longer held them"
        log.warning("site %s: %s lost before they reached a coordinator (%s)", site, what, why)
        return SiteEvent(site, first, time_ms, "gap", "warning", f"{what} lost: {why}")

    async def _write(self, batch: list[tuple[str, list[SiteEvent]]]) -> None:
        ops: list[Put | Delete] = []
        for site, events in batch:
            ops += [Put(event_key(site, e.seq), e.encode()) for e in events]
            ops.append(Put(cursor_key(site), json.dumps({"seq": events[-1].seq}).encode()))
        ok, rev = await self.store.txn([mod_is(cursor_key(site), self.cursors[site].mod_revision)
                                        for site, _ in batch], ops)
        self.transactions += 1
        if ok:
            for site, events in batch:
                self.cursors[site] = _Cursor(events[-1].seq, rev)
                log.debug("site %s: stored events %d..%d at rev %d", site, events[0].seq, events[-1].seq, rev)
            return
        if len(batch) == 1:
            await self.cursor(batch[0][0])  # another writer stored some: go on after its cursor
            return
        for item in batch:  # find the site(s) another writer moved
            await self._write([item])


# ---------------------------------------------------------------- reading


async def _newest(store: Store, site: str, revision: int, limit: int, f: EventFilter) -> list[SiteEvent]:
    """The newest ``limit`` events of ``site`` that match ``f``, oldest first, as of ``revision``.

    Reads from the newest down and stops at the first event older than
    ``f.since_ms`` (events are in the order the agent recorded them).
    """
    out: list[SiteEvent] = []
    start, end = site_prefix(site), prefix_end(site_prefix(site).encode()).decode()
    if f.site and f.before is not None:
        end = event_key(site, f.before[2])  # one site goes by seq: read below the place directly
    while len(out) < limit:
        kvs, more, _ = await store.get_range(start, end, revision=revision, limit=READ_PAGE, descending=True)
        for kv in kvs:
            e = SiteEvent.decode(kv)
            if e.time_unix_ms < f.since_ms:
                more = False
                break
            if f.matches(e):
                out.append(e)
                if len(out) >= limit:
                    break
        if not more or not kvs:
            break
        end = kvs[-1].key  # exclusive: the keys below the oldest one read
    out.reverse()
    return out


async def list_events(store: Store, f: EventFilter, limit: int = DEFAULT_LIMIT) -> tuple[list[SiteEvent], int]:
    """The newest ``limit`` events matching ``f`` (oldest first) and the etcd revision they were read at."""
    if f.site:
        revision = await store.revision()
        sites = [f.site]
    else:
        kvs, revision = await store.get_prefix(CURSORS)
        sites = [kv.key[len(CURSORS):] for kv in kvs]
    found: list[SiteEvent] = []
    for start in range(0, len(sites), READ_PARALLEL):
        for events in await asyncio.gather(*(_newest(store, s, revision, limit, f)
                                             for s in sites[start:start + READ_PARALLEL])):
            found += events
    if len(sites) > 1:
        found.sort(key=lambda e: (e.time_unix_ms, e.site, e.seq))
    return found[-limit:] if limit else [], revision


# ---------------------------------------------------------------- retention (a leader job)


async def _trim_site(store: Store, site: str, cutoff_ms: int, max_per_site: int) -> int:
    """Delete the site's events older than ``cutoff_ms`` and beyond the newest ``max_per_site``; how many."""
    start, end = site_prefix(site), prefix_end(site_prefix(site).encode()).decode()
    first, _, _ = await store.get_range(start, end, limit=1)
    if not first:
        return 0
    # The first key kept. Only keys actually read bound the delete: events stored meanwhile are newer.
    keep_from = first[0].key
    if cutoff_ms and SiteEvent.decode(first[0]).time_unix_ms < cutoff_ms:
        low = start
        while True:
            kvs, more, _ = await store.get_range(low, end, limit=READ_PAGE)
            recent = next((kv for kv in kvs if SiteEvent.decode(kv).time_unix_ms >= cutoff_ms), None)
            if recent is not None:
                keep_from = recent.key
                break
            if kvs:
                keep_from = kvs[-1].key + "\0"
            if not more or not kvs:
                break
            low = kvs[-1].key + "\0"
    if max_per_site:
        total = await store.count(start)
        if total > max_per_site:
            kvs, _, _ = await store.get_range(start, end, limit=total - max_per_site + 1, keys_only=True)
            boundary = kvs[-1].key if len(kvs) == total - max_per_site + 1 else kvs[-1].key + "\0"
            keep_from = max(keep_from, boundary)
    if keep_from <= first[0].key:
        return 0
    before = await store.count(start)
    await store.txn([], [Delete(start, end=keep_from)])
    return before - await store.count(start)


async def trim_events(store: Store, max_age_s: int, max_per_site: int, now_ms: int | None = None) -> int:
    """Keep each site's newest ``max_per_site`` events, none older than ``max_age_s`` (0: no such bound)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now - max_age_s * 1000 if max_age_s else 0
    kvs, _ = await store.get_prefix(CURSORS)
    removed = 0
    for kv in kvs:
        site = kv.key[len(CURSORS):]
        n = await _trim_site(store, site, cutoff, max_per_site)
        if n:
            log.info("site %s: event history trimmed by %d events", site, n)
        removed += n
    return removed


def trimmer(max_age_s: int, max_per_site: int) -> Callable[[Store], Awaitable[None]]:
    """The leader job that applies --event-retention and --event-max-per-site."""

    async def trim(store: Store) -> None:
        await trim_events(store, max_age_s, max_per_site)

    return trim


# ---------------------------------------------------------------- the API


def event_to_pb(e: SiteEvent) -> epb.Event:
    return epb.Event(site=e.site, seq=e.seq, time_unix_ms=e.time_unix_ms, kind=e.kind, level=e.level,
                     connection=e.connection, message=e.message, revision=e.revision)


def _limit(value: int) -> int:
    if not 0 <= value <= MAX_LIMIT:
        raise InvalidArgument(f"{value} is out of range 0..{MAX_LIMIT} (0: {DEFAULT_LIMIT})", "limit")
    return value or DEFAULT_LIMIT


def _is_place(before: Any) -> bool:
    """A place a ListEvents token may hold: [time_ms, site, seq] (see EventFilter.place)."""
    return (isinstance(before, list) and len(before) == 3 and isinstance(before[0], int)
            and isinstance(before[1], str) and isinstance(before[2], int))


class EventService(events_pb2_grpc.EventServiceServicer):
    """Lists and follows the central event history."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @grpc_errors
    async def ListEvents(  # noqa: N802
        self, request: epb.ListEventsRequest, context: Any
    ) -> epb.ListEventsResponse:
        f = EventFilter(request.site, request.since_unix_ms, request.kind, request.level).check()
        limit = _limit(request.limit)
        if request.page_token:
            before, limit = pieces.back_token(request.page_token, limit, _is_place)
            f = dataclasses.replace(f, before=tuple(before))
        events, revision = await list_events(self.store, f, limit)
        taken, token = pieces.newest_that_fit([event_to_pb(e) for e in events], [list(f.place(e)) for e in events],
                                              limit)
        return epb.ListEventsResponse(events=taken, revision=revision, next_page_token=token)

    async def WatchEvents(  # noqa: N802
        self, request: epb.WatchEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[epb.Event]:
        try:
            f = EventFilter(request.site, request.since_unix_ms, request.kind, request.level).check()
            limit = _limit(request.limit)
            if request.start_revision < 0:
                raise InvalidArgument(f"{request.start_revision} is negative", "start_revision")
            if request.start_revision:
                start = request.start_revision
            elif request.since_unix_ms or request.limit:
                # History read at one revision, then the watch from the next: no gap, no repeat.
                history, revision = await list_events(self.store, f, limit)
                for e in history:
                    yield event_to_pb(e)
                start = revision + 1
            else:
                start = await self.store.revision() + 1
            prefix = site_prefix(f.site) if f.site else EVENTS
            async for _, changes in self.store.watch_prefix(prefix, start):
                for change in changes:
                    # New keys only: a trim deletes, and a repeated write of a stored seq is no new event.
                    if change.deleted or change.kv.create_revision != change.kv.mod_revision:
                        continue
                    e = SiteEvent.decode(change.kv)
                    # Live events pass whatever their time: a site that reconnects delivers what it
                    # recorded while cut off.
                    if f.matches(e, with_since=False):
                        yield event_to_pb(e)
        except IsthmusError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.code_name), exc.message)



async def record(store: Store, kind: str, level: str, message: str, site: str = COORDINATOR_SITE) -> int:
    """Store one event the coordinators raise themselves (e.g. a quota soft limit crossed); returns its seq.

    The next seq after the site's cursor, in one transaction with the cursor: concurrent coordinators never
    store two events under one seq.
    """
    for _ in range(r.MAX_ATTEMPTS):
        cursor = _cursor_value(await store.get(cursor_key(site)))
        seq = cursor.seq + 1
        event = SiteEvent(site, seq, int(time.time() * 1000), kind, level, message[:MAX_MESSAGE])
        ok, _ = await store.txn([mod_is(cursor_key(site), cursor.mod_revision)],
                                [Put(event_key(site, seq), event.encode()),
                                 Put(cursor_key(site), json.dumps({"seq": seq}).encode())])
        if ok:
            return seq
    raise IsthmusError(f"could not record the event {kind}: too many concurrent writers")
