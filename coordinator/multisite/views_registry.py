"""Writes to the global views in etcd: global quotas and routing domains (the API), and the agents' reports of
usage, capacity and addresses. Reads come from the views planner's in-memory view (``views_planner``)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from isthmus.coordinator import registry as r
from isthmus.coordinator.multisite import addresses as ad
from isthmus.coordinator.multisite import views_planner as vp
from isthmus.coordinator.multisite.views_planner import (
    ALLOC,
    CAPACITY,
    DOMAINS,
    QUOTAS,
    REGIONS,
    SOFT,
    USAGE,
    ViewsPlanner,
    address_key,
    dumps,
    now_ms,
)
from isthmus.coordinator.store import KV, Delete, Put, Store, absent, mod_is
from isthmus.core import model as m
from isthmus.core import views as v
from isthmus.core.errors import Aborted, AlreadyExists, InvalidArgument, NotFound

log = logging.getLogger(__name__)

# Resources a global quota may name, and which service counts them.
# (Not key_pairs: Nova limits them per user and counts no project usage for them.)
NOVA_RESOURCES = ("instances", "cores", "ram", "server_groups")
NEUTRON_RESOURCES = ("networks", "subnets", "ports", "floatingips", "security_groups", "security_group_rules",
                     "routers")
RESOURCES = NOVA_RESOURCES + NEUTRON_RESOURCES


def _check_resource(resource: str) -> None:
    if resource not in RESOURCES:
        raise InvalidArgument(f"{resource!r} is not one of {', '.join(RESOURCES)}", "resource")


def _check_project(project: str) -> None:
    if not project or len(project) > 64 or not all(c.isalnum() or c in "-_" for c in project):
        raise InvalidArgument(f"{project!r} is not a project id (1-64 letters, digits, '-', '_')", "project")


def _encode_domain(domain: v.RoutingDomain) -> bytes:
    # The contract's JSON form, as protobuf's MessageToJson writes it.
    return json.dumps(domain.to_json(), indent=2).encode()


def _decode_domain(kv: KV) -> v.RoutingDomain:
    return v.RoutingDomain.from_json(json.loads(kv.value), kv.mod_revision)


def _decode_quota(kv: KV) -> v.QuotaLimit:
    project, resource = kv.key[len(QUOTAS):].split("/", 1)
    body = json.loads(kv.value)
    return v.QuotaLimit(project, resource, body["hard"], body["soft"], kv.mod_revision)


class _Writes(r.Registry):
    """The API's writes of global quotas and routing domains, with the request ids of ``r.Registry``: a retried
    create or delete that was in fact done answers what it did, not ALREADY_EXISTS or NOT_FOUND."""

    DECODERS = {DOMAINS: _decode_domain, QUOTAS: _decode_quota}


class ViewsRegistry:
    """The global views' operations: validated, one etcd transaction per write, reads from the planner."""

    def __init__(self, store: Store, planner: ViewsPlanner) -> None:
        self.store = store
        self.planner = planner
        self.writes = _Writes(store)

    async def _caught_up(self, revision: int, timeout: float = 2.0) -> None:
        """Let the in-memory view reach ``revision`` (a read right after a write sees the write)."""
        await self.planner.wait_for_revision(revision, timeout)

    # ------------------------------------------------------------ global quotas

    async def set_quota(self, limit: v.QuotaLimit) -> v.QuotaLimit:
        _check_project(limit.project)
        _check_resource(limit.resource)
        if limit.hard < -1:
            raise InvalidArgument(f"{limit.hard} is below -1 (-1: no global limit)", "hard")
        if limit.soft < -1 or (limit.hard >= 0 and limit.soft > limit.hard):
            raise InvalidArgument(f"{limit.soft} must be -1 (none) or 0..hard ({limit.hard})", "soft")
        key = f"{QUOTAS}{limit.project}/{limit.resource}"
        body = dumps({"hard": limit.hard, "soft": limit.soft})

        async def attempt() -> r.Plan:
            if limit.version:
                current = await self.store.get(key)
                if current is None or current.mod_revision != limit.version:
                    raise Aborted(f"the quota of {limit.project} {limit.resource} was changed; read it again",
                                  "version")
            return r.Plan([mod_is(key, limit.version)] if limit.version else [], [Put(key, body)],
                          lambda rev: replace(limit, version=rev))

        done: v.QuotaLimit = await self.writes.commit(
            f"global quota of project {limit.project}: {limit.resource} hard {limit.hard} soft {limit.soft}", attempt)
        await self._caught_up(done.version)
        return done

    async def unset_quota(self, project: str, resource: str) -> tuple[int, int]:
        """Remove the project's global limit of ``resource`` ("": of every resource); (revision, limits removed)."""
        _check_project(project)
        if resource:
            _check_resource(resource)
        key = f"{QUOTAS}{project}/{resource}"
        kvs, _ = await self.store.get_prefix(key)
        kvs = [kv for kv in kvs if not resource or kv.key == key]
        if not kvs:
            raise NotFound(f"project {project} has no global quota" + (f" for {resource}" if resource else ""),
                           "resource")
        ok, rev = await self.store.txn([], [Delete(kv.key) for kv in kvs]
                                       + [Delete(SOFT + kv.key[len(QUOTAS):]) for kv in kvs]
                                       + [Delete(ALLOC + kv.key[len(QUOTAS):]) for kv in kvs])
        await self._caught_up(rev)
        return rev, len(kvs)

    def quota_limits(self) -> list[v.QuotaLimit]:
        return vp.quota_limits(self.planner.state)

    def project_quota(self, project: str) -> v.ProjectQuota:
        _check_project(project)
        out = vp.project_quota(self.planner.state, project)
        if out is None:
            raise NotFound(f"project {project} has no global quota (isthmusctl quota set)", "project")
        return out

    # ------------------------------------------------------------ capacity and addresses

    def capacity(self) -> v.Capacity:
        return vp.capacity(self.planner.state)

    def lookup(self, query: str) -> list[ad.AddressRecord]:
        return self.planner.lookup(query)

    def conflicts(self) -> list[ad.Conflict]:
        return self.planner.conflicts()

    # ------------------------------------------------------------ routing domains

    async def _check_domain(self, d: v.RoutingDomain) -> None:
        m.check_name(d.name, "name")
        if d.name == ad.GLOBAL_DOMAIN:
            raise InvalidArgument(f"{d.name!r} is reserved: floating and router gateway IPs are always in it", "name")
        if not d.networks:
            raise InvalidArgument("name at least one REGION:NETWORK", "networks")
        seen = set()
        for i, n in enumerate(d.networks):
            m.check_name(n.region, f"networks[{i}].region")
            if not n.network or "/" in n.network or len(n.network) > 255:
                raise InvalidArgument(f"{n.network!r} is not a network id", f"networks[{i}].network")
            if (n.region, n.network) in seen:
                raise InvalidArgument(f"{n.region}:{n.network} is listed twice", f"networks[{i}]")
            seen.add((n.region, n.network))
        if len(d.description) > 1024:
            raise InvalidArgument("is longer than 1024 characters", "description")
        regions = sorted({n.region for n in d.networks})
        kvs = await self.store.get_many([r.site_key(x) for x in regions])
        for region, kv in zip(regions, kvs, strict=True):
            if kv is None:
                i = next(i for i, n in enumerate(d.networks) if n.region == region)
                raise NotFound(f"region {region} is not a known site", f"networks[{i}].region")

    async def create_domain(self, domain: v.RoutingDomain) -> v.RoutingDomain:
        await self._check_domain(domain)
        key = DOMAINS + domain.name

        async def attempt() -> r.Plan:
            if await self.store.get(key) is not None:
                raise AlreadyExists(f"routing domain {domain.name} already exists", "name")
            return r.Plan([absent(key)], [Put(key, _encode_domain(domain))], lambda rev: replace(domain, version=rev))

        done: v.RoutingDomain = await self.writes.commit(f"created routing domain {domain.name}", attempt)
        await self._caught_up(done.version)
        return done

    async def update_domain(self, domain: v.RoutingDomain) -> v.RoutingDomain:
        await self._check_domain(domain)
        key = DOMAINS + domain.name

        async def attempt() -> r.Plan:
            current = await self.store.get(key)
            if current is None:
                raise NotFound(f"routing domain {domain.name} does not exist", "name")
            if domain.version and domain.version != current.mod_revision:
                raise Aborted(f"routing domain {domain.name} was changed (stored version {current.mod_revision}); "
                              "read it again", "version")
            return r.Plan([mod_is(key, current.mod_revision)], [Put(key, _encode_domain(domain))],
                          lambda rev: replace(domain, version=rev))

        done: v.RoutingDomain = await self.writes.commit(f"updated routing domain {domain.name}", attempt)
        await self._caught_up(done.version)
        return done

    def get_domain(self, name: str) -> v.RoutingDomain:
        d = self.planner.state.domains.get(name)
        if d is None:
            raise NotFound(f"routing domain {name} does not exist", "name")
        return d

    def list_domains(self) -> list[v.RoutingDomain]:
        return [d for _, d in sorted(self.planner.state.domains.items())]

    async def delete_domain(self, name: str, version: int) -> int:
        key = DOMAINS + name

        async def attempt() -> r.Plan:
            current = await self.store.get(key)
            if current is None:
                raise NotFound(f"routing domain {name} does not exist", "name")
            if version and version != current.mod_revision:
                raise Aborted(f"routing domain {name} was changed (stored version {current.mod_revision})", "version")
            return r.Plan([mod_is(key, current.mod_revision)], [Delete(key)], lambda rev: rev)

        rev: int = await self.writes.commit(f"deleted routing domain {name}", attempt)
        await self._caught_up(rev)
        return rev

    # ------------------------------------------------------------ what agents report

    async def register_region(self, site: str, region: str) -> None:
        """Record that the site has an OpenStack region: quota raises wait for its usage reports from now on."""
        if self.planner.state.regions.get(site) != region:
            await self.store.put(REGIONS + site, dumps({"region": region, "since_unix_ms": now_ms()}))

    async def write_usage(self, site: str, projects: v.UsageReport) -> None:
        held = self.planner.state.usage.get(site)
        body: dict[str, Any] = {"site": site, "projects": projects}
        if held is not None and held.get("projects") == body["projects"]:
            return
        body["updated_unix_ms"] = now_ms()
        await self.store.put(USAGE + site, dumps(body))

    async def write_capacity(self, site: str, body: dict[str, Any]) -> None:
        """``body``: the report's stored form, without time or staleness (``wire.views.capacity_from_pb``)."""
        held = self.planner.state.capacity.get(site)
        if held is not None and {k: x for k, x in held.items() if k != "updated_unix_ms"} == body:
            return
        body = {**body, "updated_unix_ms": now_ms()}
        await self.store.put(CAPACITY + site, dumps(body))

    async def write_addresses(self, site: str, report: v.AddressReport, seen: set[tuple[str, str]]) -> int:
        """Store one part of a delta of the site's addresses; returns the etcd operations it took.

        A full list comes in parts (``more``): ``seen`` collects the keys of its parts, and after the last one
        whatever is held and was not seen is deleted. Unchanged records cost nothing.
        """
        held = self.planner.state.addresses.get(site, {})
        upserts = []
        for i, raw in enumerate(report.upserts):
            d = {**raw, "region": site}
            try:
                upserts.append(ad.check_record(d, f"upserts[{i}]."))
            except ValueError as exc:
                # One record the index cannot take is left out (its stored version stays), not the whole delta.
                log.warning("site %s reported an address record that is left out: %s", site, exc)
                seen.add((raw.get("kind", ""), raw.get("id", "")))
        ops: list[Put | Delete] = []
        for rec in upserts:
            seen.add((rec.kind, rec.id))
            if held.get((rec.kind, rec.id)) != rec:
                ops.append(Put(address_key(site, rec.kind, rec.id), dumps(rec.to_json())))
        removes = set(report.removes)
        if report.full and not report.more:
            removes |= {k for k in held if k not in seen}
        ops += [Delete(address_key(site, kind, id_)) for kind, id_ in sorted(removes)]
        for start in range(0, len(ops), 100):
            await self.store.txn([], ops[start:start + 100])
        return len(ops)
