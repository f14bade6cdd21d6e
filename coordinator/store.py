"""The one place that talks to etcd: a small key-value interface over etcd's v3 gRPC API.

It uses the etcd v3 stubs that ``aetcd`` ships (``aetcd.rpc``) on a grpc.aio
channel of its own, so that transactions return their revision, watches keep
etcd's per-revision grouping, and the client can be swapped here alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from aetcd import rpc

from isthmus.core.edge import answer_by
from isthmus.core.errors import InvalidArgument, IsthmusError, NotFound, OutOfRange, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KV:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int = 0
    version: int = 0  # writes since the key was created


@dataclass(frozen=True)
class Event:
    deleted: bool
    kv: KV  # for a delete: the key, empty value, mod_revision = the revision of the delete
    prev: KV | None = None  # the value before the event, when the watch asked for it


@dataclass(frozen=True)
class Compare:
    key: str
    target: str  # "mod" | "create" | "version"
    op: str  # "==" | ">" | "<" | "!="
    value: int
    prefix: bool = False


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    prefix: bool = False
    end: str = ""  # delete the range [key, end)


def mod_is(key: str, revision: int) -> Compare:
    """The key was last written at ``revision`` (0: the key does not exist)."""
    return Compare(key, "mod", "==", revision)


def absent(key: str) -> Compare:
    return Compare(key, "version", "==", 0)


def present(key: str) -> Compare:
    return Compare(key, "version", ">", 0)


def prefix_empty(prefix: str) -> Compare:
    """No key with this prefix exists (etcd compares every key of the range)."""
    return Compare(prefix, "version", "==", 0, prefix=True)


def prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


_OPS = {
    "==": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}


def _compare_msg(c: Compare) -> rpc.Compare:
    msg = rpc.Compare(key=c.key.encode(), result=_OPS[c.op])
    if c.prefix:
        msg.range_end = prefix_end(c.key.encode())
    if c.target == "mod":
        msg.target = rpc.Compare.MOD
        msg.mod_revision = c.value
    elif c.target == "create":
        msg.target = rpc.Compare.CREATE
        msg.create_revision = c.value
    else:
        msg.target = rpc.Compare.VERSION
        msg.version = c.value
    return msg


def _op_msg(op: Put | Delete) -> rpc.RequestOp:
    if isinstance(op, Put):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease))
    req = rpc.DeleteRangeRequest(key=op.key.encode())
    if op.prefix:
        req.range_end = prefix_end(op.key.encode())
    elif op.end:
        req.range_end = op.end.encode()
    return rpc.RequestOp(request_delete_range=req)


def _kv(kv: rpc.KeyValue) -> KV:
    return KV(kv.key.decode(), kv.value, kv.mod_revision, kv.create_revision, kv.lease, kv.version)


@dataclass(frozen=True)
class EtcdTls:
    """TLS towards etcd: the CA of its certificates, and optionally a client certificate."""

    ca: str
    cert: str = ""
    key: str = ""

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca).read_bytes(),
            private_key=Path(self.key).read_bytes() if self.key else None,
            certificate_chain=Path(self.cert).read_bytes() if self.cert else None,
        )


PREFIX_PAGE = 5000  # keys per etcd range request of get_prefix

# How long one store operation may take, trying every member in turn: well under isthmusctl's default deadline
# (10 s), so that a client hears why etcd failed rather than its own deadline passing.
OPERATION_BOUND = 4.0
# One try on one member. An election after a leader dies takes one to two election timeouts (1 s by default):
# a request stuck on a member that lost its leader is tried again elsewhere while the bound still allows it.
ATTEMPT_TIMEOUT = 1.5
RETRY_FIRST = 0.05  # seconds between rounds over the members, doubled after each round ...
RETRY_MAX = 0.4  # ... up to this
# When fewer than a majority of the members answer at all, no election can succeed until members come back:
# after trying this long, the answer is given at once rather than at the end of the bound.
QUORUM_PATIENCE = 1.0

# etcd's "require leader" metadata: a member without a leader answers UNAVAILABLE "etcdserver: no leader" at once
# instead of holding the request until a deadline, and ends a watch or keep-alive stream when it loses its leader.
REQUIRE_LEADER = (("hasleader", "true"),)

_TIMED_OUT = ("context deadline exceeded", "request timed out", "timed out")


def _transient(exc: grpc.aio.AioRpcError) -> str:
    """What went wrong on one member, in a few words, when another member or a later try may succeed ("" if not)."""
    code = exc.code()
    details = (exc.details() or "").lower()
    if "no leader" in details:
        return "no leader"
    if "leader changed" in details or "leader failure" in details:
        return "its leader changed"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED or any(t in details for t in _TIMED_OUT):
        return "no answer in time"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "overloaded (too many requests)" if "too many requests" in details else "unreachable"
    return ""


def _translate(exc: grpc.aio.AioRpcError, what: str) -> IsthmusError:
    """etcd's answer as the isthmus error it means (never a gRPC error, never UNKNOWN)."""
    code = exc.code()
    details = " ".join((exc.details() or "").split())[:300]
    if code == grpc.StatusCode.OUT_OF_RANGE:
        return OutOfRange(f"etcd cannot read at that revision: {details}", "revision")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"etcd: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "space" in details:
        return Unavailable(f"etcd is out of space ({details}); defragment it or raise its backend quota")
    if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT):
        return InvalidArgument(f"etcd refused the {what}: {details}")
    return Unavailable(f"etcd refused the {what}: {code.name} {details}")


