"""The one loop every planner of the coordinator runs: list an etcd prefix, follow its watch, reconcile.

A ``Watcher`` lists its prefix at one revision and builds its view from that listing (``relist``), then
follows the watch from the next revision, one revision at a time (``apply``). When etcd has compacted the
revision it would resume from, it lists again and rebuilds the view: whatever changed in the gap is in the
new listing. When the watch breaks, it resumes after the last revision it applied. After each listing and
each revision the view's revision moves on, and then ``reconcile`` acts on the state as it now is, never on
an event's payload alone. (client-go's informers: one reflector, many handlers.)
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from isthmus.coordinator.store import KV, Event, Store
from isthmus.core.errors import OutOfRange, Unavailable

log = logging.getLogger(__name__)

W = TypeVar("W")  # what a listing or a revision leaves for ``reconcile`` to do

RESUME_FIRST = 0.2  # seconds before resuming a broken watch, doubled at each failure in a row ...
RESUME_MAX = 5.0  # ... up to this
RELIST_RETRY = 1.0  # seconds between attempts to list again while etcd is unreachable


class Watcher(ABC, Generic[W]):
    """Keeps a view of everything under ``prefix`` in etcd, at ``revision``, and reconciles on each change."""

    def __init__(self, store: Store, prefix: str, name: str) -> None:
        self.store = store
        self.prefix = prefix
        self.name = name  # for the logs and the task
        self.revision = 0  # the etcd revision the view is at
        self.reconciled_at = 0  # the revision ``reconcile`` last finished acting on
        self.ready = asyncio.Event()  # set once the first listing is in
        self._advanced = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ what a planner provides

    @abstractmethod
    def relist(self, kvs: list[KV], revision: int) -> W:
        """Replace the whole view with a listing of the prefix at ``revision`` (no I/O).

        ``self.ready`` is not yet set at the first listing and is set at every later one (after a compaction).
        """

    @abstractmethod
    def apply(self, revision: int, events: list[Event]) -> W:
        """Apply the events of one revision to the view (no I/O)."""

    async def reconcile(self, work: W) -> None:
        """Act on the view, now at ``self.revision``, after a listing or a revision (default: nothing)."""

    # ------------------------------------------------------------ the loop

    async def start(self) -> None:
        await self._load()
        self._task = asyncio.create_task(self._follow(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _load(self) -> None:
        kvs, revision = await self.store.get_prefix(self.prefix)
        work = self.relist(kvs, revision)
        await self._advance(revision)
        self.ready.set()
        await self.reconcile(work)
        await self._reconciled(revision)

    async def _follow(self) -> None:
        delay = RESUME_FIRST
        while True:
            try:
                async for revision, events in self.store.watch_prefix(self.prefix, self.revision + 1):
                    work = self.apply(revision, events)
                    await self._advance(revision)
                    await self.reconcile(work)
                    await self._reconciled(revision)
                    delay = RESUME_FIRST
            except OutOfRange as exc:
                log.warning("%s fell behind a compaction (%s); listing %s again", self.name, exc, self.prefix)
                await self._relist_when_possible()
            except Unavailable as exc:
                log.warning("%s lost its etcd watch (%s); resuming from rev %d", self.name, exc, self.revision + 1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESUME_MAX)

    async def _relist_when_possible(self) -> None:
        while True:
            try:
                await self._load()
                return
            except Unavailable as exc:
                log.warning("%s cannot list %s again (%s)", self.name, self.prefix, exc)
                await asyncio.sleep(RELIST_RETRY)

    # ------------------------------------------------------------ waiting

    async def _advance(self, revision: int) -> None:
        # The revision moves first, before any await: whoever the change woke reads the view and its revision
        # together.
        self.revision = max(self.revision, revision)
        async with self._advanced:
            self._advanced.notify_all()

    async def _reconciled(self, revision: int) -> None:
        self.reconciled_at = max(self.reconciled_at, revision)
        async with self._advanced:
            self._advanced.notify_all()

    async def wait_for_revision(self, revision: int, timeout: float, reconciled: bool = False) -> bool:
        """Wait until the view includes ``revision`` (with ``reconciled``: and ``reconcile`` has acted on it, with
        whatever it writes to etcd); False after ``timeout`` seconds."""
        def reached() -> bool:
            return (self.reconciled_at if reconciled else self.revision) >= revision

        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(reached), timeout)
            except TimeoutError:
                return False
        return True
