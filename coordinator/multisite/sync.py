"""Multisite sync on the coordinator: intents in etcd, per-region tasks, statuses, image rollouts.

Key layout (under ``/isthmus/v1/sync/``)::

    intents/{name}                              SyncIntent JSON
    rollouts/{intent}                           Rollout JSON (controlled image intents)
    status/{intent}/{site}/{resource}           SyncStatus JSON, as the site's agent last reported it
    inventory/{site}                            the images the site's Glance holds, as its agent reports them
    requests/{intent}/{site}/{image}            a lazy copy asked for (``isthmusctl image ensure``)

Every coordinator follows this prefix and keeps it in memory (``SyncPlanner``).
Tasks for a site are a pure function of that view; a controlled rollout moves
on (next wave, failed, rolled back) by a compare-and-swap on its rollout key,
so any number of coordinators may evaluate it and only one write wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote

import grpc
import grpc.aio

from isthmus.coordinator import registry as r
from isthmus.coordinator.agents import LeaseKeeper
from isthmus.coordinator.auth import Auth, check_agent
from isthmus.coordinator.multisite.views_planner import ATTACHED, ViewsPlanner
from isthmus.coordinator.multisite.views_registry import ViewsRegistry
from isthmus.coordinator.store import KV, Delete, Event, Put, Store, absent, mod_is, present
from isthmus.core import model as m
from isthmus.core import sync as s
from isthmus.core import views as v
from isthmus.core.edge import grpc_errors
from isthmus.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    IsthmusError,
    NotFound,
    OutOfRange,
    Unavailable,
)
from isthmus.core.wire import sync as sync_wire
from isthmus.core.wire import views as views_wire
from isthmus.v1 import sync_pb2 as spb
from isthmus.v1 import sync_pb2_grpc
from isthmus.v1 import views_pb2 as vpb

log = logging.getLogger(__name__)

SYNC = r.ROOT + "sync/"
INTENTS = SYNC + "intents/"
ROLLOUTS = SYNC + "rollouts/"
STATUSES = SYNC + "status/"
INVENTORY = SYNC + "inventory/"
REQUESTS = SYNC + "requests/"

ENSURE_TIMEOUT = 600


def intent_key(name: str) -> str:
    return INTENTS + name


def rollout_key(intent: str) -> str:
    return ROLLOUTS + intent


def status_key(intent: str, site: str, resource: str) -> str:
    return f"{STATUSES}{intent}/{site}/{quote(resource, safe='')}"


def inventory_key(site: str) -> str:
    return INVENTORY + site


def request_key(intent: str, site: str, image: str) -> str:
    return f"{REQUESTS}{intent}/{site}/{quote(image, safe='')}"


def now_ms() -> int:
    return int(time.time() * 1000)


def _encode(obj: Any) -> bytes:
    return json.dumps(m.to_json(obj), sort_keys=True, separators=(",", ":")).encode()


@dataclass
class InventoryRecord:
    site: str
    region: str
    images: list[s.ImageInfo] = field(default_factory=list)
    updated_unix_ms: int = 0

    def encode(self) -> bytes:
        return _encode(self)

    @classmethod
    def decode(cls, raw: bytes) -> InventoryRecord:
        d = json.loads(raw)
        return cls(site=d["site"], region=d.get("region", ""),
                   images=[i for i in (s.image_info_from_json(x) for x in d.get("images", [])) if i],
                   updated_unix_ms=int(d.get("updated_unix_ms", 0)))


# ---------------------------------------------------------------- planning (pure)


def source_images(intent: s.SyncIntent, inventory: InventoryRecord | None) -> list[s.ImageInfo]:
    """The active images of the source region the intent covers, one per name (the lowest id wins a tie)."""
    assert intent.image is not None
    if inventory is None or intent.image.mode == s.ImageMode.NONE:
        return []
    chosen: dict[str, s.ImageInfo] = {}
    for img in sorted(inventory.images, key=lambda i: i.id):
        if img.status == "active" and s.matches(intent.image.selector, img):
            chosen.setdefault(img.name, img)
    return [chosen[n] for n in sorted(chosen)]


def wave_of(intent: s.SyncIntent, site: str) -> int:
    assert intent.image is not None
    for i, wave in enumerate(intent.image.waves):
        if site in wave.regions:
            return i
    return -1


@dataclass
class SyncView:
    """What the coordinator knows about sync: intents, rollouts, statuses, inventories, lazy requests."""

    intents: dict[str, s.SyncIntent] = field(default_factory=dict)
    rollouts: dict[str, tuple[s.Rollout, int]] = field(default_factory=dict)  # (rollout, mod revision)
    statuses: dict[tuple[str, str, str], s.SyncStatus] = field(default_factory=dict)
    inventories: dict[str, InventoryRecord] = field(default_factory=dict)
    requests: set[tuple[str, str, str]] = field(default_factory=set)

    def tasks_for(self, site: str) -> list[s.SyncTask]:
        tasks: list[s.SyncTask] = []
        for intent in sorted(self.intents.values(), key=lambda i: i.name):
            if site not in s.target_regions(intent):
                continue
            if intent.keypair is not None:
                tasks.append(s.SyncTask(intent.name, intent.kind, intent.keypair.name, s.Action.ENSURE,
                                        keypair=intent.keypair))
            elif intent.security_group is not None:
                g = intent.security_group
                tasks.append(s.SyncTask(intent.name, intent.kind, g.name, s.Action.ENSURE, security_group=g))
            elif intent.image is not None:
                tasks += self._image_tasks(intent, site)
        return tasks

    def _image_tasks(self, intent: s.SyncIntent, site: str) -> list[s.SyncTask]:
        img = intent.image
        assert img is not None
        inventory = self.inventories.get(img.source_region)
        out = []
        action, reason, rollout_id, wave = s.Action.ENSURE, "", "", ""
        if img.mode == s.ImageMode.CONTROLLED:
            action, reason, rollout_id, wave = self._controlled_action(intent, site)
        for source in source_images(intent, inventory):
            if img.mode == s.ImageMode.LAZY and (intent.name, site, source.name) not in self.requests:
                continue
            out.append(s.SyncTask(intent.name, intent.kind, source.name, action, source_image=source,
                                  source_region=inventory.region if inventory else "", source_site=img.source_region,
                                  rollout=rollout_id, wave=wave, reason=reason, replace=img.replace))
        return out

    def _controlled_action(self, intent: s.SyncIntent, site: str) -> tuple[s.Action, str, str, str]:
        assert intent.image is not None
        held = self.rollouts.get(intent.name)
        index = wave_of(intent, site)
        wave = intent.image.waves[index].name
        if held is None:
            return s.Action.HOLD, "the rollout has not started", "", wave
        ro = held[0]
        st = s.RolloutState
        if ro.state in (st.ROLLING_BACK, st.ROLLED_BACK):
            return s.Action.REMOVE, "rolled back", ro.id, wave
        if ro.state in (st.RUNNING, st.DONE) and index <= ro.wave:
            return s.Action.ENSURE, "", ro.id, wave
        # Paused, failed or aborted: finished waves keep their copies; the current one stops where it is.
        if index < ro.wave:
            return s.Action.ENSURE, "", ro.id, wave
        if ro.state in (st.FAILED, st.ABORTED):
            return s.Action.HOLD, f"the rollout is {ro.state.value.lower()}", ro.id, wave
        waiting = intent.image.waves[ro.wave].name if ro.wave < len(intent.image.waves) else "?"
        why = "paused" if ro.state == st.PAUSED else f"waits for wave {waiting}"
        return s.Action.HOLD, f"wave {wave} {why}", ro.id, wave

    def next_rollout(self, intent: s.SyncIntent) -> s.Rollout | None:
        """The rollout's next state from the statuses, or None when it stays as it is."""
        img = intent.image
        held = self.rollouts.get(intent.name)
        if img is None or img.mode != s.ImageMode.CONTROLLED or held is None:
            return None
        ro = held[0]
        st = s.RolloutState
        names = [i.name for i in source_images(intent, self.inventories.get(img.source_region))]
        if not names:
            return None

        def status(site: str, name: str) -> s.SyncStatus | None:
            got = self.statuses.get((intent.name, site, name))
            return got if got is not None and got.rollout == ro.id else None

        if ro.state in (st.RUNNING, st.PAUSED):
            for wave in img.waves[:ro.wave + 1]:
                for site in wave.regions:
                    for name in names:
                        got = status(site, name)
                        if got is not None and got.state in (s.State.FAILED, s.State.CONFLICT):
                            error = f"wave {wave.name}: {name} in {site}: {got.state.value}: {got.error or got.detail}"
                            state = st.ROLLING_BACK if img.rollback_on_failure else st.FAILED
                            return replace(ro, state=state, error=error, updated_unix_ms=now_ms())
            if ro.state == st.PAUSED or ro.wave >= len(img.waves):
                return None
            current = img.waves[ro.wave]
            if all((got := status(site, name)) is not None and got.state == s.State.IN_SYNC
                   for site in current.regions for name in names):
                nxt = ro.wave + 1
                if nxt >= len(img.waves):
                    return replace(ro, wave=nxt, state=st.DONE, updated_unix_ms=now_ms())
                state = st.PAUSED if img.pause_between_waves else st.RUNNING
                return replace(ro, wave=nxt, state=state, updated_unix_ms=now_ms())
            return None
        if ro.state == st.ROLLING_BACK:
            if all((got := status(site, name)) is not None and got.state == s.State.REMOVED
                   for wave in img.waves for site in wave.regions for name in names):
                return replace(ro, state=st.ROLLED_BACK, updated_unix_ms=now_ms())
        return None

    def statuses_of(self, intent: s.SyncIntent) -> list[s.SyncStatus]:
        """Every (resource, region) the intent covers, as reported, or PENDING / NONE / HELD when not yet."""
        out: list[s.SyncStatus] = []
        reported = {(k[1], k[2]): v for k, v in self.statuses.items() if k[0] == intent.name}
        targets = s.target_regions(intent)
        if intent.image is not None and intent.image.mode == s.ImageMode.NONE:
            return [s.SyncStatus(intent.name, "*", site, s.State.NONE, detail="image mode none: nothing is copied")
                    for site in targets]
        expected: list[tuple[str, str, str]] = []  # (site, resource, why pending)
        if intent.keypair is not None:
            expected = [(site, intent.keypair.name, "") for site in targets]
        elif intent.security_group is not None:
            expected = [(site, intent.security_group.name, "") for site in targets]
        elif intent.image is not None:
            inventory = self.inventories.get(intent.image.source_region)
            if inventory is None:
                expected = [(site, "*", f"waiting for the image list of {intent.image.source_region}")
                            for site in targets]
            for img in source_images(intent, inventory):
                for site in targets:
                    if intent.image.mode == s.ImageMode.LAZY and (intent.name, site, img.name) not in self.requests:
                        expected.append((site, img.name, "lazy: copied on first request (isthmusctl image ensure)"))
                    else:
                        expected.append((site, img.name, ""))
        seen = set()
        for site, resource, why in expected:
            seen.add((site, resource))
            got = reported.get((site, resource))
            if got is not None:
                out.append(got)
                continue
            state = s.State.PENDING
            if intent.image is not None and intent.image.mode == s.ImageMode.CONTROLLED:
                action, reason, _, wave = self._controlled_action(intent, site)
                if action == s.Action.HOLD:
                    state, why = s.State.HELD, reason
            out.append(s.SyncStatus(intent.name, resource, site, state, detail=why or "waiting for the region's agent"))
        out += [v for k, v in reported.items() if k not in seen]  # e.g. copies of images no longer selected
        return sorted(out, key=lambda x: (x.resource, x.region))


