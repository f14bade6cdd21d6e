"""Writes to the sync state in etcd and the reads the API makes of it: intents, rollouts and lazy copies
(``SyncRegistry``), and the agents' sync streams with what they report (``RegionSessions``)."""

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

from isthmus.coordinator import registry as r
from isthmus.coordinator.agents import LeaseKeeper
from isthmus.coordinator.multisite.sync_planner import (
    INTENTS,
    REQUESTS,
    STATUSES,
    InventoryRecord,
    SyncPlanner,
    encode,
    intent_key,
    inventory_key,
    now_ms,
    request_key,
    rollout_key,
    source_images,
    status_key,
)
from isthmus.coordinator.multisite.views_planner import ATTACHED, ViewsPlanner
from isthmus.coordinator.multisite.views_registry import ViewsRegistry
from isthmus.coordinator.store import KV, Compare, Delete, Put, Store, absent, mod_is, present
from isthmus.core import model as m
from isthmus.core import sync as s
from isthmus.core import views as v
from isthmus.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    IsthmusError,
    NotFound,
)

log = logging.getLogger(__name__)

ENSURE_TIMEOUT = 600
MAX_LIST_WAIT = 600  # seconds ensure may wait for an image to appear in its source's image list
LIST_POLL = 0.5  # seconds between looks at the image lists meanwhile


class ImageNotReady(TimeoutError):
    """An image ensured is not active in the region by the deadline; its copy goes on (gRPC DEADLINE_EXCEEDED)."""


@dataclass
class IntentView:
    """An intent as the API shows it: the status of every resource in every region it covers, its rollout."""

    intent: s.SyncIntent
    statuses: list[s.SyncStatus]
    rollout: s.Rollout | None = None


# ---------------------------------------------------------------- intents (validated, one transaction each)


def _decode_intent(kv: KV) -> s.SyncIntent:
    return s.intent_from_json(json.loads(kv.value), kv.mod_revision)


class _Writes(r.Registry):
    """The API's writes of sync intents, with the request ids of ``r.Registry``: a retried create or delete that
    was in fact done answers what it did, not ALREADY_EXISTS or NOT_FOUND."""

    DECODERS = {INTENTS: _decode_intent}


