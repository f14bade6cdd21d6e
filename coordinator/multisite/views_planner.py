"""The views planner: follows ``views/`` in etcd and keeps the global views of every coordinator in memory.

Key layout (under ``/isthmus/v1/views/``)::

    quotas/{project}/{resource}         {"hard": H, "soft": S}                      (isthmusctl quota set)
    usage/{site}                        the region's usage and limits per project    (its agent reports)
    capacity/{site}                     the region's capacity                        (its agent reports)
    addresses/{site}/{kind}/{id}        one port, floating IP, router gateway, subnet (agent deltas)
    domains/{name}                      a routing domain: networks that reach each other
    soft/{project}/{resource}           whether the soft limit is crossed (one event per crossing)
    alloc/{project}/{resource}          the limit granted to each region: {"site": {"last": n, "high": n}}
    regions/{site}                      the site has an OpenStack region (its agent attached for sync and views)
    attached/{site}                     its agent's sync stream is up (bound to that stream's lease)

Every coordinator follows this prefix (and which sites have a connected
agent) and keeps it in memory: the address index, the quota allocation per
region (``isthmus.coordinator.multisite.quota``), what the views show. Writes
from the API and from agents are in ``views_registry``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from isthmus.coordinator import registry as r
from isthmus.coordinator.multisite import addresses as ad
from isthmus.coordinator.multisite import quota as q
from isthmus.coordinator.planner import Planner
from isthmus.coordinator.store import KV, Event, Put, Store, mod_is
from isthmus.coordinator.watch import Watcher
from isthmus.core import views as v
from isthmus.core.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

VIEWS = r.VIEWS
QUOTAS = VIEWS + "quotas/"
USAGE = VIEWS + "usage/"
CAPACITY = VIEWS + "capacity/"
ADDRESSES = VIEWS + "addresses/"
DOMAINS = VIEWS + "domains/"
SOFT = VIEWS + "soft/"
ALLOC = VIEWS + "alloc/"
REGIONS = VIEWS + "regions/"
ATTACHED = VIEWS + "attached/"

EventSink = Callable[[str, str, str], Any]  # (kind, level, message): an event of the coordinator


def now_ms() -> int:
    return int(time.time() * 1000)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def address_key(site: str, kind: str, id_: str) -> str:
    return f"{ADDRESSES}{site}/{kind}/{id_}"


@dataclass(frozen=True)
class Grant:
    """The limit granted to a region for one project and resource."""

    last: int  # the limit granted last
    high: int  # the highest limit granted since the region last confirmed a grant
    seq: int  # the number of ``last``: the region reports the number of the grant it has applied


@dataclass
class ViewState:
    quotas: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # (project, resource) -> (hard, soft)
    usage: dict[str, dict[str, Any]] = field(default_factory=dict)  # site -> report
    capacity: dict[str, dict[str, Any]] = field(default_factory=dict)
    domains: dict[str, v.RoutingDomain] = field(default_factory=dict)
    addresses: dict[str, dict[tuple[str, str], ad.AddressRecord]] = field(default_factory=dict)  # site -> records
    soft: dict[tuple[str, str], tuple[bool, int]] = field(default_factory=dict)  # -> (exceeded, mod revision)
    alloc: dict[tuple[str, str], tuple[dict[str, Grant], int]] = field(default_factory=dict)  # -> (grants, mod rev)
    present: set[str] = field(default_factory=set)  # sites whose agent's sync stream is up (attached/)
    regions: dict[str, str] = field(default_factory=dict)  # site -> OpenStack region name
    quota_versions: dict[tuple[str, str], int] = field(default_factory=dict)  # mod revision of each global limit


def usage_of(state: ViewState, project: str, resource: str) -> dict[str, tuple[int, int, float]]:
    """site -> (in use, limit enforced, recent growth) for one project and resource, from the agents' reports."""
    out = {}
    for site, report in state.usage.items():
        entry = report.get("projects", {}).get(project, {}).get(resource)
        if entry is not None:
            out[site] = (int(entry.get("in_use", 0)), int(entry.get("limit", -1)), float(entry.get("recent", 0.0)))
    return out