# ---------------------------------------------------------------- the planner (follows etcd)


class SyncPlanner:
    """Follows ``/isthmus/v1/sync/`` in etcd; wakes the agents' streams; moves controlled rollouts on."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.view = SyncView()
        self.revision = 0
        self._task: asyncio.Task[None] | None = None
        self._site_events: dict[str, asyncio.Event] = {}
        self._status_event = asyncio.Event()
        self.ready = asyncio.Event()

    async def start(self) -> None:
        await self._load()
        self._task = asyncio.create_task(self._follow(), name="sync-planner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def site_event(self, site: str) -> asyncio.Event:
        return self._site_events.setdefault(site, asyncio.Event())

    def wake_all(self) -> None:
        for event in self._site_events.values():
            event.set()

    async def status_changed(self, timeout: float) -> None:
        """Return when any status changes (or after ``timeout``)."""
        event = self._status_event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass

    async def _load(self) -> None:
        kvs, rev = await self.store.get_prefix(SYNC)
        self.view = SyncView()
        for kv in kvs:
            self._put(kv)
        self.revision = rev
        self.ready.set()
        for event in self._site_events.values():
            event.set()
        log.info("sync planner loaded %d intents at rev %d", len(self.view.intents), rev)
        await self._evaluate(list(self.view.intents))

    async def _follow(self) -> None:
        delay = 0.2
        while True:
            try:
                async for revision, events in self.store.watch_prefix(SYNC, self.revision + 1):
                    touched = self.apply(events)
                    self.revision = revision
                    await self._evaluate(touched)
                    delay = 0.2
            except OutOfRange as exc:
                log.warning("sync planner fell behind a compaction (%s); reloading", exc)
                await asyncio.sleep(0.2)
                await self._load()
            except Unavailable as exc:
                log.warning("sync planner lost its etcd watch (%s); resuming from rev %d", exc, self.revision + 1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def apply(self, events: Iterable[Event]) -> set[str]:
        """Apply watch events; returns the intents whose rollout may move on."""
        touched: set[str] = set()
        config = False
        statuses = False
        for e in events:
            key = e.kv.key
            if e.deleted:
                touched |= self._delete(key)
            else:
                touched |= self._put(e.kv)
            if key.startswith(STATUSES):
                statuses = True
            else:
                config = True
        if config:
            for event in self._site_events.values():
                event.set()
        if statuses:
            self._status_event.set()
            self._status_event = asyncio.Event()
        return touched

    def _put(self, kv: KV) -> set[str]:
        key, v = kv.key, self.view
        if key.startswith(INTENTS):
            intent = s.intent_from_json(json.loads(kv.value), kv.mod_revision)
            v.intents[intent.name] = intent
            return {intent.name}
        if key.startswith(ROLLOUTS):
            name = key[len(ROLLOUTS):]
            v.rollouts[name] = (s.rollout_from_json(json.loads(kv.value)), kv.mod_revision)
            return {name}
        if key.startswith(STATUSES):
            st = s.status_from_json(json.loads(kv.value))
            v.statuses[(st.intent, st.region, st.resource)] = st
            return {st.intent}
        if key.startswith(INVENTORY):
            inv = InventoryRecord.decode(kv.value)
            v.inventories[inv.site] = inv
            return {i.name for i in v.intents.values() if i.image is not None and i.image.source_region == inv.site}
        if key.startswith(REQUESTS):
            name, site, image = key[len(REQUESTS):].split("/", 2)
            v.requests.add((name, site, unquote(image)))
        return set()

    def _delete(self, key: str) -> set[str]:
        v = self.view
        if key.startswith(INTENTS):
            v.intents.pop(key[len(INTENTS):], None)
        elif key.startswith(ROLLOUTS):
            v.rollouts.pop(key[len(ROLLOUTS):], None)
        elif key.startswith(STATUSES):
            intent, site, resource = key[len(STATUSES):].split("/", 2)
            v.statuses.pop((intent, site, unquote(resource)), None)
        elif key.startswith(INVENTORY):
            v.inventories.pop(key[len(INVENTORY):], None)
        elif key.startswith(REQUESTS):
            intent, site, image = key[len(REQUESTS):].split("/", 2)
            v.requests.discard((intent, site, unquote(image)))
        return set()

    async def _evaluate(self, names: Iterable[str]) -> None:
        """Move controlled rollouts on; a lost compare means another coordinator did it first."""
        for name in sorted(set(names)):
            intent = self.view.intents.get(name)
            held = self.view.rollouts.get(name)
            if intent is None or held is None:
                continue
            nxt = self.view.next_rollout(intent)
            if nxt is None:
                continue
            try:
                ok, _ = await self.store.txn([mod_is(rollout_key(name), held[1])],
                                             [Put(rollout_key(name), _encode(nxt))])
            except Unavailable as exc:
                log.warning("cannot move rollout %s of %s on: %s", held[0].id, name, exc)
                continue
            if ok:
                log.info("sync %s: rollout %s %s -> %s (wave %d)%s", name, nxt.id, held[0].state.value,
                         nxt.state.value, nxt.wave, f": {nxt.error}" if nxt.error else "")


# ---------------------------------------------------------------- writes (validated, one transaction each)


class SyncRegistry:
    def __init__(self, store: Store, planner: SyncPlanner) -> None:
        self.store = store
        self.planner = planner

    async def _check_references(self, intent: s.SyncIntent) -> list[tuple[str, int]]:
        """Every region is a site; named images exist in the source region. Returns (site key, mod rev) read."""
        regions = list(s.target_regions(intent))
        fields = [f"regions[{i}]" for i in range(len(regions))]
        if intent.image is not None and intent.image.mode == s.ImageMode.CONTROLLED:
            fields = [f"image.waves[{i}].regions[{j}]" for i, w in enumerate(intent.image.waves)
                      for j in range(len(w.regions))]
        if intent.image is not None and intent.image.source_region:
            regions.append(intent.image.source_region)
            fields.append("image.source_region")
        kvs = await self.store.get_many([r.site_key(x) for x in regions])
        for region, fname, kv in zip(regions, fields, kvs, strict=True):
            if kv is None:
                raise NotFound(f"region {region} is not a known site (isthmusctl site list)", fname)
        img = intent.image
        if img is not None and img.mode in (s.ImageMode.LAZY, s.ImageMode.CONTROLLED) and img.selector.names:
            inventory = self.planner.view.inventories.get(img.source_region)
            if inventory is None:
                raise FailedPrecondition(
                    f"the agent of {img.source_region} has not reported its images yet (is it running with "
                    "--os-cloud?); cannot check the image names", "image.source_region")
            known = {i.name for i in inventory.images} | {i.id for i in inventory.images}
            for i, name in enumerate(img.selector.names):
                if name not in known:
                    age = max(0, now_ms() - inventory.updated_unix_ms) // 1000
                    raise NotFound(f"no image {name!r} in region {img.source_region} (its agent's image list: "
                                   f"{len(inventory.images)} images, last changed {age}s ago; an image uploaded "
                                   "just now is listed within --inventory-interval)", f"image.selector.names[{i}]")
        return [(r.site_key(x), kv.mod_revision) for x, kv in zip(regions, kvs, strict=True) if kv is not None]

    async def create(self, intent: s.SyncIntent) -> s.SyncIntent:
        s.validate_intent(intent)
        key = intent_key(intent.name)
        for _ in range(r.MAX_ATTEMPTS):
            read = await self._check_references(intent)
            stored = replace(intent, created_unix_ms=now_ms(), version=0)
            ops: list[Put | Delete] = [Put(key, _encode(stored))]
            if intent.image is not None and intent.image.mode == s.ImageMode.CONTROLLED:
                ops.append(Put(rollout_key(intent.name), _encode(self._new_rollout())))
            ok, rev = await self.store.txn([absent(key), *(mod_is(k, v) for k, v in read)], ops)
            if ok:
                log.info("sync %s created (%s to %s)", intent.name, intent.kind.value,
                         ",".join(s.target_regions(intent)))
                return replace(stored, version=rev)
            if await self.store.get(key) is not None:
                raise AlreadyExists(f"sync {intent.name} already exists", "name")
        raise Aborted(f"sync {intent.name}: too many concurrent changes; try again")

    @staticmethod
    def _new_rollout() -> s.Rollout:
        return s.Rollout(id=uuid.uuid4().hex[:12], state=s.RolloutState.RUNNING, wave=0, updated_unix_ms=now_ms())

    async def get(self, name: str) -> s.SyncIntent:
        kv = await self.store.get(intent_key(name))
        if kv is None:
            raise NotFound(f"sync {name} does not exist", "name")
        return s.intent_from_json(json.loads(kv.value), kv.mod_revision)

    async def update(self, intent: s.SyncIntent) -> s.SyncIntent:
        s.validate_intent(intent)
        key = intent_key(intent.name)
        for _ in range(r.MAX_ATTEMPTS):
            current = await self.get(intent.name)
            if intent.version and intent.version != current.version:
                raise Aborted(f"sync {intent.name} was changed (stored version {current.version}, request version "
                              f"{intent.version}); read it again")
            if intent.kind != current.kind:
                raise InvalidArgument(f"cannot change a {current.kind.value} intent into {intent.kind.value}", "kind")
            read = await self._check_references(intent)
            stored = replace(intent, created_unix_ms=current.created_unix_ms, version=0)
            ops: list[Put | Delete] = [Put(key, _encode(stored))]
            if intent.image is not None and intent.image.mode == s.ImageMode.CONTROLLED and (
                    current.image is None or current.image.waves != intent.image.waves
                    or current.image.selector != intent.image.selector):
                ops.append(Put(rollout_key(intent.name), _encode(self._new_rollout())))  # a new rollout
            ok, rev = await self.store.txn([mod_is(key, current.version), *(mod_is(k, v) for k, v in read)], ops)
            if ok:
                log.info("sync %s updated", intent.name)
                return replace(stored, version=rev)
        raise Aborted(f"sync {intent.name}: too many concurrent changes; try again")

    async def delete(self, name: str, version: int) -> int:
        key = intent_key(name)
        for _ in range(r.MAX_ATTEMPTS):
            current = await self.get(name)
            if version and version != current.version:
                raise Aborted(f"sync {name} was changed (stored version {current.version}, request version "
                              f"{version}); read it again")
            ok, rev = await self.store.txn([mod_is(key, current.version)], [
                Delete(key), Delete(rollout_key(name)), Delete(f"{STATUSES}{name}/", prefix=True),
                Delete(f"{REQUESTS}{name}/", prefix=True)])
            if ok:
                log.info("sync %s deleted; the regions' agents remove the copies they made", name)
                return rev
        raise Aborted(f"sync {name}: too many concurrent changes; try again")

    async def control(self, name: str, action: str) -> s.Rollout:
        st = s.RolloutState
        allowed = {
            "pause": ({st.RUNNING}, st.PAUSED),
            "resume": ({st.PAUSED, st.FAILED, st.ABORTED}, st.RUNNING),
            "abort": ({st.RUNNING, st.PAUSED, st.FAILED}, st.ABORTED),
            "rollback": ({st.RUNNING, st.PAUSED, st.FAILED, st.ABORTED, st.DONE}, st.ROLLING_BACK),
        }
        if action not in allowed:
            raise InvalidArgument(f"{action!r} is not one of {', '.join(allowed)}", "action")
        sources, target = allowed[action]
        for _ in range(r.MAX_ATTEMPTS):
            intent = await self.get(name)
            if intent.image is None or intent.image.mode != s.ImageMode.CONTROLLED:
                raise FailedPrecondition(f"sync {name} is not a controlled image rollout", "name")
            kv = await self.store.get(rollout_key(name))
            if kv is None:
                raise FailedPrecondition(f"sync {name} has no rollout", "name")
            ro = s.rollout_from_json(json.loads(kv.value))
            if ro.state not in sources:
                raise FailedPrecondition(f"cannot {action} a rollout that is {ro.state.value} (it must be "
                                         f"{' or '.join(x.value for x in sorted(sources))})", "action")
            new = replace(ro, state=target, updated_unix_ms=now_ms(),
                          error=ro.error if target == st.ROLLING_BACK else "")
            if action == "resume" and ro.state in (st.FAILED, st.ABORTED):
                # A new attempt: the failures reported for the old one must not stop it again at once.
                new = replace(new, id=self._new_rollout().id)
            ok, _ = await self.store.txn([mod_is(rollout_key(name), kv.mod_revision)],
                                         [Put(rollout_key(name), _encode(new))])
            if ok:
                log.info("sync %s: rollout %s %s -> %s by request", name, ro.id, ro.state.value, target.value)
                return new
        raise Aborted(f"sync {name}: too many concurrent changes; try again")

    def covering(self, image: str, site: str, intent_name: str) -> tuple[s.SyncIntent, s.ImageInfo]:
        """The lazy or auto intent that lets ``image`` be copied to ``site``, and the source image."""
        reasons = []
        for intent in sorted(self.planner.view.intents.values(), key=lambda i: i.name):
            if intent_name and intent.name != intent_name:
                continue
            img = intent.image
            if img is None or img.mode not in (s.ImageMode.LAZY, s.ImageMode.AUTO):
                if intent_name:
                    reasons.append(f"sync {intent.name} is not a lazy or auto image intent")
                continue
            if site not in intent.regions:
                reasons.append(f"sync {intent.name} does not target {site}")
                continue
            for source in source_images(intent, self.planner.view.inventories.get(img.source_region)):
                if image in (source.name, source.id):
                    return intent, source
            reasons.append(f"sync {intent.name} has no active image {image!r} in {img.source_region} that its "
                           "selector matches")
        if intent_name and intent_name not in self.planner.view.intents:
            raise NotFound(f"sync {intent_name} does not exist", "intent")
        why = f" ({'; '.join(reasons)})" if reasons else " (create one: isthmusctl sync create --mode lazy)"
        raise NotFound(f"no lazy or auto image sync lets {image!r} be copied to {site}{why}", "image")

    async def request(self, intent: s.SyncIntent, site: str, image: str) -> None:
        key = request_key(intent.name, site, image)
        await self.store.txn([present(intent_key(intent.name)), absent(key)], [Put(key, b"{}")])


# ---------------------------------------------------------------- gRPC


def intent_to_pb(intent: s.SyncIntent) -> spb.SyncIntent:
    return sync_wire.to_pb(intent, spb.SyncIntent())


def status_to_pb(status: s.SyncStatus) -> spb.SyncStatus:
    return sync_wire.to_pb(status, spb.SyncStatus())


class SyncService(sync_pb2_grpc.SyncServiceServicer):
    def __init__(self, registry: SyncRegistry, store: Store) -> None:
        self.registry = registry
        self.store = store

    @property
    def view(self) -> SyncView:
        return self.registry.planner.view

    async def _present(self, sites: Iterable[str]) -> set[str]:
        """The sites whose agent's sync stream is up."""
        names = sorted(set(sites))
        kvs = await self.store.get_many([ATTACHED + x for x in names])
        return {n for n, kv in zip(names, kvs, strict=True) if kv is not None}

    async def _view(self, intent: s.SyncIntent) -> spb.SyncView:
        statuses = self.view.statuses_of(intent)
        present = await self._present(x.region for x in statuses)
        out = spb.SyncView(intent=intent_to_pb(intent))
        out.statuses.extend(status_to_pb(replace(x, stale=x.region not in present)) for x in statuses)
        held = self.view.rollouts.get(intent.name)
        if held is not None:
            out.rollout.CopyFrom(sync_wire.to_pb(held[0], spb.Rollout()))
        return out

    @grpc_errors
    async def CreateSync(self, request: spb.SyncIntent, context: Any) -> spb.SyncIntent:  # noqa: N802
        return intent_to_pb(await self.registry.create(_intent(request)))

    @grpc_errors
    async def UpdateSync(self, request: spb.SyncIntent, context: Any) -> spb.SyncIntent:  # noqa: N802
        return intent_to_pb(await self.registry.update(_intent(request)))

    @grpc_errors
    async def GetSync(self, request: spb.GetSyncRequest, context: Any) -> spb.SyncView:  # noqa: N802
        intent = await self.registry.get(request.name)
        await self._caught_up(intent.version)
        return await self._view(intent)

    async def _caught_up(self, revision: int, timeout: float = 2.0) -> None:
        """Let the in-memory view reach ``revision`` (a read right after a write sees the write)."""
        deadline = time.monotonic() + timeout
        while self.registry.planner.revision < revision and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    @grpc_errors
    async def ListSyncs(self, request: spb.ListSyncsRequest, context: Any) -> spb.ListSyncsResponse:  # noqa: N802
        from isthmus.coordinator.api import page

        if request.kind and request.kind not in {k.value for k in s.Kind}:
            raise InvalidArgument(f"{request.kind!r} is not one of {', '.join(k.value for k in s.Kind)}", "kind")
        kvs, rev = await self.store.get_prefix(INTENTS)
        await self._caught_up(rev)
        intents = [s.intent_from_json(json.loads(kv.value), kv.mod_revision) for kv in kvs]
        if request.kind:
            intents = [i for i in intents if i.kind.value == request.kind]
        chunk, token = page(intents, lambda i: i.name, request.page_size, request.page_token)
        return spb.ListSyncsResponse(syncs=[await self._view(i) for i in chunk], next_page_token=token)

    @grpc_errors
    async def DeleteSync(self, request: spb.DeleteSyncRequest, context: Any) -> spb.DeleteSyncResponse:  # noqa: N802
        return spb.DeleteSyncResponse(revision=await self.registry.delete(request.name, request.version))

    @grpc_errors
    async def ControlRollout(self, request: spb.ControlRolloutRequest, context: Any) -> spb.Rollout:  # noqa: N802
        return sync_wire.to_pb(await self.registry.control(request.name, request.action), spb.Rollout())

    async def EnsureImage(  # noqa: N802
        self, request: spb.EnsureImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.EnsureImageProgress]:
        try:
            if not request.image:
                raise InvalidArgument("is required (an image name or id in the source region)", "image")
            m.check_name(request.region, "region")
            if await self.store.get(r.site_key(request.region)) is None:
                raise NotFound(f"region {request.region} is not a known site", "region")
            timeout = request.timeout_seconds or ENSURE_TIMEOUT
            if timeout < 0:
                raise InvalidArgument(f"{timeout} is negative", "timeout_seconds")
            intent, source = self.registry.covering(request.image, request.region, request.intent)
            if intent.image is not None and intent.image.mode == s.ImageMode.LAZY:
                await self.registry.request(intent, request.region, source.name)
        except IsthmusError as exc:
            await context.abort(getattr(grpc.StatusCode, exc.code_name), exc.message)
            return
        deadline = time.monotonic() + timeout
        last: s.SyncStatus | None = None
        while True:
            got = self.view.statuses.get((intent.name, request.region, source.name))
            if got is not None and got != last:
                last = got
                done = got.state == s.State.IN_SYNC
                yield spb.EnsureImageProgress(status=status_to_pb(got), done=done)
                if done:
                    return
                if got.state == s.State.CONFLICT:
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                        f"image {source.name} in {request.region}: CONFLICT: {got.detail}")
                    return
            elif last is None and got is None:
                last = s.SyncStatus(intent.name, source.name, request.region, s.State.PENDING,
                                    detail="asked the region's agent for a copy")
                yield spb.EnsureImageProgress(status=status_to_pb(last))
            left = deadline - time.monotonic()
            if left <= 0:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"image {source.name} is not active in {request.region} after {timeout}s "
                                    f"(last: {last.state.value if last else 'nothing reported'}); the copy goes on")
                return
            await self.registry.planner.status_changed(min(left, 1.0))


