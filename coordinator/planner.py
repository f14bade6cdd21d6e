"""The planner: follows the configuration in etcd and keeps each site's desired peerings.

It loads ``config/`` at one revision, then follows the watch from the next one
(``isthmus.coordinator.watch``). After each revision it recomputes the desired
peerings of the sites that revision touched and wakes whoever waits on those
sites (agent sessions). Every coordinator runs its own planner; the result
depends only on etcd's content, so all of them agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

from isthmus.coordinator import border as br
from isthmus.coordinator import registry as r
from isthmus.coordinator.revisions import DesiredRevisions
from isthmus.coordinator.store import KV, Event, Store
from isthmus.coordinator.watch import Watcher
from isthmus.core import border as b
from isthmus.core import model as m
from isthmus.core.topology import plan_site  # the rule from connections to peerings, shared with isthmusctl plan

log = logging.getLogger(__name__)


@dataclass
class ConfigSnapshot:
    """The whole configuration as it was at one revision, decoded."""

    endpoints: dict[m.EndpointRef, m.Endpoint] = field(default_factory=dict)
    connections: list[m.Connection] = field(default_factory=list)
    devices: dict[str, b.GatewayDevice] = field(default_factory=dict)
    gateways: dict[str, b.L2Gateway] = field(default_factory=dict)
    l2conns: list[b.L2GatewayConnection] = field(default_factory=list)

    def plan(self, site: str) -> dict[str, m.DesiredPeering]:
        conns = [c for c in self.connections if site in (c.a.site, c.b.site)]
        peerings = plan_site(site, conns, self.endpoints)
        peerings.update(b.plan_tunnels(site, self.devices, self.gateways, self.l2conns))
        return peerings


_SNAPSHOTS: OrderedDict[tuple[int, int], asyncio.Future[ConfigSnapshot]] = OrderedDict()
_SNAPSHOTS_KEPT = 8


async def snapshot_at(store: Store, revision: int) -> ConfigSnapshot:
    """The configuration at ``revision``, read once however many agents resume from it at the same time."""
    key = (id(store), revision)
    fut = _SNAPSHOTS.get(key)
    if fut is None:
        fut = asyncio.ensure_future(_read_snapshot(store, revision))
        _SNAPSHOTS[key] = fut
        while len(_SNAPSHOTS) > _SNAPSHOTS_KEPT:
            _SNAPSHOTS.popitem(last=False)
    try:
        return await asyncio.shield(fut)
    except Exception:
        _SNAPSHOTS.pop(key, None)  # do not remember a failure
        raise


async def _read_snapshot(store: Store, revision: int) -> ConfigSnapshot:
    kvs, _ = await store.get_prefix(r.CONFIG, revision=revision)
    snap = ConfigSnapshot()
    for kv in kvs:
        if kv.key.startswith(r.ENDPOINTS):
            ep = r.decode_endpoint(kv)
            snap.endpoints[ep.ref] = ep
        elif kv.key.startswith(r.CONNECTIONS):
            snap.connections.append(r.decode_connection(kv))
        elif kv.key.startswith(br.DEVICES):
            dev = br.decode_device(kv)
            snap.devices[dev.id] = dev
        elif kv.key.startswith(br.GATEWAYS):
            gw = br.decode_gateway(kv)
            snap.gateways[gw.id] = gw
        elif kv.key.startswith(br.L2CONNECTIONS):
            snap.l2conns.append(br.decode_l2conn(kv))
    return snap


async def plan_at(store: Store, site: str, revision: int) -> dict[str, m.DesiredPeering]:
    """The site's desired peerings as they were at ``revision`` (OutOfRange if compacted or in the future)."""
    return (await snapshot_at(store, revision)).plan(site)


LOG_SITES = 20  # sites a log line names; more are counted
SETTLE_PAUSE = 0.5  # seconds between two settles of the desired revisions (the first after a quiet spell: at once)
SETTLE_ON_STOP = 2.0  # seconds a starting or stopping planner waits for its changes to be recorded


