"""The agent's multisite sync worker: does the coordinator's sync tasks against this region's OpenStack.

The coordinator sends the full list of the site's tasks (keypairs, security
groups, images to make exist, hold or remove); the worker persists it, runs
each task level-based (check, repair, report) and again every interval, so a
rule deleted by hand comes back. What the worker created is written to a
ledger before it is reported; a task that disappears from the list (intent
deleted, region dropped) removes exactly the copies the ledger names, never
anything isthmus did not create. While no coordinator answers, the last list
keeps being enforced and statuses wait to be reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from isthmus.agent.link import TlsFiles, backoff, open_channel
from isthmus.agent.multisite.views import RegionViews
from isthmus.cloud.images import copy_image, list_images, remove_image
from isthmus.cloud.keypairs import ensure_keypair, read_keypair, remove_keypair
from isthmus.cloud.security_groups import (
    GroupSpec,
    ensure_security_group,
    read_security_group,
    remove_security_group,
)
from isthmus.cloud.session import CloudError, SpecError, open_region
from isthmus.core import model as m
from isthmus.core import sync as s
from isthmus.core.files import write_atomically
from isthmus.core.wire import sync as sync_wire
from isthmus.v1 import sync_pb2 as spb
from isthmus.v1 import sync_pb2_grpc

log = logging.getLogger(__name__)

FORMAT = 1
PROGRESS_EVERY = 1.0  # seconds between progress reports of an image copy
RETRY_CAP = 30.0


class Cancelled(Exception):
    """The task was withdrawn while its copy ran (raised from the progress callback)."""


@dataclass(frozen=True)
class CloudConfig:
    """Where the agent reaches OpenStack: a clouds.yaml entry and the region it serves."""

    cloud: str
    region: str
    config_file: str = ""
    source_clouds: tuple[tuple[str, str], ...] = ()  # (source site, clouds.yaml entry) for image sources elsewhere

    def source_cloud(self, site: str) -> str:
        return dict(self.source_clouds).get(site, self.cloud)


def _key(intent: str, resource: str) -> str:
    return f"{intent}\x00{resource}"


class Ledger:
    """``STATE_DIR/sync.json``: the last task list and what isthmus created, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tasks: list[s.SyncTask] = []
        self.revision = 0
        self.created: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        if path.exists():
            d = json.loads(path.read_text())
            if d.get("format") != FORMAT:
                raise ValueError(f"{path}: unknown format {d.get('format')!r}")
            self.tasks = [s.task_from_json(t) for t in d.get("tasks", [])]
            self.revision = int(d.get("revision", 0))
            self.created = dict(d.get("created", {}))

    def save(self) -> None:
        with self._lock:
            body = json.dumps({"format": FORMAT, "revision": self.revision, "tasks": m.to_json(self.tasks),
                               "created": self.created}, sort_keys=True)
            write_atomically(self.path, body)

    def record(self, task: s.SyncTask, target_id: str) -> None:
        entry: dict[str, Any] = {"kind": task.kind.value, "resource": task.resource, "intent": task.intent,
                                 "target_id": target_id, "rollout": task.rollout}
        if task.keypair is not None:
            entry.update(public_key=task.keypair.public_key, user_id=task.keypair.user_id)
        if task.security_group is not None:
            entry.update(project_id=task.security_group.project_id)
        key = _key(task.intent, task.resource)
        if self.created.get(key) != entry:
            self.created[key] = entry
            self.save()

    def forget(self, intent: str, resource: str) -> None:
        if self.created.pop(_key(intent, resource), None) is not None:
            self.save()


class Region:
    """openstacksdk connections per thread (a Connection is not shared between threads)."""

    def __init__(self, config: CloudConfig) -> None:
        self.config = config
        self._local = threading.local()

    def conn(self, cloud: str = "", region: str = "") -> Any:
        key = (cloud or self.config.cloud, region or self.config.region)
        cache: dict[tuple[str, str], Any] = self._local.__dict__.setdefault("conns", {})
        if key not in cache:
            cache[key] = open_region(key[0], key[1], self.config.config_file or None)
        return cache[key]