def reported_grant(state: ViewState, site: str, project: str, resource: str) -> int:
    """The sequence number of the grant the region says is in force (0: none)."""
    entry = state.usage.get(site, {}).get("projects", {}).get(project, {}).get(resource) or {}
    return int(entry.get("grant", 0))


def _confirmed(grant: Grant | None, reported: int) -> bool:
    """The region applied the newest grant: grants are applied in order, so no older one can come back."""
    return grant is not None and grant.seq > 0 and reported == grant.seq


def allocation(state: ViewState, project: str, resource: str) -> dict[str, q.Allocation]:
    """The policy's allocation (``isthmus.coordinator.multisite.quota``) over the regions that report the resource.

    A region's current limit is what it reports, unless it has not confirmed the newest grant: then any
    grant since its last confirmation may still come into force, so the highest of them counts.
    """
    hard, _ = state.quotas[(project, resource)]
    grants = state.alloc.get((project, resource), ({}, 0))[0]
    regions = {}
    for site, (use, limit, recent) in usage_of(state, project, resource).items():
        grant = grants.get(site)
        settled = limit < 0 or grant is None or _confirmed(grant, reported_grant(state, site, project, resource))
        current = limit if settled else max(limit, grant.high if grant else limit)
        regions[site] = q.RegionQuota(usage=use, applied=current, recent=recent, stale=site not in state.present)
    if not regions:
        return {}
    return q.allocate(hard, regions)


def next_grants(state: ViewState, project: str, resource: str) -> dict[str, Grant]:
    """The grants after this allocation, numbered per region.

    Nothing changes until every region (every site whose agent ever attached for sync and views, until the
    site is deleted) has reported this resource: the limit a silent region enforces is unknown, and headroom
    given out meanwhile could overshoot the hard limit.
    """
    held = state.alloc.get((project, resource), ({}, 0))[0]
    usage = usage_of(state, project, resource)
    if set(state.regions) - set(usage):
        return held  # a region has not reported it yet (just told to, or its agent is away)
    out = {}
    for site, a in allocation(state, project, resource).items():
        grant = held.get(site)
        if grant is None:
            out[site] = Grant(a.now, a.now, 1)
            continue
        high = grant.last if _confirmed(grant, reported_grant(state, site, project, resource)) else grant.high
        if a.now != grant.last:
            out[site] = Grant(a.now, max(high, a.now), grant.seq + 1)
        else:
            out[site] = Grant(grant.last, max(high, grant.last), grant.seq)
    return out


def quota_limits(state: ViewState) -> list[v.QuotaLimit]:
    return [v.QuotaLimit(p, res, h, s, state.quota_versions.get((p, res), 0))
            for (p, res), (h, s) in sorted(state.quotas.items())]


def project_quota(state: ViewState, project: str) -> v.ProjectQuota | None:
    """Each resource of the project with a global limit: usage, limit, target and setting per region."""
    resources = sorted(res for p, res in state.quotas if p == project)
    if not resources:
        return None
    out = v.ProjectQuota(project=project)
    for res in resources:
        hard, soft = state.quotas[(project, res)]
        usage = usage_of(state, project, res)
        alloc = allocation(state, project, res)
        total = sum(u for u, _, _ in usage.values())
        rq = v.ResourceQuota(resource=res, hard=hard, soft=soft, total=total,
                             headroom=hard - total if hard >= 0 else -1,
                             soft_exceeded=soft > 0 and total >= soft)
        for site in sorted(set(usage) | {s for s in state.usage}):
            if site not in usage:
                rq.regions.append(v.RegionUsage(region=site, known=False, stale=site not in state.present))
                continue
            use, limit, _ = usage[site]
            a = alloc.get(site)
            grant = state.alloc.get((project, res), ({}, 0))[0].get(site)
            rq.regions.append(v.RegionUsage(
                region=site, known=True, usage=use, limit=limit, target=a.target if a else limit,
                setting=grant.last if grant else limit, reason=a.reason if a else "", stale=site not in state.present,
                updated_unix_ms=int(state.usage[site].get("updated_unix_ms", 0))))
        out.resources.append(rq)
    return out