class Planner(Watcher[set[str]]):
    """In-memory view of the configuration and the per-site desired peerings derived from it."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, r.CONFIG, "planner")
        self.sites: dict[str, m.Site] = {}
        self.endpoints: dict[m.EndpointRef, m.Endpoint] = {}
        self.connections: dict[str, m.Connection] = {}
        self.devices: dict[str, b.GatewayDevice] = {}
        self.gateways: dict[str, b.L2Gateway] = {}
        self.l2conns: dict[str, b.L2GatewayConnection] = {}
        self._by_site: dict[str, set[str]] = defaultdict(set)  # site -> connection names touching it
        self.peerings: dict[str, dict[str, m.DesiredPeering]] = {}
        self.site_revision: dict[str, int] = {}  # last revision that changed the site's peerings
        self._changed: dict[str, asyncio.Event] = {}
        self.recorded = DesiredRevisions(store)
        self._listed_at = 0  # revision of a listing whose revisions are not yet settled with etcd's records
        self._unsettled: set[str] = set()  # sites whose changes wait for the settle task
        self._settle_through = 0  # the newest revision whose changes are queued for it
        self._settler: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # set when stopping: what is left is settled without pausing

    # ------------------------------------------------------------ the registry's cache (registry.ConfigCache)

    def is_ready(self) -> bool:
        return self.ready.is_set()

    def connection_count(self, site: str) -> int:
        """Connections with an end at ``site``."""
        return len(self._by_site.get(site, ()))

    # ------------------------------------------------------------ listing

    def relist(self, kvs: list[KV], rev: int) -> set[str]:
        """The whole configuration at ``rev``; returns the sites whose desired peerings it changed (all of them at
        the first listing), woken on a reload."""
        self.sites.clear()
        self.endpoints.clear()
        self.connections.clear()
        self.devices.clear()
        self.gateways.clear()
        self.l2conns.clear()
        self._by_site.clear()
        for kv in kvs:
            self._put(kv)
        old, reload = self.peerings, self.ready.is_set()
        self.peerings = {}
        changed = set()
        for site in set(self._by_site) | set(old) | self._device_sites():
            self.peerings[site] = self._plan(site)
            if reload and old.get(site) != self.peerings[site]:
                # Changed somewhere in the compacted gap: this read is the first revision known to include it.
                self.site_revision[site] = rev
                self._wake(site)
                changed.add(site)
            elif not reload:
                changed.add(site)
                # The newest object the site's peerings come from.
                self.site_revision[site] = max((self._peering_revision(n) for n in self.peerings[site]), default=0)
        log.info(
            "planner loaded %d sites, %d endpoints, %d connections at rev %d",
            len(self.sites), len(self.endpoints), len(self.connections), rev,
        )
        self._listed_at = rev
        # After a restart every site is settled with the records, also those that have no peerings now.
        return changed if reload else changed | set(self.sites)

    # ------------------------------------------------------------ applying changes

    def _put(self, kv: KV) -> set[str]:
        """Record one config object; returns the sites whose peerings it may change."""
        key = kv.key
        if key.startswith(r.SITES):
            site = r.decode_site(kv)
            self.sites[site.name] = site
            return set()
        if key.startswith(r.ENDPOINTS):
            ep = r.decode_endpoint(kv)
            self.endpoints[ep.ref] = ep
            return self._sites_using(ep.ref) | {ep.site}
        if key.startswith((br.DEVICES, br.GATEWAYS, br.L2CONNECTIONS)):
            before = self._device_sites()
            if key.startswith(br.DEVICES):
                dev = br.decode_device(kv)
                self.devices[dev.id] = dev
            elif key.startswith(br.GATEWAYS):
                gw = br.decode_gateway(kv)
                self.gateways[gw.id] = gw
            else:
                l2 = br.decode_l2conn(kv)
                self.l2conns[l2.id] = l2
            return before | self._device_sites()
        if key.startswith(r.CONNECTIONS):
            conn = r.decode_connection(kv)
            touched = self._forget_connection(conn.name)
            self.connections[conn.name] = conn
            for ref in conn.ends:
                self._by_site[ref.site].add(conn.name)
            return touched | {conn.a.site, conn.b.site}
        return set()

    def _delete(self, key: str) -> set[str]:
        if key.startswith(r.SITES):
            self.sites.pop(key[len(r.SITES):], None)
            return set()
        if key.startswith(r.ENDPOINTS):
            site, _, name = key[len(r.ENDPOINTS):].partition("/")
            ref = m.EndpointRef(site, name)
            self.endpoints.pop(ref, None)
            return self._sites_using(ref) | {site}
        if key.startswith(r.CONNECTIONS):
            return self._forget_connection(key[len(r.CONNECTIONS):])
        for prefix, table in ((br.DEVICES, self.devices), (br.GATEWAYS, self.gateways),
                              (br.L2CONNECTIONS, self.l2conns)):
            if key.startswith(prefix):
                before = self._device_sites()
                table.pop(key[len(prefix):], None)
                return before | self._device_sites()
        return set()

    def _forget_connection(self, name: str) -> set[str]:
        old = self.connections.pop(name, None)
        if old is None:
            return set()
        for ref in old.ends:
            self._by_site[ref.site].discard(name)
        return {old.a.site, old.b.site}

    def _sites_using(self, ref: m.EndpointRef) -> set[str]:
        return {
            end.site
            for name in self._by_site.get(ref.site, ())
            for end in self.connections[name].ends
            if ref in self.connections[name].ends
        }

    def _plan(self, site: str) -> dict[str, m.DesiredPeering]:
        peerings = plan_site(site, self._conns_of(site), self.endpoints)
        if self.l2conns and site in self._device_sites():
            peerings.update(b.plan_tunnels(site, self.devices, self.gateways, list(self.l2conns.values())))
        return peerings

    def _device_sites(self) -> set[str]:
        return {d.site for d in self.devices.values()}

    def _peering_revision(self, connection: str) -> int:
        if connection not in self.connections:  # a border-gateway tunnel
            return max([c.version for c in self.l2conns.values()] + [g.version for g in self.gateways.values()]
                       + [d.version for d in self.devices.values()] + [0])
        conn = self.connections[connection]
        return max([conn.version] + [self.endpoints[ref].version for ref in conn.ends if ref in self.endpoints])

    def _conns_of(self, site: str) -> list[m.Connection]:
        return [self.connections[n] for n in sorted(self._by_site.get(site, ()))]

    def _names_of(self, key: str) -> set[str] | None:
        """The connections whose peerings a change of ``key`` can change (None: any peering of its sites)."""
        if key.startswith(r.ENDPOINTS):
            site, _, name = key[len(r.ENDPOINTS):].partition("/")
            ref = m.EndpointRef(site, name)
            return {n for n in self._by_site.get(site, ()) if ref in self.connections[n].ends}
        if key.startswith(r.CONNECTIONS):
            return {key[len(r.CONNECTIONS):]}
        return None

    def _replan(self, site: str, names: set[str] | None) -> dict[str, m.DesiredPeering]:
        """The site's peerings after a change of the connections ``names`` (None: planned whole)."""
        if names is None:
            return self._plan(site)
        new = dict(self.peerings.get(site, {}))
        for name in names:
            new.pop(name, None)
        new.update(plan_site(site, [self.connections[n] for n in sorted(names) if n in self.connections],
                             self.endpoints))
        return new

    def apply(self, revision: int, events: list[Event]) -> set[str]:
        """Apply the events of one revision; returns the sites whose desired peerings changed.

        Incremental: an endpoint or connection change replans only the peerings of the connections it touches
        (a hub endpoint changed for a thousand sites costs a thousand peerings, not a replan of every site).
        """
        touched: dict[str, set[str] | None] = {}  # site -> the connections to replan (None: the whole site)
        for ev in events:
            names = self._names_of(ev.kv.key)
            for site in self._delete(ev.kv.key) if ev.deleted else self._put(ev.kv):
                held = touched.get(site, set())
                if names is None or held is None:
                    touched[site] = None
                else:  # an endpoint's connections: those of this site (set & iterates the smaller set)
                    touched[site] = held | (names if len(names) <= 1 else names & self._by_site.get(site, set()))
        changed = set()
        for site, names in touched.items():
            new, old = self._replan(site, names), self.peerings.get(site, {})
            # Unchanged peerings keep their objects: digests and agent streams skip them by identity. Replanned
            # incrementally, only the replanned ones can be new objects.
            for n in new if names is None else names & new.keys():
                if (q := old.get(n)) is not None and q is not (p := new[n]) and q == p:
                    new[n] = q
            if new != old:
                self.peerings[site] = new
                self.site_revision[site] = revision
                changed.add(site)
                self._wake(site)
        if changed:
            named = sorted(changed)
            more = f" and {len(named) - LOG_SITES} more" if len(named) > LOG_SITES else ""
            log.info("rev %d changed the desired peerings of %s%s", revision, ", ".join(named[:LOG_SITES]), more)
        return changed

    async def reconcile(self, work: set[str]) -> None:
        """Settle the revisions of the sites this listing or revision changed with those recorded in etcd.

        In the background, many revisions at a time: settling takes etcd round trips, and awaiting them for
        each revision held the watch (and every agent's next delta) back by them. ``reconciled_at`` moves when
        a settle that covers the revision is done (``_reconciled``).
        """
        self._unsettled |= work
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle(), name="planner-settle")

    async def _settle(self) -> None:
        first = True
        while self._unsettled or self._settle_through > self.reconciled_at:
            if not first and not self._hurry.is_set():
                # Sites that keep changing (a mesh being built) are settled once per pause, not per change: each
                # settle digests all the site's peerings and writes its record.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), SETTLE_PAUSE)
            first = False
            sites, self._unsettled = self._unsettled, set()
            through = self._settle_through
            listed_at, self._listed_at = self._listed_at, 0
            try:
                await self.recorded.settle(sites, self.peerings, self.site_revision, listed_at)
            finally:
                await super()._reconciled(through)

    async def start(self) -> None:
        """Listed, and the listing's revisions settled with etcd's records (the rest follows in the background)."""
        await super().start()
        await self.wait_for_revision(self.revision, SETTLE_ON_STOP, reconciled=True)

    async def stop(self) -> None:
        await super().stop()
        self._hurry.set()
        if self._settler is not None:
            # What this planner saw is recorded before it goes (bounded: etcd may be away).
            await asyncio.wait([self._settler], timeout=SETTLE_ON_STOP)
            self._settler.cancel()
            await asyncio.gather(self._settler, return_exceptions=True)

    async def _reconciled(self, revision: int) -> None:
        self._settle_through = max(self._settle_through, revision)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle(), name="planner-settle")

    # ------------------------------------------------------------ waiting

    def _wake(self, site: str) -> None:
        ev = self._changed.get(site)
        if ev is not None:
            ev.set()

    def changed_event(self, site: str) -> asyncio.Event:
        """An event set whenever the site's desired peerings change (the waiter clears it)."""
        return self._changed.setdefault(site, asyncio.Event())

    def desired(self, site: str) -> tuple[dict[str, m.DesiredPeering], int]:
        """The site's desired peerings and the revision they are current at."""
        return dict(self.peerings.get(site, {})), self.revision