class SyncWorker:
    def __init__(self, site: str, coordinators: Sequence[str], config: CloudConfig, state_dir: Path,
                 tls: TlsFiles | None = None, interval: float = 60.0, inventory_interval: float = 15.0,
                 workers: int = 4, note: Callable[[str, str], None] | None = None,
                 usage_interval: float = 30.0, address_interval: float = 30.0,
                 capacity_interval: float = 60.0) -> None:
        self.site = site
        self.coordinators = list(coordinators)
        self.config = config
        self.tls = tls or TlsFiles()
        self.interval = interval
        self.inventory_interval = inventory_interval
        self.region = Region(config)
        self.ledger = Ledger(state_dir / "sync.json")
        self.statuses: dict[str, s.SyncStatus] = {}
        self.unsent: dict[str, s.SyncStatus] = {}
        self._runners: dict[str, asyncio.Task[None]] = {}
        self._running: dict[str, s.SyncTask] = {}
        self._threads: dict[str, asyncio.Future[Any]] = {}
        self._withdrawn: set[str] = set()
        self._wakes: dict[str, asyncio.Event] = {}
        self._report = asyncio.Event()
        self._slots = asyncio.Semaphore(workers)
        self.instance_id = uuid.uuid4().hex
        self.connected = False
        self.inventory: list[s.ImageInfo] | None = None
        self._inventory_sent: list[s.ImageInfo] | None = None
        self._inventory_wake = asyncio.Event()
        self.note = note
        self.views = RegionViews(site, self.region.conn, self._report.set, note, usage_interval=usage_interval,
                                 address_interval=address_interval, capacity_interval=capacity_interval)

    # ------------------------------------------------------------ the stream to the coordinators

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        log.info("site %s: sync worker for OpenStack region %s (cloud %s), %d tasks held", self.site,
                 self.config.region, self.config.cloud, len(self.ledger.tasks))
        self.assign(self.ledger.tasks, self.ledger.revision, persist=False)
        inventory = asyncio.create_task(self._inventory_loop(), name="sync-inventory")
        views = asyncio.create_task(self.views.run(), name="region-views")
        attempt, index = 0, 0
        try:
            while True:
                address = self.coordinators[index % len(self.coordinators)]
                index += 1
                try:
                    if await self._session(address):
                        attempt = 0
                        continue
                except grpc.aio.AioRpcError as exc:
                    log.warning("site %s: sync stream to %s: %s: %s", self.site, address, exc.code().name,
                                exc.details())
                except OSError as exc:
                    log.warning("site %s: sync stream to %s: %s", self.site, address, exc)
                finally:
                    self.connected = False
                await asyncio.sleep(backoff(attempt))
                attempt += 1
        finally:
            self._withdrawn.update(self._running)  # copies in flight stop at their next chunk and clean up
            inventory.cancel()
            views.cancel()
            for t in self._runners.values():
                t.cancel()
            await asyncio.gather(inventory, views, *self._runners.values(), return_exceptions=True)

    async def _session(self, address: str) -> bool:
        channel = open_channel(address, self.tls)
        got_any = False
        async with channel:
            call = sync_pb2_grpc.RegionAgentServiceStub(channel).Attach()
            await call.write(spb.RegionUp(hello=spb.RegionHello(site=self.site, region=self.config.region,
                                                                instance_id=self.instance_id)))
            self.unsent = dict(self.statuses)  # a new stream: the coordinator may have missed anything
            self._inventory_sent = None
            self.views.new_stream()
            sender = asyncio.create_task(self._send(call), name="sync-send")
            try:
                while True:
                    msg = await call.read()
                    if msg is grpc.aio.EOF:
                        break
                    if msg.WhichOneof("msg") == "quotas":
                        self.views.assign_quotas(list(msg.quotas.targets))
                    elif msg.WhichOneof("msg") == "assignment":
                        if not got_any:
                            log.info("site %s: sync stream to %s up", self.site, address)
                        got_any = self.connected = True
                        revision = msg.assignment.revision
                        if revision < self.ledger.revision:
                            # Never act on an older view (an etcd restored from an old backup): copies made since
                            # would be removed. Another coordinator may be current.
                            log.warning("site %s: coordinator %s sent sync tasks at rev %d, older than the held rev "
                                        "%d; ignored (remove %s to accept it)", self.site, address, revision,
                                        self.ledger.revision, self.ledger.path)
                            break
                        tasks = [sync_wire.task_from_pb(t) for t in msg.assignment.tasks]
                        self.assign(tasks, revision)
            finally:
                call.cancel()
                sender.cancel()
                await asyncio.gather(sender, return_exceptions=True)
        return got_any

    async def _send(self, call: Any) -> None:
        while True:
            if self._inventory_sent != self.inventory and self.inventory is not None:
                images = self.inventory
                await call.write(spb.RegionUp(inventory=spb.Inventory(
                    images=[sync_wire.to_pb(i, spb.ImageInfo()) for i in images])))
                self._inventory_sent = images
            for report in self.views.take():
                await call.write(report)
            if self.unsent:
                batch, self.unsent = list(self.unsent.values()), {}
                for start in range(0, len(batch), 200):
                    await call.write(spb.RegionUp(report=spb.SyncReport(
                        statuses=[sync_wire.to_pb(x, spb.SyncStatus()) for x in batch[start:start + 200]])))
            self._report.clear()
            await self._report.wait()

    def _note_action(self, task: s.SyncTask, action: str) -> None:
        """A change isthmus made in the region: a central event (the agent's journal), whatever the kind."""
        if self.note is not None:
            self.note("sync", f"{task.kind.value} {task.resource} in {self.config.region} (sync {task.intent}): "
                              f"{action}")

    def _set_status(self, status: s.SyncStatus) -> None:
        key = _key(status.intent, status.resource)
        last = self.statuses.get(key)
        if not status.action and last is not None and last.action:
            # The newest change stays on the row until a newer one: a re-check that found all in place is none.
            status = replace(status, action=last.action, action_unix_ms=last.action_unix_ms)
        if last is not None and replace(last, updated_unix_ms=0) == replace(status, region=self.site,
                                                                            updated_unix_ms=0):
            return  # unchanged: a re-check that found everything in place writes nothing
        status = replace(status, region=self.site, updated_unix_ms=int(time.time() * 1000))
        task = self._running.get(key)
        if status.action and status.action_unix_ms != (last.action_unix_ms if last else 0) and task is not None:
            self._note_action(task, status.action)
        elif self.note is not None and status.state != (last.state if last else None) and status.state in (
                s.State.IN_SYNC, s.State.CONFLICT, s.State.FAILED, s.State.REMOVED):
            self.note("sync", f"sync {status.intent}: {status.resource} {status.state.value}"
                      + (f": {status.error or status.detail}" if status.error or status.detail else ""))
        self.statuses[key] = status
        self.unsent[key] = status
        self._report.set()
        log.log(logging.WARNING if status.state in (s.State.FAILED, s.State.CONFLICT) else logging.DEBUG,
                "site %s: sync %s %s: %s %s", self.site, status.intent, status.resource, status.state.value,
                status.error or status.detail)

    # ------------------------------------------------------------ inventory

    async def _inventory_loop(self) -> None:
        while True:
            try:
                images = sorted(await asyncio.to_thread(lambda: list_images(self.region.conn())), key=lambda x: x.id)
                if images != self.inventory:
                    self.inventory = images
                    self._report.set()
            except (CloudError, SpecError) as exc:
                log.warning("site %s: cannot list the images of %s: %s", self.site, self.config.region, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._inventory_wake.wait(), self.inventory_interval)
            self._inventory_wake.clear()

    # ------------------------------------------------------------ tasks

    def assign(self, tasks: list[s.SyncTask], revision: int, persist: bool = True) -> None:
        """Take the full task list: start new or changed tasks, stop withdrawn ones, remove orphaned copies."""
        if persist and (tasks != self.ledger.tasks or revision != self.ledger.revision):
            self.ledger.tasks, self.ledger.revision = list(tasks), revision
            self.ledger.save()
        wanted = {_key(t.intent, t.resource): t for t in tasks}
        for key in list(self._running):
            if key not in wanted or wanted[key] != self._running[key]:
                self._stop(key)
        for key, task in wanted.items():
            if key not in self._running:  # unchanged tasks keep their pace (a new list is no reason to re-check)
                self._start(key, task)
        for key, entry in list(self.ledger.created.items()):
            if key not in wanted and key not in self._running:
                orphan = s.SyncTask(entry["intent"], s.Kind(entry["kind"]), entry["resource"], s.Action.REMOVE,
                                    reason="no longer wanted")
                self._start(key, orphan, orphan=True)
        for key in list(self.statuses):
            if key not in wanted:
                del self.statuses[key]
                self.unsent.pop(key, None)

    def _stop(self, key: str) -> None:
        self._running.pop(key, None)
        self._withdrawn.add(key)
        runner = self._runners.pop(key, None)
        if runner is not None:
            runner.cancel()

    def _start(self, key: str, task: s.SyncTask, orphan: bool = False) -> None:
        self._running[key] = task
        self._wakes[key] = asyncio.Event()
        self._runners[key] = asyncio.create_task(self._runner(key, task, orphan), name=f"sync-{task.resource}")

    async def _runner(self, key: str, task: s.SyncTask, orphan: bool) -> None:
        attempts = 0
        previous = self._threads.get(key)
        if previous is not None:  # the withdrawn version of this task is still in its thread: let it end
            await asyncio.gather(asyncio.shield(previous), return_exceptions=True)
        self._withdrawn.discard(key)
        while True:
            async with self._slots:
                future = asyncio.ensure_future(asyncio.to_thread(self._do, key, task, attempts))
                self._threads[key] = future
                status = await asyncio.shield(future)
            if orphan:
                if status.action:
                    self._note_action(task, status.action)
                if status.state == s.State.REMOVED:
                    self._running.pop(key, None)
                    self._runners.pop(key, None)
                    return
                log.warning("site %s: cannot remove the copy of %s made for sync %s (no longer wanted): %s; "
                            "retrying", self.site, task.resource, task.intent, status.error or status.detail)
            elif status is not None:
                self._set_status(status)
            attempts = attempts + 1 if status is None or status.state == s.State.FAILED else 0
            delay = self.interval if attempts == 0 else min(RETRY_CAP, backoff(attempts, base=1.0, cap=RETRY_CAP))
            wake = self._wakes[key]
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    def _progress(self, key: str, task: s.SyncTask, attempts: int) -> Callable[[int, int], None]:
        last = [0.0]
        loop = self._loop

        def report(done: int, total: int) -> None:
            if key in self._withdrawn:
                raise Cancelled(f"task {task.intent}/{task.resource} withdrawn")
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY:
                last[0] = now
                status = s.SyncStatus(task.intent, task.resource, self.site, s.State.IN_PROGRESS,
                                      detail=f"copying from {task.source_region}", bytes_done=done,
                                      bytes_total=total, attempts=attempts, wave=task.wave, rollout=task.rollout)
                loop.call_soon_threadsafe(self._set_status, status)

        return report

    _loop: asyncio.AbstractEventLoop

    def _do(self, key: str, task: s.SyncTask, attempts: int) -> s.SyncStatus:
        """One pass of a task, in a worker thread: returns its status (FAILED on an error, retried later)."""
        base = s.SyncStatus(task.intent, task.resource, self.site, s.State.PENDING, attempts=attempts,
                            wave=task.wave, rollout=task.rollout)
        try:
            return self._do_task(key, task, base, attempts)
        except Cancelled as exc:
            return replace(base, state=s.State.HELD, detail=str(exc))
        except SpecError as exc:
            return replace(base, state=s.State.FAILED, error=str(exc), attempts=attempts + 1)
        except CloudError as exc:  # CopyError included
            return replace(base, state=s.State.FAILED, error=str(exc), attempts=attempts + 1)
        except Exception as exc:  # a bug must not end the worker: shown, retried
            log.exception("site %s: sync %s %s failed unexpectedly", self.site, task.intent, task.resource)
            return replace(base, state=s.State.FAILED, error=repr(exc), attempts=attempts + 1)

    def _do_task(self, key: str, task: s.SyncTask, base: s.SyncStatus, attempts: int) -> s.SyncStatus:
        conn = self.region.conn()
        owned = self.ledger.created.get(key)
        if task.action == s.Action.HOLD:
            last = self.statuses.get(key)
            if last is not None and last.state == s.State.IN_SYNC:
                return last
            return replace(base, state=s.State.HELD, detail=task.reason)
        if task.action == s.Action.REMOVE:
            return self._remove(key, task, base, owned)
        if owned is not None and (
                (task.keypair is not None and owned.get("user_id", "") != task.keypair.user_id)
                or (task.security_group is not None
                    and owned.get("project_id", "") != task.security_group.project_id)):
            # The owner changed: the copy made for the old owner goes first; the new one is not assumed ours.
            self._remove(key, replace(task, action=s.Action.REMOVE, reason="owner changed", rollout=""), base,
                         owned)
            owned = None
        if task.source_site and task.source_image is None:
            followed = self._from_source(task)
            if followed is None:
                return self._source_gone(key, task, base, owned)
            task = followed
        if task.keypair is not None:
            kp = task.keypair
            out = ensure_keypair(conn, kp.name, kp.public_key, kp.user_id, replace=kp.replace,
                                 owned=owned is not None)
        elif task.security_group is not None:
            g = task.security_group
            spec = GroupSpec(name=g.name, description=g.description, project_id=g.project_id, rules=g.rules)
            out = ensure_security_group(conn, task.intent, spec, replace=g.replace)
        elif task.source_image is not None:
            src = task.source_image
            source = self.region.conn(self.config.source_cloud(task.source_site), task.source_region)
            out = copy_image(source, conn, src.id, task.intent, rollout=task.rollout, replace=task.replace,
                             progress=self._progress(key, task, attempts))
        else:
            return replace(base, state=s.State.FAILED, error="task without a resource spec (coordinator too new?)")
        # What isthmus made is its to remove later; an adopted group is recorded too, to give it back (untag).
        if out.created or (task.security_group is not None and out.state == s.State.IN_SYNC.value):
            self.ledger.record(task, out.target_id)
        state = s.State(out.state)
        total = task.source_image.size if task.source_image is not None else 0
        return replace(base, state=state, detail=out.detail, target_id=out.target_id,
                       created=out.created or owned is not None, bytes_done=total if state == s.State.IN_SYNC else 0,
                       bytes_total=total, action=out.detail if out.changed else "",
                       action_unix_ms=int(time.time() * 1000) if out.changed else 0)

    def _from_source(self, task: s.SyncTask) -> s.SyncTask | None:
        """The task with the key or the rules the source region has now; None when the source is gone."""
        conn = self.region.conn(self.config.source_cloud(task.source_site), task.source_region)
        if task.keypair is not None:
            kp = task.keypair
            public = read_keypair(conn, kp.source_name or kp.name, kp.user_id)
            return None if public is None else replace(task, keypair=replace(kp, public_key=public))
        if task.security_group is not None:
            g = task.security_group
            source_name = g.source_name or g.name
            got = read_security_group(conn, source_name, g.project_id)
            if got is None:
                return None
            description, rules = got
            # The source group naming itself as remote group names the copy here.
            rules = tuple(replace(r, remote_group=g.name) if r.remote_group == source_name else r for r in rules)
            return replace(task, security_group=replace(g, description=description, rules=rules))
        return task

    def _source_gone(self, key: str, task: s.SyncTask, base: s.SyncStatus,
                     owned: dict[str, Any] | None) -> s.SyncStatus:
        """The keypair or group the intent follows was deleted in the source region: the copy made goes too."""
        spec = task.keypair or task.security_group
        assert spec is not None
        what = f"{task.kind.value} {spec.source_name or spec.name} is gone from {task.source_region}"
        status = base
        if owned is not None:
            status = self._remove(key, replace(task, action=s.Action.REMOVE, reason=what, rollout=""), base, owned)
        return replace(status, state=s.State.SOURCE_GONE, detail=f"{what}: the copy isthmus made is removed")

    def _remove(self, key: str, task: s.SyncTask, base: s.SyncStatus, owned: dict[str, Any] | None) -> s.SyncStatus:
        """Remove the copy isthmus made (for a rollback: only if this rollout made it)."""
        conn = self.region.conn()
        removed = 0
        if owned is not None and (not task.rollout or owned.get("rollout") == task.rollout):
            kind = s.Kind(owned["kind"])
            if kind == s.Kind.KEYPAIR:
                removed = int(remove_keypair(conn, owned["resource"], owned.get("user_id", ""),
                                             owned.get("public_key", "")))
            elif kind == s.Kind.SECURITY_GROUP:
                removed = int(remove_security_group(conn, owned["intent"], owned["resource"],
                                                    owned.get("project_id", "")))
            else:
                # The ledger says the copy is the intent's (one per name), whichever attempt labelled it.
                removed = remove_image(conn, owned["intent"], owned["resource"])
            self.ledger.forget(task.intent, task.resource)
        elif task.kind == s.Kind.IMAGE and task.rollout:
            # A copy interrupted before the ledger knew it: whatever this rollout left under that name.
            removed = remove_image(conn, task.intent, task.resource, task.rollout)
        log.info("site %s: sync %s %s: removed %d copies (%s)", self.site, task.intent, task.resource, removed,
                 task.reason or "rollback")
        done = f"{task.reason or 'removed'}: {removed} {'copy' if removed == 1 else 'copies'} removed"
        if not removed:
            return replace(base, state=s.State.REMOVED, detail=done)
        return replace(base, state=s.State.REMOVED, detail=done, action=f"deleted ({done})",
                       action_unix_ms=int(time.time() * 1000))
