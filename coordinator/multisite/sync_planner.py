"""The sync planner: follows the sync intents, rollouts and statuses in etcd and plans each region's tasks.

Key layout (under ``/isthmus/v1/sync/``)::

    intents/{name}                              SyncIntent JSON
    rollouts/{intent}                           Rollout JSON (controlled image intents)
    status/{intent}/{site}/{resource}           SyncStatus JSON, as the site's agent last reported it
    inventory/{site}                            the images the site's Glance holds, as its agent reports them
    requests/{intent}/{site}/{image}            a lazy copy asked for (``isthmusctl image ensure``)

Every coordinator follows this prefix and keeps it in memory (``SyncPlanner``).
Tasks for a site are a pure function of that view; a controlled rollout moves
on (next wave, failed, rolled back) by a compare-and-swap on its rollout key,
so any number of coordinators may evaluate it and only one write wins. Writes
from the API and from agents are in ``sync_registry``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, unquote

from isthmus.coordinator import registry as r
from isthmus.coordinator.store import KV, Event, Put, Store, mod_is
from isthmus.coordinator.watch import Watcher
from isthmus.core import model as m
from isthmus.core import sync as s
from isthmus.core.errors import Unavailable

log = logging.getLogger(__name__)

SYNC = r.ROOT + "sync/"
INTENTS = SYNC + "intents/"
ROLLOUTS = SYNC + "rollouts/"
STATUSES = SYNC + "status/"
INVENTORY = SYNC + "inventory/"
REQUESTS = SYNC + "requests/"


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


def encode(obj: Any) -> bytes:
    return json.dumps(m.to_json(obj), sort_keys=True, separators=(",", ":")).encode()


@dataclass
class InventoryRecord:
    site: str
    region: str
    images: list[s.ImageInfo] = field(default_factory=list)
    updated_unix_ms: int = 0

    def encode(self) -> bytes:
        return encode(self)

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

    def targets(self, intent: s.SyncIntent) -> tuple[str, ...]:
        """The intent's target sites: as named, or with ``all_regions`` every site whose agent has reported its
        image list (a region that attaches later joins then), but the source."""
        if not intent.all_regions:
            return s.target_regions(intent)
        return tuple(sorted(site for site in self.inventories if site != intent.source))

    def source_waits(self, intent: s.SyncIntent) -> str:
        """Why a keypair or group that follows a source region cannot be done yet ("" when it can)."""
        if intent.source and intent.source not in self.inventories:
            return f"waiting for the agent of the source region {intent.source}"
        return ""

    def tasks_for(self, site: str) -> list[s.SyncTask]:
        tasks: list[s.SyncTask] = []
        for intent in sorted(self.intents.values(), key=lambda i: i.name):
            if site not in self.targets(intent):
                continue
            source = self.inventories.get(intent.source) if intent.source else None
            if intent.image is None and intent.source and source is None:
                continue  # the source region's OpenStack name is not known yet
            region, site_of = (source.region, intent.source) if source is not None else ("", "")
            if intent.keypair is not None:
                tasks.append(s.SyncTask(intent.name, intent.kind, intent.keypair.name, s.Action.ENSURE,
                                        keypair=intent.keypair, source_region=region, source_site=site_of))
            elif intent.security_group is not None:
                g = intent.security_group
                tasks.append(s.SyncTask(intent.name, intent.kind, g.name, s.Action.ENSURE, security_group=g,
                                        source_region=region, source_site=site_of))
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
        if site in ro.skipped:
            return s.Action.HOLD, "skipped by the operator (sync resume --skip-site): no copy", ro.id, wave
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

        def done(site: str, name: str, state: s.State) -> bool:
            got = status(site, name)
            return site in ro.skipped or got is not None and got.state == state

        if ro.state in (st.RUNNING, st.PAUSED):
            for wave in img.waves[:ro.wave + 1]:
                for site in wave.regions:
                    if site in ro.skipped:
                        continue
                    for name in names:
                        got = status(site, name)
                        if got is not None and got.state in (s.State.FAILED, s.State.CONFLICT):
                            error = f"wave {wave.name}: {name} in {site}: {got.state.value}: {got.error or got.detail}"
                            state = st.ROLLING_BACK if img.rollback_on_failure else st.FAILED
                            return replace(ro, state=state, error=error, updated_unix_ms=now_ms())
            if ro.state == st.PAUSED or ro.wave >= len(img.waves):
                return None
            current = img.waves[ro.wave]
            if all(done(site, name, s.State.IN_SYNC) for site in current.regions for name in names):
                nxt = ro.wave + 1
                if nxt >= len(img.waves):
                    return replace(ro, wave=nxt, state=st.DONE, updated_unix_ms=now_ms())
                state = st.PAUSED if img.pause_between_waves else st.RUNNING
                return replace(ro, wave=nxt, state=state, updated_unix_ms=now_ms())
            return None
        if ro.state == st.ROLLING_BACK:
            if all(done(site, name, s.State.REMOVED) for wave in img.waves for site in wave.regions for name in names):
                return replace(ro, state=st.ROLLED_BACK, updated_unix_ms=now_ms())
        return None

    def waiting_for(self, intent: s.SyncIntent) -> list[str]:
        """The sites a running rollout or a rollback waits for (not skipped, not yet IN_SYNC / REMOVED)."""
        img = intent.image
        held = self.rollouts.get(intent.name)
        if img is None or held is None:
            return []
        ro = held[0]
        st = s.RolloutState
        if ro.state == st.ROLLING_BACK:
            sites, want = [r for w in img.waves for r in w.regions], s.State.REMOVED
        elif ro.state == st.RUNNING and ro.wave < len(img.waves):
            sites, want = list(img.waves[ro.wave].regions), s.State.IN_SYNC
        else:
            return []
        names = [i.name for i in source_images(intent, self.inventories.get(img.source_region))]
        out = []
        for site in sites:
            if site in ro.skipped:
                continue
            got = [self.statuses.get((intent.name, site, n)) for n in names] if names else [None]
            if not all(x is not None and x.rollout == ro.id and x.state == want for x in got):
                out.append(site)
        return out

    def _settled(self, intent: s.SyncIntent, got: s.SyncStatus) -> s.SyncStatus:
        """A reported row no task stands behind any more (e.g. a copy of an image no longer selected): when its
        source image is gone from the source region, the row says so whatever the last attempt reported."""
        img = intent.image
        if img is None or img.mode == s.ImageMode.NONE:
            return got
        inventory = self.inventories.get(img.source_region)
        if inventory is None or any(i.name == got.resource for i in inventory.images):
            return got
        return replace(got, state=s.State.SOURCE_GONE, error="",
                       detail=f"the source image was deleted in {img.source_region}: the region's agent removes "
                              "the copy isthmus made")

    def statuses_of(self, intent: s.SyncIntent) -> list[s.SyncStatus]:
        """Every (resource, region) the intent covers, as reported, or PENDING / NONE / HELD when not yet."""
        out: list[s.SyncStatus] = []
        reported = {(k[1], k[2]): v for k, v in self.statuses.items() if k[0] == intent.name}
        targets = self.targets(intent)
        if intent.image is not None and intent.image.mode == s.ImageMode.NONE:
            return [s.SyncStatus(intent.name, "*", site, s.State.NONE, detail="image mode none: nothing is copied")
                    for site in targets]
        expected: list[tuple[str, str, str]] = []  # (site, resource, why pending)
        if intent.keypair is not None:
            expected = [(site, intent.keypair.name, self.source_waits(intent)) for site in targets]
        elif intent.security_group is not None:
            expected = [(site, intent.security_group.name, self.source_waits(intent)) for site in targets]
        elif intent.image is not None:
            inventory = self.inventories.get(intent.image.source_region)
            if inventory is None:
                expected = [(site, "*", f"waiting for the image list of {intent.image.source_region}")
                            for site in targets]
            chosen = source_images(intent, inventory)
            if inventory is not None and not chosen:  # a row, not an empty table (but none beside real rows)
                expected = [(site, "*", f"no active image of {intent.image.source_region} matches the selector yet "
                             f"(its agent's image list: {len(inventory.images)} images)") for site in targets
                            if not any(k[0] == site for k in reported)]
            for img in chosen:
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
            wave = ""
            if intent.image is not None and intent.image.mode == s.ImageMode.CONTROLLED:
                action, reason, _, wave = self._controlled_action(intent, site)
                held = self.rollouts.get(intent.name)
                if held is not None and site in held[0].skipped:
                    state, why = s.State.SKIPPED, ("the rollback went on without it: its agent removes the copy "
                                                   "if it comes back") if action == s.Action.REMOVE else reason
                elif action == s.Action.HOLD:
                    state, why = s.State.HELD, reason
            out.append(s.SyncStatus(intent.name, resource, site, state, detail=why or "waiting for the region's agent",
                                    wave=wave))
        out += [self._settled(intent, v) for k, v in reported.items() if k not in seen]
        return sorted(out, key=lambda x: (x.resource, x.region))


# ---------------------------------------------------------------- the planner (follows etcd)


class SyncPlanner(Watcher[set[str]]):
    """Follows ``/isthmus/v1/sync/`` in etcd; wakes the agents' streams; moves controlled rollouts on."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, SYNC, "sync-planner")
        self.view = SyncView()
        self._site_events: dict[str, asyncio.Event] = {}
        self._status_event = asyncio.Event()

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

    def relist(self, kvs: list[KV], revision: int) -> set[str]:
        """Everything under ``sync/`` at ``revision``; every stream looks at its tasks again, every rollout may
        move on."""
        self.view = SyncView()
        for kv in kvs:
            self._put(kv)
        for event in self._site_events.values():
            event.set()
        log.info("sync planner loaded %d intents at rev %d", len(self.view.intents), revision)
        return set(self.view.intents)

    def apply(self, revision: int, events: list[Event]) -> set[str]:
        """Apply the events of one revision; returns the intents whose rollout may move on."""
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

    async def reconcile(self, names: set[str]) -> None:
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
                                             [Put(rollout_key(name), encode(nxt))])
            except Unavailable as exc:
                log.warning("cannot move rollout %s of %s on: %s", held[0].id, name, exc)
                continue
            if ok:
                log.info("sync %s: rollout %s %s -> %s (wave %d)%s", name, nxt.id, held[0].state.value,
                         nxt.state.value, nxt.wave, f": {nxt.error}" if nxt.error else "")