class SyncRegistry:
    def __init__(self, store: Store, planner: SyncPlanner) -> None:
        self.store = store
        self.planner = planner
        self.writes = _Writes(store)

    async def _check_references(self, intent: s.SyncIntent) -> list[tuple[str, int]]:
        """Every region is a site; named images exist in the source region. Returns (site key, mod rev) read."""
        regions = list(s.target_regions(intent))
        fields = [f"regions[{i}]" for i in range(len(regions))]
        if intent.image is not None and intent.image.mode == s.ImageMode.CONTROLLED:
            fields = [f"image.waves[{i}].regions[{j}]" for i, w in enumerate(intent.image.waves)
                      for j in range(len(w.regions))]
        if intent.source:
            regions.append(intent.source)
            fields.append(f"{intent.kind.value.replace('-', '_')}.source_region")
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

        async def attempt() -> r.Plan:
            if await self.store.get(key) is not None:
                raise AlreadyExists(f"sync {intent.name} already exists", "name")
            read = await self._check_references(intent)
            stored = replace(intent, created_unix_ms=now_ms(), version=0)
            ops: list[Put | Delete] = [Put(key, encode(stored))]
            if intent.image is not None and intent.image.mode == s.ImageMode.CONTROLLED:
                ops.append(Put(rollout_key(intent.name), encode(self._new_rollout())))
            return r.Plan([absent(key), *(mod_is(k, v) for k, v in read)], ops,
                          lambda rev: replace(stored, version=rev))

        where = "all regions" if intent.all_regions else ",".join(s.target_regions(intent))
        made: s.SyncIntent = await self.writes.commit(
            f"sync {intent.name} created ({intent.kind.value} to {where})", attempt)
        return made

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

        async def attempt() -> r.Plan:
            current = await self.get(intent.name)
            if intent.version and intent.version != current.version:
                raise Aborted(f"sync {intent.name} was changed (stored version {current.version}, request version "
                              f"{intent.version}); read it again")
            if intent.kind != current.kind:
                raise InvalidArgument(f"cannot change a {current.kind.value} intent into {intent.kind.value}", "kind")
            read = await self._check_references(intent)
            stored = replace(intent, created_unix_ms=current.created_unix_ms, version=0)
            ops: list[Put | Delete] = [Put(key, encode(stored))]
            if intent.image is not None and intent.image.mode == s.ImageMode.CONTROLLED and (
                    current.image is None or current.image.waves != intent.image.waves
                    or current.image.selector != intent.image.selector):
                ops.append(Put(rollout_key(intent.name), encode(self._new_rollout())))  # a new rollout
            return r.Plan([mod_is(key, current.version), *(mod_is(k, v) for k, v in read)], ops,
                          lambda rev: replace(stored, version=rev))

        done: s.SyncIntent = await self.writes.commit(f"sync {intent.name} updated", attempt)
        return done

    async def delete(self, name: str, version: int) -> int:
        key = intent_key(name)

        async def attempt() -> r.Plan:
            current = await self.get(name)
            if version and version != current.version:
                raise Aborted(f"sync {name} was changed (stored version {current.version}, request version "
                              f"{version}); read it again")
            return r.Plan([mod_is(key, current.version)], [
                Delete(key), Delete(rollout_key(name)), Delete(f"{STATUSES}{name}/", prefix=True),
                Delete(f"{REQUESTS}{name}/", prefix=True)], lambda rev: rev)

        rev: int = await self.writes.commit(f"sync {name} deleted; the regions' agents remove the copies they made",
                                            attempt)
        return rev

    async def control(self, name: str, action: str, skip_sites: Iterable[str] = ()) -> s.Rollout:
        """Pause, resume, abort or roll back a controlled rollout; resume and rollback may also stop waiting for
        ``skip_sites`` (a rollback already under way only takes more sites to skip)."""
        st = s.RolloutState
        allowed = {
            "pause": ({st.RUNNING}, st.PAUSED),
            "resume": ({st.PAUSED, st.FAILED, st.ABORTED}, st.RUNNING),
            "abort": ({st.RUNNING, st.PAUSED, st.FAILED}, st.ABORTED),
            "rollback": ({st.RUNNING, st.PAUSED, st.FAILED, st.ABORTED, st.DONE}, st.ROLLING_BACK),
        }
        if action not in allowed:
            raise InvalidArgument(f"{action!r} is not one of {', '.join(allowed)}", "action")
        skip = list(dict.fromkeys(skip_sites))
        if skip and action not in ("resume", "rollback"):
            raise InvalidArgument(f"only resume and rollback can skip sites, not {action}", "skip_sites")
        sources, target = allowed[action]
        if skip:  # more sites to skip, in the state that is already the target
            sources = sources | {target}
        for _ in range(r.MAX_ATTEMPTS):
            intent = await self.get(name)
            if intent.image is None or intent.image.mode != s.ImageMode.CONTROLLED:
                raise FailedPrecondition(f"sync {name} is not a controlled image rollout", "name")
            targets = s.target_regions(intent)
            for i, site in enumerate(skip):
                if site not in targets:
                    raise InvalidArgument(f"{site} is not in a wave of sync {name} ({', '.join(targets)})",
                                          f"skip_sites[{i}]")
            kv = await self.store.get(rollout_key(name))
            if kv is None:
                raise FailedPrecondition(f"sync {name} has no rollout", "name")
            ro = s.rollout_from_json(json.loads(kv.value))
            if ro.state not in sources:
                raise FailedPrecondition(self._refusal(intent, ro, action, sources), "action")
            new = replace(ro, state=target, updated_unix_ms=now_ms(),
                          error=ro.error if target == st.ROLLING_BACK else "",
                          skipped=tuple(dict.fromkeys([*ro.skipped, *skip])))
            if action == "resume" and ro.state in (st.FAILED, st.ABORTED):
                # A new attempt: the failures reported for the old one must not stop it again at once.
                new = replace(new, id=self._new_rollout().id)
            ok, _ = await self.store.txn([mod_is(rollout_key(name), kv.mod_revision)],
                                         [Put(rollout_key(name), encode(new))])
            if ok:
                log.info("sync %s: rollout %s %s -> %s by request%s", name, ro.id, ro.state.value, target.value,
                         f", no longer waiting for {', '.join(skip)}" if skip else "")
                return new
        raise Aborted(f"sync {name}: too many concurrent changes; try again")

    def _refusal(self, intent: s.SyncIntent, ro: s.Rollout, action: str, sources: set[s.RolloutState]) -> str:
        """Why ``action`` cannot be taken now, and the command that leaves the state the rollout is in."""
        st = s.RolloutState
        text = (f"cannot {action} a rollout that is {ro.state.value} (it must be "
                f"{' or '.join(x.value for x in sorted(sources))})")
        waiting = self.planner.view.waiting_for(intent)
        if ro.state == st.ROLLING_BACK:
            sites = waiting or ["SITE"]
            return (f"{text}; the rollback waits for {', '.join(waiting) or 'the regions to report'}: finish it "
                    f"without them with isthmusctl sync rollback {intent.name} "
                    + " ".join(f"--skip-site {x}" for x in sites)
                    + " (an agent that comes back later still removes its copy)")
        if ro.state in (st.ROLLED_BACK, st.DONE):
            return (f"{text}; it is finished: start a new rollout with isthmusctl sync update {intent.name} "
                    "--wave ..., or delete the intent")
        if ro.state == st.RUNNING and waiting:
            return (f"{text}; wave {ro.wave + 1} waits for {', '.join(waiting)}: go on without them with "
                    f"isthmusctl sync resume {intent.name} " + " ".join(f"--skip-site {x}" for x in waiting)
                    + " (they get no copy)")
        return text

    async def site_guard(self, site: str, force: bool) -> tuple[list[Compare], list[Put | Delete]]:
        """A site the sync intents name cannot be deleted (FailedPrecondition naming them) unless ``force``:
        then the writes that take it out of their regions and waves (an intent left with no region, or whose
        image source it is, is deleted, as ``sync delete`` would). Its image inventory goes either way."""
        kvs, rev = await self.store.get_prefix(INTENTS)
        unchanged = Compare(INTENTS, "mod", "<", rev + 1, prefix=True)  # no intent written since this read
        ops: list[Put | Delete] = [Delete(inventory_key(site))]
        users: list[str] = []
        for kv in kvs:
            intent = s.intent_from_json(json.loads(kv.value), kv.mod_revision)
            source = intent.source == site
            if intent.all_regions and not source:
                ops.append(Delete(f"{STATUSES}{intent.name}/{site}/", prefix=True))  # it was a target, unnamed
                continue
            if site not in s.target_regions(intent) and not source:
                continue
            rollout = self.planner.view.rollouts.get(intent.name)
            users.append(f"{intent.name} ({'image source' if source else 'target'}"
                         + (f", rollout {rollout[0].state.value}" if rollout is not None else "") + ")")
            if force:
                ops += self._settle(intent, site, source, rollout[0] if rollout is not None else None)
        if users and not force:
            raise FailedPrecondition(
                f"site {site} is named by sync intents: {', '.join(users)}; change or delete them first "
                f"(isthmusctl sync update / sync delete), or delete the site with --force: it is taken out of their "
                "regions and waves, and intents left with no region or whose image source it is are deleted", "name")
        if users:
            log.warning("site %s deleted by force: sync intents settled: %s", site, ", ".join(users))
        return [unchanged], ops

    @staticmethod
    def _settle(intent: s.SyncIntent, site: str, source: bool, rollout: s.Rollout | None) -> list[Put | Delete]:
        """The writes that take ``site`` out of ``intent`` (its deletion when nothing is left)."""
        name = intent.name
        regions = tuple(x for x in intent.regions if x != site)
        img = intent.image
        waves = tuple(replace(w, regions=tuple(x for x in w.regions if x != site)) for w in img.waves) if img else ()
        kept = tuple(w for w in waves if w.regions)
        if source or not (regions or kept):
            return [Delete(intent_key(name)), Delete(rollout_key(name)), Delete(f"{STATUSES}{name}/", prefix=True),
                    Delete(f"{REQUESTS}{name}/", prefix=True)]
        changed = replace(intent, regions=regions, image=replace(img, waves=kept) if img is not None else None)
        ops: list[Put | Delete] = [Put(intent_key(name), encode(changed)),
                                   Delete(f"{STATUSES}{name}/{site}/", prefix=True),
                                   Delete(f"{REQUESTS}{name}/{site}/", prefix=True)]
        if rollout is not None and img is not None:
            gone = sum(1 for i, w in enumerate(waves) if not w.regions and i < rollout.wave)
            wave = rollout.wave - gone
            state = rollout.state
            if state == s.RolloutState.RUNNING and wave >= len(kept):
                state = s.RolloutState.DONE
            ops.append(Put(rollout_key(name), encode(replace(
                rollout, wave=wave, state=state, skipped=tuple(x for x in rollout.skipped if x != site)))))
        return ops

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
            if site not in self.planner.view.targets(intent):
                reasons.append(f"sync {intent.name} does not target {site}")
                continue
            for source in source_images(intent, self.planner.view.inventories.get(img.source_region)):
                if image in (source.name, source.id):
                    return intent, source
            reasons.append(f"sync {intent.name} has no active image {image!r} in {img.source_region} that its "
                           "selector matches (one uploaded just now is listed within the agent's "
                           "--inventory-interval: image ensure --wait 30s waits for it; image list --region "
                           f"{img.source_region} shows the list)")
        if intent_name and intent_name not in self.planner.view.intents:
            raise NotFound(f"sync {intent_name} does not exist", "intent")
        why = f" ({'; '.join(reasons)})" if reasons else " (create one: isthmusctl sync create --mode lazy)"
        raise NotFound(f"no lazy or auto image sync lets {image!r} be copied to {site}{why}", "image")

    async def request(self, intent: s.SyncIntent, site: str, image: str) -> None:
        key = request_key(intent.name, site, image)
        await self.store.txn([present(intent_key(intent.name)), absent(key)], [Put(key, b"{}")])

    # ------------------------------------------------------------ reads

    async def _caught_up(self, revision: int, timeout: float = 2.0) -> None:
        """Let the in-memory view reach ``revision`` (a read right after a write sees the write)."""
        await self.planner.wait_for_revision(revision, timeout)

    async def _present(self, sites: Iterable[str]) -> set[str]:
        """The sites whose agent's sync stream is up."""
        names = sorted(set(sites))
        kvs = await self.store.get_many([ATTACHED + x for x in names])
        return {n for n, kv in zip(names, kvs, strict=True) if kv is not None}

    async def view(self, intent: s.SyncIntent) -> IntentView:
        """The intent with its statuses (stale where the region's agent is away) and its rollout."""
        statuses = self.planner.view.statuses_of(intent)
        present = await self._present(x.region for x in statuses)
        held = self.planner.view.rollouts.get(intent.name)
        return IntentView(intent, [replace(x, stale=x.region not in present) for x in statuses],
                          held[0] if held is not None else None)

    async def show(self, name: str) -> IntentView:
        intent = await self.get(name)
        await self._caught_up(intent.version)
        return await self.view(intent)

    async def list_intents(self, kind: str) -> list[s.SyncIntent]:
        """Every intent ("": of every kind), as stored, once the in-memory view has caught up with them."""
        if kind and kind not in {k.value for k in s.Kind}:
            raise InvalidArgument(f"{kind!r} is not one of {', '.join(k.value for k in s.Kind)}", "kind")
        kvs, rev = await self.store.get_prefix(INTENTS)
        await self._caught_up(rev)
        intents = [s.intent_from_json(json.loads(kv.value), kv.mod_revision) for kv in kvs]
        return [i for i in intents if i.kind.value == kind] if kind else intents

    # ------------------------------------------------------------ image ensure

    async def inventory(self, region: str) -> InventoryRecord:
        """The region's images as its agent last listed them."""
        m.check_name(region, "region")
        if await self.store.get(r.site_key(region)) is None:
            raise NotFound(f"region {region} is not a known site", "region")
        held = self.planner.view.inventories.get(region)
        if held is None:
            raise FailedPrecondition(f"the agent of {region} has not reported its images yet (is it running with "
                                     "--os-cloud?)", "region")
        return held

    async def _covering_within(self, image: str, region: str, intent_name: str,
                               wait_seconds: int) -> tuple[s.SyncIntent, s.ImageInfo]:
        """``covering``, waiting up to ``wait_seconds`` for the source's image list to show the image."""
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return self.covering(image, region, intent_name)
            except NotFound:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                await asyncio.sleep(min(LIST_POLL, left))

    async def ensure_image(self, image: str, region: str, intent_name: str, timeout_seconds: int,
                           wait_seconds: int = 0) -> AsyncIterator[tuple[s.SyncStatus, bool]]:
        """Ask for a copy of ``image`` in ``region`` (lazy intents) and follow it: (status, done) each time it
        changes, until it is IN_SYNC. FailedPrecondition on a conflict; ImageNotReady after the timeout."""
        if not image:
            raise InvalidArgument("is required (an image name or id in the source region)", "image")
        m.check_name(region, "region")
        if await self.store.get(r.site_key(region)) is None:
            raise NotFound(f"region {region} is not a known site", "region")
        timeout = timeout_seconds or ENSURE_TIMEOUT
        if timeout < 0:
            raise InvalidArgument(f"{timeout} is negative", "timeout_seconds")
        if not 0 <= wait_seconds <= MAX_LIST_WAIT:
            raise InvalidArgument(f"{wait_seconds} is not in 0..{MAX_LIST_WAIT}", "wait_seconds")
        intent, source = await self._covering_within(image, region, intent_name, wait_seconds)
        if intent.image is not None and intent.image.mode == s.ImageMode.LAZY:
            await self.request(intent, region, source.name)
        deadline = time.monotonic() + timeout
        last: s.SyncStatus | None = None
        while True:
            got = self.planner.view.statuses.get((intent.name, region, source.name))
            if got is not None and got != last:
                last = got
                done = got.state == s.State.IN_SYNC
                yield got, done
                if done:
                    return
                if got.state == s.State.CONFLICT:
                    raise FailedPrecondition(f"image {source.name} in {region}: CONFLICT: {got.detail}")
            elif last is None and got is None:
                last = s.SyncStatus(intent.name, source.name, region, s.State.PENDING,
                                    detail="asked the region's agent for a copy")
                yield last, False
            left = deadline - time.monotonic()
            if left <= 0:
                raise ImageNotReady(f"image {source.name} is not active in {region} after {timeout}s "
                                   f"(last: {last.state.value if last else 'nothing reported'}); the copy goes on")
            await self.planner.status_changed(min(left, 1.0))