def _intent(request: spb.SyncIntent) -> s.SyncIntent:
    return sync_wire.intent_from_pb(request)


@dataclass
class _Presence:
    lease: int
    lease_lost: asyncio.Event = field(default_factory=asyncio.Event)


class RegionAgentService(sync_pb2_grpc.RegionAgentServiceServicer):
    """The agents' sync stream: assignments down, statuses and image inventory up."""

    def __init__(self, store: Store, planner: SyncPlanner, auth: Auth | None = None,
                 views: ViewsPlanner | None = None, lease_ttl: int = 10) -> None:
        self.keeper = LeaseKeeper(store, lease_ttl)
        self.lease_ttl = lease_ttl
        self.store = store
        self.planner = planner
        self.auth = auth
        self.views = views
        self.views_registry = ViewsRegistry(store, views) if views is not None else None
        self._full_seq: dict[str, int] = {}
        self.attached: dict[str, tuple[str, object]] = {}  # site -> (agent instance id, the stream's token)
        self._full_seen: dict[str, set[tuple[str, str]]] = {}

    async def Attach(  # noqa: N802
        self, request_iterator: AsyncIterator[spb.RegionUp], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[spb.RegionDown]:
        requests = request_iterator.__aiter__()
        try:
            first = await asyncio.wait_for(requests.__anext__(), timeout=30)
        except (StopAsyncIteration, TimeoutError):
            first = spb.RegionUp()
        if first.WhichOneof("msg") != "hello":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "hello: the agent must send RegionHello first")
        hello = first.hello
        try:
            m.check_name(hello.site, "hello.site")
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        await check_agent(self.auth, context, hello.site, "/isthmus.v1.RegionAgentService/Attach")
        site = hello.site
        holder = self.attached.get(site)
        if holder is not None and holder[0] != hello.instance_id:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS,
                                f"site {site} already has a sync stream from another agent on this coordinator; "
                                "stop it first")
        token = object()  # this stream's claim on the site: only it may give the site back
        self.attached[site] = (hello.instance_id, token)
        presence: _Presence | None = None
        tasks: list[asyncio.Task[Any]] = []
        try:
            # Presence, bound to a lease kept alive while this stream lives: the views show the region stale
            # and keep its limits when it goes (its agent's peering stream may well be up).
            presence = _Presence(await self.store.grant_lease(self.lease_ttl))
            await self.store.put(ATTACHED + site, json.dumps({"region": hello.region}).encode(), presence.lease)
            self.keeper.add(presence)
            lost = asyncio.create_task(presence.lease_lost.wait(), name=f"sync-lease-{site}")
            tasks.append(lost)
            log.info("sync agent of site %s attached (OpenStack region %s)", site, hello.region)
            if self.views_registry is not None:
                await self.views_registry.register_region(site, hello.region)
                self._full_seq.pop(site, None)  # a new stream: its first address list starts afresh
            changed = self.planner.site_event(site)
            reader = asyncio.create_task(self._read(site, hello.region, requests), name=f"sync-read-{site}")
            tasks.append(reader)
            async for msg in self._assignments(site, changed, reader, lost):
                yield msg
        finally:
            # Bookkeeping first, without awaiting: a second cancellation must not leave the site claimed.
            if self.attached.get(site, ("", None))[1] is token:
                del self.attached[site]
            for t in tasks:
                t.cancel()
            if presence is not None:
                self.keeper.remove(presence)
                # Shielded: the attached key goes with the lease, even when this stream is cancelled again.
                with contextlib.suppress(IsthmusError, asyncio.CancelledError):
                    await asyncio.shield(self.store.revoke_lease(presence.lease))
            log.info("sync agent of site %s detached", site)

    async def _assignments(self, site: str, changed: asyncio.Event, reader: asyncio.Task[None],
                           lost: asyncio.Task[Any]) -> AsyncIterator[spb.RegionDown]:
        """The quota targets and the task list of the site, each time they change, until the stream ends."""
        sent: list[s.SyncTask] | None = None
        sent_quotas: list[v.QuotaTarget] | None = None
        while True:
            changed.clear()
            if self.views is not None:
                targets = self.views.quota_targets(site)
                if targets != sent_quotas:
                    sent_quotas = targets
                    yield spb.RegionDown(quotas=vpb.QuotaAssignment(
                        targets=[views_wire.quota_target_to_pb(x) for x in targets]))
            tasks = self.planner.view.tasks_for(site)
            if tasks != sent:
                sent = tasks
                msg = spb.RegionDown(assignment=spb.Assignment(
                    revision=self.planner.revision, tasks=[sync_wire.to_pb(t, spb.SyncTask()) for t in tasks]))
                log.info("site %s: sync assignment of %d tasks at rev %d", site, len(tasks), self.planner.revision)
                yield msg
            waiter = asyncio.create_task(changed.wait())
            done, _ = await asyncio.wait([waiter, reader, lost], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if lost in done:
                log.warning("sync stream of site %s: its presence lease expired (etcd unreachable?)", site)
                return
            if reader in done:
                failure = None if reader.cancelled() else reader.exception()
                if failure is not None:
                    log.warning("sync stream of site %s: %s", site, failure)
                return

    async def _read(self, site: str, region: str, requests: AsyncIterator[spb.RegionUp]) -> None:
        async for msg in requests:
            kind = msg.WhichOneof("msg")
            if kind == "report":
                await self._write_statuses(site, [sync_wire.status_from_pb(x) for x in msg.report.statuses])
            elif kind in ("usage", "addresses", "capacity") and self.views_registry is not None:
                await self._write_view(site, kind, msg)
            elif kind == "inventory":
                images = [sync_wire.image_info_from_pb(x) for x in msg.inventory.images]
                record = InventoryRecord(site, region, images, now_ms())
                held = self.planner.view.inventories.get(site)
                if held is None or held.images != images or held.region != region:
                    await self.store.put(inventory_key(site), record.encode())
                    log.info("site %s: image inventory of %d images", site, len(images))

    async def _write_view(self, site: str, kind: str, msg: spb.RegionUp) -> None:
        assert self.views_registry is not None
        try:
            if kind == "usage":
                await self.views_registry.write_usage(site, views_wire.usage_from_pb(msg.usage))
            elif kind == "capacity":
                await self.views_registry.write_capacity(site, views_wire.capacity_from_pb(msg.capacity))
            else:
                if not msg.addresses.full or msg.addresses.seq != self._full_seq.get(site):
                    self._full_seen[site] = set()  # a new delta: a full list starts afresh
                self._full_seq[site] = msg.addresses.seq
                n = await self.views_registry.write_addresses(site, views_wire.address_report_from_pb(msg.addresses),
                                                              self._full_seen[site])
                log.debug("site %s: address delta %d (%s): %d writes", site, msg.addresses.seq,
                          "full" if msg.addresses.full else "incremental", n)
        except InvalidArgument as exc:
            log.warning("site %s sent a bad %s report, ignored: %s", site, kind, exc)

    async def _write_statuses(self, site: str, statuses: list[s.SyncStatus]) -> None:
        ops: list[Put | Delete] = []
        for st in statuses:
            if st.region != site:
                log.warning("site %s reported a sync status for region %s; ignored", site, st.region)
                continue
            if st.intent not in self.planner.view.intents:
                continue  # deleted meanwhile: its status keys are gone and stay gone
            ops.append(Put(status_key(st.intent, site, st.resource), _encode(replace(st, stale=False))))
        for start in range(0, len(ops), 100):
            batch = ops[start:start + 100]
            # Only while the intent exists: a report racing a delete must not resurrect its statuses.
            intents = sorted({o.key[len(STATUSES):].split("/", 1)[0] for o in batch})
            ok, _ = await self.store.txn([present(intent_key(i)) for i in intents], batch)
            if not ok:
                for o in batch:
                    name = o.key[len(STATUSES):].split("/", 1)[0]
                    await self.store.txn([present(intent_key(name))], [o])
