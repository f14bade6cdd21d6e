"""The one place that talks to etcd: a small key-value interface over etcd's v3 gRPC API.

It uses the etcd v3 stubs that ``aetcd`` ships (``aetcd.rpc``) on a grpc.aio
channel of its own, so that transactions return their revision, watches keep
etcd's per-revision grouping, and the client can be swapped here alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
from aetcd import rpc

from isthmus.core.errors import OutOfRange, Unavailable

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


class Store:
    """etcd access: get, range, transactions with revision compares, watches, leases.

    ``endpoints`` are tried in order; on UNAVAILABLE the next one is used.
    """

    def __init__(self, endpoints: Sequence[str], timeout: float = 5.0, tls: EtcdTls | None = None) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.tls = tls
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._index = 0
        self._channel: grpc.aio.Channel | None = None
        self._kv: rpc.KVStub | None = None
        self._lease: rpc.LeaseStub | None = None
        self._watch: rpc.WatchStub | None = None

    @property
    def endpoint(self) -> str:
        return self.endpoints[self._index]

    async def connect(self) -> None:
        """Open the channel and check etcd answers; raises Unavailable naming every endpoint tried."""
        errors = []
        for _ in range(len(self.endpoints)):
            self._open()
            try:
                await self.revision()
                return
            except Unavailable as exc:
                errors.append(f"{self.endpoint}: {exc}")
                await self._rotate()
        raise Unavailable("no etcd endpoint answered: " + "; ".join(errors))

    def _open(self) -> None:
        opener = (functools.partial(grpc.aio.secure_channel, credentials=self.tls.credentials()) if self.tls
                  else grpc.aio.insecure_channel)
        self._channel = opener(
            self.endpoint,
            options=[
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ],
        )
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)

    async def _rotate(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._index = (self._index + 1) % len(self.endpoints)
        self._open()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _call(self, fn_name: str, stub_name: str, request: object) -> object:
        """One unary call; on UNAVAILABLE moves to the next endpoint and tries once more per endpoint."""
        last: grpc.aio.AioRpcError | None = None
        for _ in range(len(self.endpoints)):
            stub = getattr(self, stub_name)
            try:
                return await getattr(stub, fn_name)(request, timeout=self.timeout)
            except grpc.aio.AioRpcError as exc:
                last = exc
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if len(self.endpoints) > 1:
                    log.warning("etcd %s failed (%s); trying the next endpoint", self.endpoint, exc.code().name)
                    await self._rotate()
        assert last is not None
        raise Unavailable(f"etcd at {self.endpoint} is unavailable: {last.details()}") from last

    async def revision(self) -> int:
        resp = await self._call("Range", "_kv", rpc.RangeRequest(key=b"\0", count_only=True))
        return int(resp.header.revision)  # type: ignore[attr-defined]

    async def get(self, key: str) -> KV | None:
        resp = await self._call("Range", "_kv", rpc.RangeRequest(key=key.encode()))
        kvs = resp.kvs  # type: ignore[attr-defined]
        return _kv(kvs[0]) if kvs else None

    async def get_many(self, keys: Sequence[str]) -> list[KV | None]:
        """Several keys in one round trip (one read-only transaction), in the order given."""
        req = rpc.TxnRequest(success=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k.encode())) for k in keys])
        resp = await self._call("Txn", "_kv", req)
        out: list[KV | None] = []
        for r in resp.responses:  # type: ignore[attr-defined]
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
            resp = await self._call("Range", "_kv", req)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                raise OutOfRange(f"etcd cannot read at revision {revision}: {exc.details()}", "revision") from exc
            raise
        return ([_kv(kv) for kv in resp.kvs], bool(resp.more),  # type: ignore[attr-defined]
                int(resp.header.revision))  # type: ignore[attr-defined]

    async def count(self, prefix: str, revision: int = 0) -> int:
        """How many keys are under ``prefix``."""
        req = rpc.RangeRequest(key=prefix.encode(), range_end=prefix_end(prefix.encode()), revision=revision,
                               count_only=True)
        resp = await self._call("Range", "_kv", req)
        return int(resp.count)  # type: ignore[attr-defined]

    async def txn(self, compares: Sequence[Compare], ops: Sequence[Put | Delete]) -> tuple[bool, int]:
        """Apply ``ops`` if every compare holds; returns (succeeded, revision after)."""
        req = rpc.TxnRequest(compare=[_compare_msg(c) for c in compares], success=[_op_msg(o) for o in ops])
        resp = await self._call("Txn", "_kv", req)
        return bool(resp.succeeded), int(resp.header.revision)  # type: ignore[attr-defined]

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        resp = await self._call("Put", "_kv", rpc.PutRequest(key=key.encode(), value=value, lease=lease))
        return int(resp.header.revision)  # type: ignore[attr-defined]

    async def delete(self, key: str) -> int:
        resp = await self._call("DeleteRange", "_kv", rpc.DeleteRangeRequest(key=key.encode()))
        return int(resp.header.revision)  # type: ignore[attr-defined]

    async def compact(self, revision: int) -> None:
        """Drop history before ``revision`` (watches from older revisions then get OutOfRange)."""
        await self._call("Compact", "_kv", rpc.CompactionRequest(revision=revision, physical=True))

    async def grant_lease(self, ttl: int) -> int:
        resp = await self._call("LeaseGrant", "_lease", rpc.LeaseGrantRequest(TTL=ttl))
        return int(resp.ID)  # type: ignore[attr-defined]

    async def refresh_lease(self, lease: int) -> int:
        """Refresh once; returns the remaining TTL (0 or less: the lease is gone)."""
        assert self._lease is not None
        try:
            call = self._lease.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lease)]), timeout=self.timeout)
            async for reply in call:
                return int(reply.TTL)
        except grpc.aio.AioRpcError as exc:
            if len(self.endpoints) > 1 and exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                                          grpc.StatusCode.DEADLINE_EXCEEDED):
                await self._rotate()
            raise Unavailable(f"etcd lease keep-alive failed: {exc.details()}") from exc
        return 0

    async def refresh_leases(self, leases: Sequence[int]) -> dict[int, int]:
        """Refresh many leases over one keep-alive stream; the remaining TTL of each (0 or less: gone)."""
        assert self._lease is not None
        out: dict[int, int] = {}
        if not leases:
            return out
        try:
            call = self._lease.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lease) for lease in leases]),
                                              timeout=self.timeout)
            async for reply in call:
                out[int(reply.ID)] = int(reply.TTL)
                if len(out) == len(set(leases)):
                    break
            call.cancel()
        except grpc.aio.AioRpcError as exc:
            if len(self.endpoints) > 1 and exc.code() in (grpc.StatusCode.UNAVAILABLE,
                                                          grpc.StatusCode.DEADLINE_EXCEEDED):
                await self._rotate()
            raise Unavailable(f"etcd lease keep-alive failed: {exc.details()}") from exc
        return out

    async def revoke_lease(self, lease: int) -> None:
        try:
            await self._call("LeaseRevoke", "_lease", rpc.LeaseRevokeRequest(ID=lease))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise

    async def watch_prefix(
        self, prefix: str, start_revision: int, prev_kv: bool = False
    ) -> AsyncIterator[tuple[int, list[Event]]]:
        """Yield (revision, events of that revision) for keys under ``prefix`` from ``start_revision``.

        Raises OutOfRange when ``start_revision`` is compacted, Unavailable when
        the stream breaks; the caller resumes from its last revision + 1.
        """
        assert self._watch is not None
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

        call = self._watch.Watch(request_iter())
        try:
            async for resp in call:
                if resp.compact_revision:
                    raise OutOfRange(
                        f"revision {start_revision} is compacted; the oldest available is {resp.compact_revision}",
                        "start_revision",
                    )
                if resp.canceled:
                    raise Unavailable(f"etcd canceled the watch: {resp.cancel_reason}")
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
            if len(self.endpoints) > 1:
                await self._rotate()  # the next watch goes to the next member
            raise Unavailable(f"etcd watch broke: {exc.code().name} {exc.details()}") from exc
        finally:
            requests.put_nowait(None)
            call.cancel()