# ---------------------------------------------------------------- the agents' sync streams


@dataclass
class _Presence:
    lease: int
    lease_lost: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class QuotaAssignment:
    """The quota targets of the site: every (project, resource) with a global limit."""

    targets: list[v.QuotaTarget]


@dataclass(frozen=True)
class TaskAssignment:
    """The site's sync tasks as planned at ``revision``."""

    revision: int
    tasks: list[s.SyncTask]


class RegionSessions:
    """The agents' sync streams on this coordinator: at most one agent per site, each present in etcd while its
    stream lives (a lease-bound ``views/attached/{site}`` key)."""

    def __init__(self, store: Store, planner: SyncPlanner, views: ViewsPlanner | None = None,
                 lease_ttl: int = 10) -> None:
        self.keeper = LeaseKeeper(store, lease_ttl)
        self.lease_ttl = lease_ttl
        self.store = store
        self.planner = planner
        self.views = views
        self.views_registry = ViewsRegistry(store, views) if views is not None else None
        self.full_seq: dict[str, int] = {}
        self.attached: dict[str, tuple[str, object]] = {}  # site -> (agent instance id, the stream's token)
        self.full_seen: dict[str, set[tuple[str, str]]] = {}

    def open(self, site: str, region: str, instance_id: str) -> RegionSession:
        """Claim the site for a new stream (AlreadyExists while another agent's stream holds it here)."""
        holder = self.attached.get(site)
        if holder is not None and holder[0] != instance_id:
            raise AlreadyExists(f"site {site} already has a sync stream from another agent on this coordinator; "
                                "stop it first")
        session = RegionSession(self, site, region)
        self.attached[site] = (instance_id, session.token)
        return session