def capacity(state: ViewState) -> v.Capacity:
    """Every region's capacity as last reported, and their sum."""
    regions = []
    total = v.RegionCapacity(region="all", compute_known=bool(state.capacity))
    for site in sorted(state.capacity):
        cap = v.RegionCapacity.from_json(state.capacity[site])
        cap.region = site
        cap.stale = site not in state.present
        regions.append(cap)
        total.compute_known = total.compute_known and cap.compute_known
        for name in ("vcpus", "vcpus_used", "ram_mb", "ram_mb_used", "instances"):
            setattr(total, name, getattr(total, name) + getattr(cap, name))
        for k, n in cap.network_objects.items():
            total.network_objects[k] = total.network_objects.get(k, 0) + n
    total.source = ("none reported" if not state.capacity else "sum" if total.compute_known
                    else "partly unknown")
    return v.Capacity(regions=regions, total=total)


class Then(enum.Enum):
    """What a listing or a revision of ``views/`` leaves for the views planner to do."""

    NOTHING = "nothing"
    WAKE = "wake"  # every agent stream looks at its quota targets again
    ALLOCATE = "allocate"  # a quota, a report or a region changed: new grants, WAKE, soft limits checked


class ViewsPlanner(Watcher[Then]):
    """Follows ``views/`` and the agents' presence in etcd; keeps the address index; wakes agents on change."""

    def __init__(self, store: Store, planner: Planner, wake: Callable[[], None],
                 event: EventSink | None = None) -> None:
        super().__init__(store, VIEWS, "views")
        self.planner = planner  # border gateways join networks into routing domains
        self.wake = wake  # every agent stream of this coordinator looks at its quota targets again
        self.event = event
        self.state = ViewState()
        self.index = ad.AddressIndex()
        self._domains_digest = ""

    def relist(self, kvs: list[KV], revision: int) -> Then:
        """Everything under ``views/`` read afresh at one revision: the state, the address index, its domains.

        On a reload (after a compaction) every agent stream looks at its quota targets again; the grants are
        recomputed at the next change of a quota, a report or a region, not here.
        """
        self.state = ViewState()
        for kv in kvs:
            self._put(kv)
        self.index = ad.AddressIndex()
        for site, records in self.state.addresses.items():
            self.index.apply(ad.AddressDelta(site, revision, tuple(records.values()), full=True))
        self._domains_digest = ""  # a new index has no domains yet
        self.refresh_domains()
        log.info("views loaded: %d quotas, %d regions reporting, %d address records at rev %d",
                 len(self.state.quotas), len(self.state.usage), len(self.index), revision)
        return Then.WAKE if self.ready.is_set() else Then.NOTHING

    async def reconcile(self, then: Then) -> None:
        if then == Then.ALLOCATE:
            await self._allocate()
        if then != Then.NOTHING:
            self.wake()
        if then == Then.ALLOCATE:
            await self._check_soft_limits()

    def apply(self, revision: int, events: list[Event]) -> Then:
        """Apply the events of one revision; ALLOCATE when a region's share of a quota may have moved."""
        deltas: dict[str, tuple[list[ad.AddressRecord], list[tuple[str, str]]]] = {}
        wake_all = False
        for e in events:
            key = e.kv.key
            if key.startswith(ADDRESSES):
                site, kind, id_ = key[len(ADDRESSES):].split("/", 2)
                ups, rems = deltas.setdefault(site, ([], []))
                if e.deleted:
                    self.state.addresses.get(site, {}).pop((kind, id_), None)
                    rems.append((kind, id_))
                else:
                    rec = ad.AddressRecord.from_json(json.loads(e.kv.value))
                    self.state.addresses.setdefault(site, {})[(kind, id_)] = rec
                    ups.append(rec)
                continue
            if e.deleted:
                self._delete(key)
            else:
                self._put(e.kv)
            if key.startswith((QUOTAS, USAGE, ALLOC, REGIONS, ATTACHED)):  # a region's share may move
                wake_all = True
            if key.startswith(DOMAINS):
                self.refresh_domains()
        for site, (ups, rems) in deltas.items():
            delta = ad.AddressDelta(site, revision, tuple(ups), tuple(rems))
            try:
                self.index.apply(delta)
            except ad.SequenceError:
                records = tuple(self.state.addresses.get(site, {}).values())
                self.index.apply(ad.AddressDelta(site, revision, records, full=True))
        return Then.ALLOCATE if wake_all else Then.NOTHING

    def _put(self, kv: KV) -> None:
        key, st = kv.key, self.state
        if key.startswith(QUOTAS):
            project, resource = key[len(QUOTAS):].split("/", 1)
            d = json.loads(kv.value)
            st.quotas[(project, resource)] = (int(d["hard"]), int(d.get("soft", -1)))
            st.quota_versions[(project, resource)] = kv.mod_revision
        elif key.startswith(USAGE):
            st.usage[key[len(USAGE):]] = json.loads(kv.value)
        elif key.startswith(CAPACITY):
            st.capacity[key[len(CAPACITY):]] = json.loads(kv.value)
        elif key.startswith(DOMAINS):
            domain = v.RoutingDomain.from_json(json.loads(kv.value), kv.mod_revision)
            st.domains[domain.name] = domain
        elif key.startswith(ADDRESSES):
            site, kind, id_ = key[len(ADDRESSES):].split("/", 2)
            st.addresses.setdefault(site, {})[(kind, id_)] = ad.AddressRecord.from_json(json.loads(kv.value))
        elif key.startswith(SOFT):
            project, resource = key[len(SOFT):].split("/", 1)
            st.soft[(project, resource)] = (bool(json.loads(kv.value).get("exceeded")), kv.mod_revision)
        elif key.startswith(REGIONS):
            st.regions[key[len(REGIONS):]] = json.loads(kv.value).get("region", "")
        elif key.startswith(ATTACHED):
            st.present.add(key[len(ATTACHED):])
        elif key.startswith(ALLOC):
            project, resource = key[len(ALLOC):].split("/", 1)
            grants = {site: Grant(int(g["last"]), int(g["high"]), int(g.get("seq", 0)))
                      for site, g in json.loads(kv.value).items()}
            st.alloc[(project, resource)] = (grants, kv.mod_revision)

    def _delete(self, key: str) -> None:
        st = self.state
        if key.startswith(QUOTAS):
            project, resource = key[len(QUOTAS):].split("/", 1)
            st.quotas.pop((project, resource), None)
            st.quota_versions.pop((project, resource), None)
        elif key.startswith(USAGE):
            st.usage.pop(key[len(USAGE):], None)
        elif key.startswith(CAPACITY):
            st.capacity.pop(key[len(CAPACITY):], None)
        elif key.startswith(DOMAINS):
            st.domains.pop(key[len(DOMAINS):], None)
        elif key.startswith(SOFT):
            project, resource = key[len(SOFT):].split("/", 1)
            st.soft.pop((project, resource), None)
        elif key.startswith(ALLOC):
            project, resource = key[len(ALLOC):].split("/", 1)
            st.alloc.pop((project, resource), None)
        elif key.startswith(REGIONS):
            st.regions.pop(key[len(REGIONS):], None)
        elif key.startswith(ATTACHED):
            st.present.discard(key[len(ATTACHED):])

    def domains(self) -> dict[str, set[tuple[str, str]]]:
        """Routing domains, plus one per l2-gateway-connection: its network at every site of the gateway."""
        out = {name: {(n.region, n.network) for n in d.networks} for name, d in self.state.domains.items()}
        for conn in self.planner.l2conns.values():
            gw = self.planner.gateways.get(conn.l2_gateway_id)
            if gw is None:
                continue
            sites = {self.planner.devices[d.device_id].site for d in gw.devices if d.device_id in self.planner.devices}
            out[f"l2gw:{conn.id}"] = {(site, conn.network_id) for site in sites}
        return out

    def refresh_domains(self) -> None:
        domains = self.domains()
        digest = repr(sorted((k, sorted(v)) for k, v in domains.items()))
        if digest != self._domains_digest:
            try:
                self.index.set_domains(domains)
            except ValueError as exc:  # a domain written to etcd by hand that the index refuses
                log.error("routing domains not applied: %s", exc)
                return
            self._domains_digest = digest

    async def _check_soft_limits(self) -> None:
        """One event per upward crossing of a soft limit, whichever coordinator sees it first."""
        for (project, resource), (_, soft) in sorted(self.state.quotas.items()):
            if soft <= 0:
                continue
            total = sum(use for use, _, _ in usage_of(self.state, project, resource).values())
            exceeded = total >= soft
            was, rev = self.state.soft.get((project, resource), (False, 0))
            if exceeded == was:
                continue
            key = f"{SOFT}{project}/{resource}"
            try:
                ok, _ = await self.store.txn([mod_is(key, rev)], [Put(key, dumps({"exceeded": exceeded,
                                                                                    "total": total}))])
            except Unavailable:
                continue
            if ok and exceeded:
                message = (f"project {project}: {resource} in use {total} across regions reached the soft limit "
                           f"{soft} (hard {self.state.quotas[(project, resource)][0]})")
                log.warning("%s", message)
                if self.event is not None:
                    result = self.event("quota.soft-limit", "warning", message)
                    if asyncio.iscoroutine(result):
                        await result

    # ------------------------------------------------------------ what an agent is told

    async def _allocate(self) -> None:
        """Grant each region its limit, one compare-and-swap per project and resource.

        Every coordinator may compute it; the compare on the allocation key makes the grants of one resource a
        single sequence, so no two coordinators hand out the same headroom twice.
        """
        for project, resource in sorted(self.state.quotas):
            grants = next_grants(self.state, project, resource)
            held, rev = self.state.alloc.get((project, resource), ({}, 0))
            if grants == held or not grants:
                continue
            key = f"{ALLOC}{project}/{resource}"
            body = dumps({site: {"last": g.last, "high": g.high, "seq": g.seq} for site, g in grants.items()})
            try:
                ok, new_rev = await self.store.txn([mod_is(key, rev)], [Put(key, body)])
            except Unavailable as exc:
                log.warning("cannot store the quota grants of %s %s: %s", project, resource, exc)
                continue
            if ok:
                self.state.alloc[(project, resource)] = (grants, new_rev)
                log.info("project %s %s: regional limits granted %s", project, resource,
                         ", ".join(f"{site} {g.last} (#{g.seq})" for site, g in sorted(grants.items())))

    # ------------------------------------------------------------ what an agent is told

    def quota_targets(self, site: str) -> list[v.QuotaTarget]:
        """Every (project, resource) with a global limit: the limit granted to the site (-2: report only)."""
        out = []
        for project, resource in sorted(self.state.quotas):
            grant = self.state.alloc.get((project, resource), ({}, 0))[0].get(site)
            out.append(v.QuotaTarget(project=project, resource=resource, limit=grant.last if grant else -2,
                                     grant=grant.seq if grant else 0))
        return out

    # ------------------------------------------------------------ what the views show

    def lookup(self, query: str) -> list[ad.AddressRecord]:
        """The address records an IP, a MAC or a CIDR finds."""
        try:
            return self.index.lookup(query.strip())
        except ValueError as exc:
            raise InvalidArgument(str(exc), "query") from None

    def conflicts(self) -> list[ad.Conflict]:
        self.refresh_domains()  # l2-gateway-connections may have changed
        return self.index.conflicts()