class _Member:
    """The channel and stubs of one etcd member, opened on first use and kept open."""

    def __init__(self, endpoint: str, tls: EtcdTls | None) -> None:
        opener = (functools.partial(grpc.aio.secure_channel, credentials=tls.credentials()) if tls
                  else grpc.aio.insecure_channel)
        self.channel: grpc.aio.Channel = opener(
            endpoint,
            options=[
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                # A member that was down is dialled again soon after it is back.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2_000),
            ],
        )
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)


class Store:
    """etcd access: get, range, transactions with revision compares, watches, leases.

    Every operation gives up within ``timeout`` seconds (failover included), or by the time the API request it
    serves is due (``isthmus.core.edge.answer_by``), with Unavailable naming what is wrong with etcd; sooner when
    fewer than a majority of the members answer at all (QUORUM_PATIENCE). It starts at the member that last
    answered; when that one is unreachable, has no leader or does not answer within ``attempt_timeout``, the
    same request goes to the next member. A write may thus
    reach etcd twice: every write isthmus makes is either a transaction that compares revisions, or one that
    may be applied twice (see ``Registry`` for how a create recognises its own earlier attempt).
    """

    def __init__(self, endpoints: Sequence[str], timeout: float = OPERATION_BOUND, tls: EtcdTls | None = None,
                 attempt_timeout: float = ATTEMPT_TIMEOUT) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.tls = tls
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.attempt_timeout = min(attempt_timeout, timeout)
        self._index = 0
        self._members: dict[int, _Member] = {}
        self._warned = 0.0  # when the last failover was logged as a warning
        self._closed = False

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._index]

    async def connect(self) -> None:
        """Check that etcd answers; raises Unavailable naming every member and what is wrong with it."""
        self._closed = False
        await self.revision()

    def _member(self, index: int) -> _Member:
        if self._closed:
            raise Unavailable("the etcd client is closed (the coordinator is stopping)")
        member = self._members.get(index)
        if member is None:
            member = self._members[index] = _Member(self.endpoints[index], self.tls)
        return member

    def _move_on(self, index: int) -> int:
        """The member after ``index``; later calls start there too (unless another call moved on already)."""
        nxt = (index + 1) % len(self.endpoints)
        if self._index == index:
            self._index = nxt
            if len(self.endpoints) > 1:
                # Once in a while: while etcd has no quorum every request goes round the members.
                quiet = time.monotonic() - self._warned < 5.0
                (log.debug if quiet else log.warning)("etcd member %s failed; using %s", self.endpoints[index],
                                                      self.endpoints[nxt])
                self._warned = self._warned if quiet else time.monotonic()
        return nxt

    async def close(self) -> None:
        self._closed = True
        members, self._members = list(self._members.values()), {}
        for member in members:
            await member.channel.close()

    def _unavailable(self, failures: dict[str, str], started: float) -> Unavailable:
        """Why etcd did not take the request: no leader, no quorum, unreachable members, or no answer in time."""
        problems = list(failures.values())
        answering = [p for p in problems if p != "unreachable"]
        if "no leader" in problems:
            if len(answering) < len(self.endpoints) // 2 + 1 and len(failures) == len(self.endpoints):
                head = (f"etcd has lost quorum: {len(answering)} of {len(self.endpoints)} members answer "
                        "and none has a leader")
            else:
                head = "etcd has no leader (an election is under way, or the members cannot reach each other)"
        elif problems and all(p == "unreachable" for p in problems) and len(failures) == len(self.endpoints):
            head = "no etcd member can be reached"
        elif "no answer in time" in problems:
            head = "etcd did not answer in time (no quorum, or overloaded)"
        else:
            head = "etcd is unavailable"
        members = "; ".join(f"{ep}: {failures.get(ep, 'not tried')}" for ep in self.endpoints)
        return Unavailable(f"{head} ({members}); gave up after {time.monotonic() - started:.1f}s")

    async def _call(self, service: str, method: str, request: object, what: str = "read") -> Any:
        """One unary call, failing over between members within the operation bound; errors translated."""
        started = time.monotonic()
        deadline = min(started + self.timeout, answer_by() or started + self.timeout)
        if deadline - started < 0.05:
            raise Unavailable("etcd was too slow: the request's time ran out before it could be asked again")
        failures: dict[str, str] = {}
        index, tries, pause = self._index, 0, RETRY_FIRST
        while True:
            remaining = deadline - time.monotonic()
            stub = getattr(self._member(index), service)
            try:
                return await getattr(stub, method)(request, timeout=min(self.attempt_timeout, remaining),
                                                   metadata=REQUIRE_LEADER)
            except grpc.aio.AioRpcError as exc:
                problem = _transient(exc)
                if not problem:
                    raise _translate(exc, what) from exc
                failures[self.endpoints[index]] = problem
                last = exc
            tries += 1
            index = self._move_on(index)
            if tries % len(self.endpoints) == 0:  # every member failed once
                answering = sum(1 for p in failures.values() if p != "unreachable")
                if answering <= len(self.endpoints) // 2 and time.monotonic() - started >= QUORUM_PATIENCE:
                    raise self._unavailable(failures, started) from last
                await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic() - 0.05)))
                pause = min(pause * 2, RETRY_MAX)
            if deadline - time.monotonic() < 0.05:
                raise self._unavailable(failures, started) from last

    async def revision(self) -> int:
        resp = await self._call("kv", "Range", rpc.RangeRequest(key=b"\0", count_only=True))
        return int(resp.header.revision)

    async def get(self, key: str) -> KV | None:
        resp = await self._call("kv", "Range", rpc.RangeRequest(key=key.encode()))
        kvs = resp.kvs
        return _kv(kvs[0]) if kvs else None

    async def get_many(self, keys: Sequence[str]) -> list[KV | None]:
        """Several keys in one round trip (one read-only transaction), in the order given."""
        req = rpc.TxnRequest(success=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k.encode())) for k in keys])
        resp = await self._call("kv", "Txn", req)
        out: list[KV | None] = []
        for r in resp.responses:
            kvs = r.response_range.kvs
            out.append(_kv(kvs[0]) if kvs else None)
        return out

    async def get_prefix(self, prefix: str, revision: int = 0, page: int = PREFIX_PAGE) -> tuple[list[KV], int]:
        """Every key under ``prefix`` (sorted by key) and the store revision of the read.

        Read ``page`` keys per request, all at the revision of the first: one consistent snapshot however many
        keys there are (a single response is capped by etcd's message size, 64 MiB at most).
        """
        end = prefix_end(prefix.encode()).decode()
        out: list[KV] = []
        start = prefix
        while True:
            kvs, more, read_at = await self.get_range(start, end, revision=revision, limit=page)
            out += kvs
            revision = revision or read_at
            if not more or not kvs:
                return out, revision
            start = kvs[-1].key + "\x00"

    async def get_range(self, key: str, end: str, *, revision: int = 0, limit: int = 0, descending: bool = False,
                        keys_only: bool = False) -> tuple[list[KV], bool, int]:
        """Keys in [key, end) in key order (or reversed), at most ``limit`` (0: all).

        Returns the keys, whether more are in the range, and the store revision
        of the read; ``revision`` reads the past (OutOfRange when compacted).
        """
        req = rpc.RangeRequest(key=key.encode(), range_end=end.encode(), revision=revision, limit=limit,
                               keys_only=keys_only, sort_target=rpc.RangeRequest.KEY,
                               sort_order=rpc.RangeRequest.DESCEND if descending else rpc.RangeRequest.ASCEND)
        try:
            resp = await self._call("kv", "Range", req)
        except OutOfRange as exc:
            cause = exc.__cause__
            details = cause.details() if isinstance(cause, grpc.aio.AioRpcError) else str(exc)
            raise OutOfRange(f"etcd cannot read at revision {revision}: {details}", "revision") from cause
        return [_kv(kv) for kv in resp.kvs], bool(resp.more), int(resp.header.revision)

    async def count(self, prefix: str, revision: int = 0) -> int:
        """How many keys are under ``prefix``."""
        req = rpc.RangeRequest(key=prefix.encode(), range_end=prefix_end(prefix.encode()), revision=revision,
                               count_only=True)
        resp = await self._call("kv", "Range", req)
        return int(resp.count)

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> tuple[bool, int]:
        """Apply ``ops`` if every compare holds; returns (succeeded, revision after)."""
        req = rpc.TxnRequest(compare=[_compare_msg(c) for c in compares], success=[_op_msg(o) for o in ops])
        resp = await self._call("kv", "Txn", req, "write" if ops else "read")
        return bool(resp.succeeded), int(resp.header.revision)

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        resp = await self._call("kv", "Put", rpc.PutRequest(key=key.encode(), value=value, lease=lease), "write")
        return int(resp.header.revision)

    async def delete(self, key: str) -> int:
        resp = await self._call("kv", "DeleteRange", rpc.DeleteRangeRequest(key=key.encode()), "write")
        return int(resp.header.revision)

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (watches from older revisions then get OutOfRange)."""
        try:
            await self._call("kv", "Compact", rpc.CompactionRequest(revision=revision, physical=True), "compaction")
        except OutOfRange:
            pass  # compacted already (an earlier try that timed out, or another coordinator)

    async def grant_lease(self, ttl: int) -> int:
        resp = await self._call("lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl), "lease grant")
        return int(resp.ID)

    async def refresh_lease(self, lease: int) -> int:
        """Refresh once; returns the remaining TTL (0 or less: the lease is gone)."""
        return (await self.refresh_leases([lease])).get(lease, 0)

    async def refresh_leases(self, leases: Sequence[int]) -> dict[int, int]:
        """Refresh many leases over one keep-alive stream; the remaining TTL of each (0 or less: gone).

        One try on the current member within the attempt timeout; Unavailable (and the next call goes to the
        next member) when it fails. Callers keep a lease alive by calling again well within its TTL.
        """
        out: dict[int, int] = {}
        if not leases:
            return out
        index, started = self._index, time.monotonic()
        call = self._member(index).lease.LeaseKeepAlive(
            iter([rpc.LeaseKeepAliveRequest(ID=lease) for lease in leases]), timeout=self.attempt_timeout,
            metadata=REQUIRE_LEADER)
        try:
            async for reply in call:
                out[int(reply.ID)] = int(reply.TTL)
                if len(out) == len(set(leases)):
                    break
        except grpc.aio.AioRpcError as exc:
            problem = _transient(exc)
            if not problem:
                raise _translate(exc, "lease keep-alive") from exc
            self._move_on(index)
            raise self._unavailable({self.endpoints[index]: problem}, started) from exc
        finally:
            call.cancel()
        return out

    async def revoke_lease(self, lease: int) -> None:
        with contextlib.suppress(NotFound):  # expired or revoked already
            await self._call("lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease), "lease revoke")

    async def watch_prefix(
        self, prefix: str, start_revision: int, prev_kv: bool = False
    ) -> AsyncIterator[tuple[int, list[Event]]]:
        """Yield (revision, events of that revision) for keys under ``prefix`` from ``start_revision``.

        Raises OutOfRange when ``start_revision`` is compacted, Unavailable when the stream breaks (the member
        went away or lost its leader: etcd ends the watch then); the next watch goes to the next member, and the
        caller resumes from its last revision + 1.
        """
        create = rpc.WatchCreateRequest(
            key=prefix.encode(),
            range_end=prefix_end(prefix.encode()),
            start_revision=start_revision,
            progress_notify=True,
            prev_kv=prev_kv,
        )
        requests: asyncio.Queue[rpc.WatchRequest | None] = asyncio.Queue()
        requests.put_nowait(rpc.WatchRequest(create_request=create))

        async def request_iter() -> AsyncIterator[rpc.WatchRequest]:
            while True:
                item = await requests.get()
                if item is None:
                    return
                yield item

        index = self._index
        call = self._member(index).watch.Watch(request_iter(), metadata=REQUIRE_LEADER)
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise OutOfRange(
                        f"revision {start_revision} is compacted; the oldest available is {resp.compact_revision}",
                        "start_revision",
                    )
                if resp.canceled:
                    self._move_on(index)
                    raise Unavailable(f"etcd ended the watch at {self.endpoints[index]}: {resp.cancel_reason}")
                if not resp.events:
                    continue
                batch: list[Event] = []
                revision = 0
                for ev in resp.events:
                    kv = _kv(ev.kv)
                    if kv.mod_revision != revision and batch:
                        yield revision, batch
                        batch = []
                    revision = kv.mod_revision
                    prev = _kv(ev.prev_kv) if ev.HasField("prev_kv") else None
                    batch.append(Event(ev.type == rpc.Event.DELETE, kv, prev))
                if batch:
                    yield revision, batch
        except grpc.aio.AioRpcError as exc:
            self._move_on(index)  # the next watch goes to the next member
            problem = _transient(exc) or f"{exc.code().name} {exc.details()}"
            raise Unavailable(f"etcd watch at {self.endpoints[index]} broke: {problem}") from exc
        finally:
            requests.put_nowait(None)
            call.cancel()