class RegionSession:
    """One agent's sync stream: its claim on the site, its presence, what it is told, what it reports."""

    def __init__(self, sessions: RegionSessions, site: str, region: str) -> None:
        self.sessions = sessions
        self.site = site
        self.region = region
        self.token = object()  # this stream's claim on the site: only it may give the site back
        self.presence: _Presence | None = None
        self._lost: asyncio.Task[bool] | None = None

    async def attach(self) -> None:
        """Presence, bound to a lease kept alive while this stream lives: the views show the region stale and
        keep its limits when it goes (its agent's peering stream may well be up)."""
        sessions, site = self.sessions, self.site
        self.presence = _Presence(await sessions.store.grant_lease(sessions.lease_ttl))
        await sessions.store.put(ATTACHED + site, json.dumps({"region": self.region}).encode(), self.presence.lease)
        sessions.keeper.add(self.presence)
        self._lost = asyncio.create_task(self.presence.lease_lost.wait(), name=f"sync-lease-{site}")
        log.info("sync agent of site %s attached (OpenStack region %s)", site, self.region)
        if sessions.views_registry is not None:
            await sessions.views_registry.register_region(site, self.region)
            sessions.full_seq.pop(site, None)  # a new stream: its first address list starts afresh

    def release(self) -> None:
        """Give the site back and stop waiting on the lease, without awaiting: a second cancellation of the
        stream must not leave the site claimed."""
        if self.sessions.attached.get(self.site, ("", None))[1] is self.token:
            del self.sessions.attached[self.site]
        if self._lost is not None:
            self._lost.cancel()

    async def close(self) -> None:
        """End the presence (after ``release``)."""
        if self.presence is not None:
            self.sessions.keeper.remove(self.presence)
            # Shielded: the attached key goes with the lease, even when this stream is cancelled again.
            with contextlib.suppress(IsthmusError, asyncio.CancelledError):
                await asyncio.shield(self.sessions.store.revoke_lease(self.presence.lease))
        log.info("sync agent of site %s detached", self.site)

    async def assignments(self, reader: asyncio.Task[None]) -> AsyncIterator[QuotaAssignment | TaskAssignment]:
        """The quota targets and the task list of the site, each time they change, until the stream ends: its
        ``reader`` stops or its presence lease is lost."""
        assert self._lost is not None
        site, planner, views, lost = self.site, self.sessions.planner, self.sessions.views, self._lost
        changed = planner.site_event(site)
        sent: list[s.SyncTask] | None = None
        sent_quotas: list[v.QuotaTarget] | None = None
        while True:
            changed.clear()
            if views is not None:
                targets = views.quota_targets(site)
                if targets != sent_quotas:
                    sent_quotas = targets
                    yield QuotaAssignment(targets)
            tasks = planner.view.tasks_for(site)
            if tasks != sent:
                sent = tasks
                log.info("site %s: sync assignment of %d tasks at rev %d", site, len(tasks), planner.revision)
                yield TaskAssignment(planner.revision, tasks)
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

    # ------------------------------------------------------------ what the agent reports

    async def report_inventory(self, images: list[s.ImageInfo]) -> None:
        sessions, site, region = self.sessions, self.site, self.region
        record = InventoryRecord(site, region, images, now_ms())
        held = sessions.planner.view.inventories.get(site)
        if held is None or held.images != images or held.region != region:
            await sessions.store.put(inventory_key(site), record.encode())
            log.info("site %s: image inventory of %d images", site, len(images))

    async def report_statuses(self, statuses: list[s.SyncStatus]) -> None:
        sessions, site = self.sessions, self.site
        ops: list[Put | Delete] = []
        for st in statuses:
            if st.region != site:
                log.warning("site %s reported a sync status for region %s; ignored", site, st.region)
                continue
            if st.intent not in sessions.planner.view.intents:
                continue  # deleted meanwhile: its status keys are gone and stay gone
            ops.append(Put(status_key(st.intent, site, st.resource), encode(replace(st, stale=False))))
        for start in range(0, len(ops), 100):
            batch = ops[start:start + 100]
            # Only while the intent exists: a report racing a delete must not resurrect its statuses.
            intents = sorted({o.key[len(STATUSES):].split("/", 1)[0] for o in batch})
            ok, _ = await sessions.store.txn([present(intent_key(i)) for i in intents], batch)
            if not ok:
                for o in batch:
                    name = o.key[len(STATUSES):].split("/", 1)[0]
                    await sessions.store.txn([present(intent_key(name))], [o])

    async def report_usage(self, projects: v.UsageReport) -> None:
        views_registry = self.sessions.views_registry
        if views_registry is None:
            return
        try:
            await views_registry.write_usage(self.site, projects)
        except InvalidArgument as exc:
            log.warning("site %s sent a bad %s report, ignored: %s", self.site, "usage", exc)

    async def report_capacity(self, body: dict[str, Any]) -> None:
        views_registry = self.sessions.views_registry
        if views_registry is None:
            return
        try:
            await views_registry.write_capacity(self.site, body)
        except InvalidArgument as exc:
            log.warning("site %s sent a bad %s report, ignored: %s", self.site, "capacity", exc)

    async def report_addresses(self, report: v.AddressReport) -> None:
        views_registry, sessions, site = self.sessions.views_registry, self.sessions, self.site
        if views_registry is None:
            return
        try:
            if not report.full or report.seq != sessions.full_seq.get(site):
                sessions.full_seen[site] = set()  # a new delta: a full list starts afresh
            sessions.full_seq[site] = report.seq
            n = await views_registry.write_addresses(site, report, sessions.full_seen[site])
            log.debug("site %s: address delta %d (%s): %d writes", site, report.seq,
                      "full" if report.full else "incremental", n)
        except InvalidArgument as exc:
            log.warning("site %s sent a bad %s report, ignored: %s", site, "addresses", exc)
