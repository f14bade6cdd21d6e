"""Coordinator membership and leader election in etcd, and the periodic jobs only the leader runs.

Each coordinator registers ``coordinators/{id}`` under a lease of its own and
campaigns for ``leader`` with the same lease: a put that succeeds only while
the key is absent. The leader runs the periodic jobs. When it stops (SIGTERM)
it revokes its lease, so another coordinator takes over at once; when it dies,
the lease expires and another one takes over within the lease TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import isthmus
from isthmus.coordinator import border as br
from isthmus.coordinator import registry as r
from isthmus.coordinator.store import Delete, Put, Store, absent, mod_is, prefix_empty
from isthmus.core.errors import IsthmusError, Unavailable

log = logging.getLogger(__name__)

COORDINATORS = r.ROOT + "coordinators/"
LEADER = r.ROOT + "leader"

Job = Callable[[Store], Awaitable[None]]


@dataclass(frozen=True)
class CoordinatorRecord:
    id: str
    address: str
    version: str
    started_ms: int

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes) -> CoordinatorRecord:
        return cls(**json.loads(raw))


class Membership:
    """This coordinator's presence and its campaign for leadership."""

    def __init__(self, store: Store, address: str, ttl: int = 10,
                 jobs: list[tuple[str, float, Job]] | None = None) -> None:
        self.store = store
        self.ttl = ttl
        self.record = CoordinatorRecord(uuid.uuid4().hex[:12], address, isthmus.__version__, int(time.time() * 1000))
        self.jobs = jobs or []
        self.lease = 0
        self.is_leader = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._job_tasks: list[asyncio.Task[None]] = []

    @property
    def id(self) -> str:
        return self.record.id

    async def start(self) -> None:
        await self._register()
        self._tasks = [asyncio.create_task(self._keep_alive(), name="membership-lease"),
                       asyncio.create_task(self._campaign(), name="leader-campaign")]

    async def _register(self) -> None:
        self.lease = await self.store.grant_lease(self.ttl)
        await self.store.put(COORDINATORS + self.id, self.record.encode(), lease=self.lease)

    async def stop(self) -> None:
        """Leave: stop the jobs, drop presence and leadership now so another coordinator takes over."""
        for t in self._job_tasks + self._tasks:
            t.cancel()
        await asyncio.gather(*self._job_tasks, *self._tasks, return_exceptions=True)
        with contextlib.suppress(IsthmusError):
            await self.store.revoke_lease(self.lease)
        if self.is_leader.is_set():
            log.info("coordinator %s resigned leadership", self.id)
        self.is_leader.clear()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                ttl = await self.store.refresh_lease(self.lease)
            except Unavailable as exc:
                log.warning("coordinator %s: cannot refresh its lease (%s)", self.id, exc)
                continue
            if ttl <= 0:
                log.warning("coordinator %s: its lease expired; registering again", self.id)
                self._lose_leadership()
                with contextlib.suppress(IsthmusError):
                    await self._register()

    def _lose_leadership(self) -> None:
        if self.is_leader.is_set():
            log.warning("coordinator %s lost leadership", self.id)
        self.is_leader.clear()
        for t in self._job_tasks:
            t.cancel()
        self._job_tasks = []

    async def _campaign(self) -> None:
        while True:
            try:
                ok, _ = await self.store.txn([absent(LEADER)], [Put(LEADER, self.id.encode(), self.lease)])
                if ok:
                    log.info("coordinator %s (%s) is the leader", self.id, self.record.address)
                    self.is_leader.set()
                    self._job_tasks = [asyncio.create_task(self._run_job(name, every, job), name=f"job-{name}")
                                       for name, every, job in self.jobs]
                await self._wait_leader_gone()
                self._lose_leadership()
            except IsthmusError as exc:
                log.warning("coordinator %s: election: %s", self.id, exc)
                await asyncio.sleep(1.0)

    async def _wait_leader_gone(self) -> None:
        """Return when the leader key is deleted (or its lease expired), or held by someone else than us."""
        kv = await self.store.get(LEADER)
        if kv is None:
            return
        async for _, events in self.store.watch_prefix(LEADER, kv.mod_revision + 1):
            for ev in events:
                if ev.kv.key == LEADER and (ev.deleted or ev.kv.value.decode() != self.id):
                    return

    async def _run_job(self, name: str, every: float, job: Job) -> None:
        while True:
            try:
                await job(self.store)
            except IsthmusError as exc:
                log.warning("leader job %s failed: %s", name, exc)
            except Exception:
                log.exception("leader job %s crashed", name)
            await asyncio.sleep(every)


async def list_coordinators(store: Store) -> tuple[list[CoordinatorRecord], str]:
    """Every registered coordinator and the id of the leader ("" when there is none)."""
    kvs, _ = await store.get_prefix(COORDINATORS)
    leader = await store.get(LEADER)
    return [CoordinatorRecord.decode(kv.value) for kv in kvs], leader.value.decode() if leader else ""


async def collect_garbage(store: Store) -> None:
    """Remove index and reference keys whose connection no longer exists.

    Every API write keeps them consistent in one transaction; this repairs
    what a hand edit of etcd or an interrupted older version may leave.
    """
    removed = 0
    # The connections' own indexes and references (the index also holds the border gateway's: see below).
    for prefix in (r.INDEX + "pair/", r.INDEX + "vni/", r.REFS + "endpoint/"):
        kvs, _ = await store.get_prefix(prefix)
        for kv in kvs:
            name = kv.value.decode() if kv.key.startswith(r.INDEX) else kv.key.rsplit("/", 1)[1]
            conn_key = r.connection_key(name)
            ok, _ = await store.txn([absent(conn_key), mod_is(kv.key, kv.mod_revision)], [Delete(kv.key)])
            if ok:
                removed += 1
                log.warning("garbage collection: removed %s (connection %s does not exist)", kv.key, name)
    # A segmentation id stays bound to its network while an l2-gateway-connection uses it; a device's name
    # stays taken while the device exists.
    bindings, _ = await store.get_prefix(r.SEGMENTS)
    for kv in bindings:
        segment = kv.key.rsplit("/", 1)[1]
        ok, _ = await store.txn([prefix_empty(br.segment_refs(int(segment))), mod_is(kv.key, kv.mod_revision)],
                                [Delete(kv.key)])
        if ok:
            removed += 1
            log.warning("garbage collection: removed %s (no l2-gateway-connection uses segmentation id %s)",
                        kv.key, segment)
    names, _ = await store.get_prefix(r.DEVICE_NAMES)
    for kv in names:
        device = kv.value.decode()
        ok, _ = await store.txn([absent(br.DEVICES + device), mod_is(kv.key, kv.mod_revision)],
                                [Delete(kv.key)])
        if ok:
            removed += 1
            log.warning("garbage collection: removed %s (gateway device %s does not exist)", kv.key, device)
    cells, _ = await store.get_prefix(r.REFS + "site/")
    for kv in cells:
        cell = kv.key.rsplit("/", 1)[1]
        ok, _ = await store.txn([absent(r.site_key(cell)), mod_is(kv.key, kv.mod_revision)], [Delete(kv.key)])
        if ok:
            removed += 1
            log.warning("garbage collection: removed %s (site %s does not exist)", kv.key, cell)
    if removed:
        log.info("garbage collection removed %d orphaned keys", removed)
