"""Sites, endpoints and connections in etcd: validated writes, each one transaction.

Every write reads what it depends on, validates against it, and commits in one
transaction that compares the mod revision of everything it read. If the
compare fails, something changed in between: the write is read, validated and
tried again, so the second writer sees the first writer's result (and gets
ABORTED if it named a version that is now stale). No update is ever lost.
Endpoint and connection creates first validate against the planner's
watch-fed view of the configuration instead of reading (one transaction, no
read); a view behind etcd fails the compares and the write goes the read path.

Key layout (all under ``/isthmus/v1/``)::

    config/sites/{site}                         Site JSON
    config/endpoints/{site}/{endpoint}          Endpoint JSON
    config/connections/{connection}             Connection JSON
    index/pair/{type}/{siteA/epA}/{siteB/epB}   connection name   (unique endpoint pair per type)
    index/vni/{vni}                             connection name   (unique VNI)
    refs/site/{parent}/{cell}                   ""                (a cell names its region)
    refs/endpoint/{site}/{endpoint}/{conn}      ""                (a connection uses an endpoint)
    status/{site}                               agent status JSON, bound to the agent session's lease
    last-status/{site}                          the same without the journal and the lease: the last report
    desired/{site}                              digest and revision of the site's last desired-peerings change
    requests/{request id}                       the write a request made, for REQUEST_TTL seconds (see Registry)
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from isthmus.coordinator.store import (
    KV,
    Compare,
    Delete,
    Put,
    Store,
    absent,
    mod_is,
    prefix_empty,
)
from isthmus.core import checks
from isthmus.core import model as m
from isthmus.core.edge import audit_slot, current_request
from isthmus.core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    IsthmusError,
    NotFound,
)

log = logging.getLogger(__name__)

ROOT = "/isthmus/v1/"
CONFIG = ROOT + "config/"
SITES = CONFIG + "sites/"
ENDPOINTS = CONFIG + "endpoints/"
CONNECTIONS = CONFIG + "connections/"
INDEX = ROOT + "index/"
REFS = ROOT + "refs/"
STATUS = ROOT + "status/"
LAST_STATUS = ROOT + "last-status/"  # what each site's agent last reported, kept after its session ends
DESIRED = ROOT + "desired/"  # the revision that last changed each site's desired peerings (coordinator/revisions.py)
VIEWS = ROOT + "views/"  # the global views (coordinator/views.py): a deleted site's reports go with it
REQUESTS = ROOT + "requests/"

MAX_ATTEMPTS = 16
# How long a write remembers its request id: a client that retries within this time gets the first answer.
# Records live between half of it and all of it (each lease is used for half its TTL).
REQUEST_TTL = 600

T = TypeVar("T")


def site_key(name: str) -> str:
    return SITES + name


def endpoint_key(site: str, name: str) -> str:
    return f"{ENDPOINTS}{site}/{name}"


def connection_key(name: str) -> str:
    return CONNECTIONS + name


def pair_key(conn: m.Connection) -> str:
    return INDEX + "pair/" + conn.pair_key()


def vni_key(vni: int) -> str:
    return f"{INDEX}vni/{vni}"


SEGMENTS = INDEX + "segment/"  # border-gateway segmentation ids bound to tenant networks
DEVICE_NAMES = INDEX + "gw-device-name/"  # gateway devices' names, by site


def segment_key(segmentation_id: int) -> str:
    """A border-gateway segmentation id bound to a tenant network (see coordinator/border.py)."""
    return f"{SEGMENTS}{segmentation_id}"


def device_names(site: str) -> str:
    """Prefix of the names of the site's gateway devices (see coordinator/border.py)."""
    return f"{DEVICE_NAMES}{site}/"


def site_refs(parent: str) -> str:
    return f"{REFS}site/{parent}/"


def endpoint_refs(ref: m.EndpointRef) -> str:
    return f"{REFS}endpoint/{ref.site}/{ref.name}/"


def status_key(site: str) -> str:
    return STATUS + site


def last_status_key(site: str) -> str:
    return LAST_STATUS + site


def desired_key(site: str) -> str:
    return DESIRED + site


def request_key(request_id: str) -> str:
    return REQUESTS + request_id


def encode(obj: Any) -> bytes:
    return json.dumps(m.to_json(obj), sort_keys=True, separators=(",", ":")).encode()


def decode_site(kv: KV) -> m.Site:
    return m.site_from_json(json.loads(kv.value), kv.mod_revision)


def decode_endpoint(kv: KV) -> m.Endpoint:
    return m.endpoint_from_json(json.loads(kv.value), kv.mod_revision)


def decode_connection(kv: KV) -> m.Connection:
    return m.connection_from_json(json.loads(kv.value), kv.mod_revision)


SiteGuard = Callable[[str, bool], Awaitable[tuple[list[Compare], list[Put | Delete]]]]


class ConfigCache(Protocol):
    """A watch-fed view of ``config/`` (the planner): objects carry their mod revision as their version."""

    sites: dict[str, m.Site]
    endpoints: dict[m.EndpointRef, m.Endpoint]
    connections: dict[str, m.Connection]

    def is_ready(self) -> bool: ...

    def connection_count(self, site: str) -> int: ...


# Below (budget - BUDGET_GUARD) connections at a site, a create counts them in the cache and does not compare them:
# the site could pass its budget only if more than BUDGET_GUARD creates on it were in flight at once. From there
# on, a create counts them in etcd and compares that no reference was added under the site since that count.
BUDGET_GUARD = 1000


@dataclasses.dataclass
class Plan:
    """One attempt of a write: what it compared, what it writes, what it returns."""

    compares: list[Compare]
    ops: list[Put | Delete]
    result: Callable[[int], Any]  # revision -> the object as written


def _check_version(given: int, stored: int, what: str) -> None:
    if given and given != stored:
        raise Aborted(f"{what} was changed (stored version {stored}, request version {given}); read it again")


def _check_owner(current: m.Connection, owner: str) -> None:
    """Refuse a hand edit of a topology policy's connection, and a policy's edit of any other connection."""
    if current.policy == owner:
        return
    if current.policy:
        raise FailedPrecondition(f"connection {current.name} belongs to topology policy {current.policy}: change "
                                 "the policy, or create an explicit connection of the same endpoints, which wins")
    raise FailedPrecondition(f"connection {current.name} was written by hand; policy {owner} cannot change it")


def _check_vni_free(vni: int, name: str, owner: KV | None, segment: KV | None) -> None:
    """Refuse a VNI held by another connection (``owner``) or bound to a tenant network (``segment``)."""
    if owner is not None and owner.value.decode() != name:
        raise AlreadyExists(f"VNI {vni} is used by connection {owner.value.decode()}", "vxlan.vni")
    if segment is not None:
        raise AlreadyExists(f"VNI {vni} is the segmentation id of tenant network {segment.value.decode()} "
                            "(border gateway)", "vxlan.vni")


class Registry:
    """Validated create/get/list/update/delete of sites, endpoints and connections.

    A write made for a request that carries a request id (``isthmus.core.edge.current_request``) stores a record
    of it, in the same transaction, under ``requests/{id}`` for REQUEST_TTL seconds. The same request again (a
    client retrying after a lost answer, or the store retrying on another etcd member a transaction that was in
    fact applied) finds the record and gets the answer of the first: the object as stored now, or the revision
    of a delete, never ALREADY_EXISTS or NOT_FOUND for its own earlier success.
    """

    # The object a write's first operation writes, by key prefix: how a repeated request reads its answer.
    DECODERS: dict[str, Callable[[KV], Any]] = {
        SITES: decode_site, ENDPOINTS: decode_endpoint, CONNECTIONS: decode_connection}

    def __init__(self, store: Store, cache: ConfigCache | None = None) -> None:
        self.store = store
        # First attempts of endpoint and connection creates validate against this view, with no read: their
        # transaction compares everything they relied on, so a stale view costs a retry (read from etcd), never
        # a wrong write. The kube-apiserver's watch cache does the same.
        self.cache = cache
        self.cache_hits = 0
        # Other parts that name sites (the multisite sync intents) decide whether a site may go: each guard takes
        # (site, force) and raises FailedPrecondition naming what uses it, or gives the compares and writes that
        # settle those uses in the same transaction as the delete.
        self.site_guards: list[SiteGuard] = []
        self._request_lease = (0, 0.0)  # lease id, monotonic time granted
        self._lease_lock = asyncio.Lock()

    async def _lease_for_requests(self) -> int:
        async with self._lease_lock:
            lease, granted = self._request_lease
            if not lease or time.monotonic() - granted > REQUEST_TTL / 2:
                self._request_lease = (await self.store.grant_lease(REQUEST_TTL), time.monotonic())
            return self._request_lease[0]

    async def _replay(self, request_id: str, method: str) -> Any:
        """The answer of an earlier run of this request, or None when there was none."""
        kv = await self.store.get(request_key(request_id))
        if kv is None:
            return None
        record = json.loads(kv.value)
        if record.get("method") != method:
            raise InvalidArgument(f"{request_id[:64]} was used for another request ({record.get('method')}); "
                                  "use a new id for each request", "x-isthmus-request-id")
        key = record["key"]
        log.info("request %s repeated: answering with what it did at rev %d", request_id, kv.mod_revision)
        if record["op"] == "delete":
            return kv.mod_revision
        current = await self.store.get(key)
        decode = next((d for prefix, d in self.DECODERS.items() if key.startswith(prefix)), None)
        if current is None or current.create_revision > kv.mod_revision or decode is None:
            raise Aborted(f"this request was done at revision {kv.mod_revision}, and {key[len(CONFIG):]} was "
                          "deleted since")
        return decode(current)

    def _cached(self) -> ConfigCache | None:
        return self.cache if self.cache is not None and self.cache.is_ready() else None

    async def commit(self, what: str, attempt: Callable[[], Awaitable[Plan]],
                      fast: Callable[[], Plan | None] | None = None) -> Any:
        """Run ``attempt`` (reads etcd, validates, plans) and commit its plan, again while the compares fail.

        ``fast``, if given, plans the first attempt from the cache; it returns None when it cannot decide (an
        error to report, say), and any error it would have raised is left to ``attempt`` to find in etcd.
        """
        request = current_request()
        audit = audit_slot()
        for n in range(MAX_ATTEMPTS):
            if request is not None and (done := await self._replay(*request)) is not None:
                return done
            try:
                plan = fast() if fast is not None and n == 0 else None
                if plan is not None:
                    self.cache_hits += 1
                else:
                    plan = await attempt()
            except (AlreadyExists, NotFound, FailedPrecondition, Aborted):
                # The same request, run meanwhile by another coordinator, may be what made this one fail.
                if request is not None and (done := await self._replay(*request)) is not None:
                    return done
                raise
            compares, ops = plan.compares, plan.ops
            if request is not None and ops:
                record = json.dumps({"method": request[1], "key": ops[0].key,
                                     "op": "put" if isinstance(ops[0], Put) else "delete"}).encode()
                compares = [*compares, absent(request_key(request[0]))]
                ops = [*ops, Put(request_key(request[0]), record, await self._lease_for_requests())]
            if audit is not None and ops:  # the call's audit record, in the same transaction as the write
                ops = [*ops, Put(*audit.make())]
            ok, revision = await self.store.txn(compares, ops)
            if ok:
                if audit is not None and ops:
                    audit.written = True
                log.info("%s at rev %d", what, revision)
                return plan.result(revision)
            log.debug("%s: transaction lost a race; reading again", what)
        raise Aborted(f"{what}: gave up after {MAX_ATTEMPTS} conflicting concurrent writes; try again")

    # ------------------------------------------------------------ reads

    async def _get(self, key: str, decode: Callable[[KV], T], missing: str) -> T:
        kv = await self.store.get(key)
        if kv is None:
            raise NotFound(missing)
        return decode(kv)

    async def get_site(self, name: str) -> m.Site:
        m.check_name(name, "name")
        return await self._get(site_key(name), decode_site, f"site {name} does not exist")

    async def list_sites(self) -> tuple[list[m.Site], int]:
        kvs, rev = await self.store.get_prefix(SITES)
        return [decode_site(kv) for kv in kvs], rev

    async def get_endpoint(self, site: str, name: str) -> m.Endpoint:
        m.check_name(site, "site")
        m.check_name(name, "name")
        return await self._get(
            endpoint_key(site, name), decode_endpoint, f"endpoint {site}/{name} does not exist"
        )

    async def list_endpoints(self, site: str = "") -> tuple[list[m.Endpoint], int]:
        if site:
            m.check_name(site, "site")
        kvs, rev = await self.store.get_prefix(f"{ENDPOINTS}{site}/" if site else ENDPOINTS)
        return [decode_endpoint(kv) for kv in kvs], rev

    async def get_connection(self, name: str) -> m.Connection:
        m.check_name(name, "name")
        return await self._get(connection_key(name), decode_connection, f"connection {name} does not exist")

    async def list_connections(self, site: str = "") -> tuple[list[m.Connection], int]:
        if site:
            m.check_name(site, "site")
        kvs, rev = await self.store.get_prefix(CONNECTIONS)
        conns = [decode_connection(kv) for kv in kvs]
        if site:
            conns = [c for c in conns if site in (c.a.site, c.b.site)]
        return conns, rev

    # ------------------------------------------------------------ sites

    async def create_site(self, site: m.Site) -> m.Site:
        site = m.validate_site(site)

        async def attempt() -> Plan:
            if await self.store.get(site_key(site.name)) is not None:
                raise AlreadyExists(f"site {site.name} already exists", "name")
            compares = [absent(site_key(site.name))]
            ops: list[Put | Delete] = [Put(site_key(site.name), encode(site))]
            if site.parent:
                parent = await self._get(
                    site_key(site.parent), decode_site, f"parent: site {site.parent} does not exist"
                )
                if parent.kind != m.SiteKind.REGION:
                    raise InvalidArgument(
                        f"{site.parent} is a {parent.kind}; a cell's parent must be a region", "parent"
                    )
                compares.append(mod_is(site_key(parent.name), parent.version))
                ops.append(Put(site_refs(parent.name) + site.name, b""))
            return Plan(compares, ops, lambda rev: dataclasses.replace(site, version=rev))

        return await self.commit(f"created site {site.name}", attempt)  # type: ignore[no-any-return]

    async def update_site(
        self,
        name: str,
        *,
        labels: dict[str, str],
        description: str,
        version: int = 0,
        kind: m.SiteKind | None = None,
        parent: str | None = None,
    ) -> m.Site:
        async def attempt() -> Plan:
            current = await self.get_site(name)
            _check_version(version, current.version, f"site {name}")
            if kind is not None and kind != current.kind:
                raise InvalidArgument(f"is fixed at creation ({current.kind}); delete and re-create", "kind")
            if parent is not None and parent != current.parent:
                raise InvalidArgument(
                    f"is fixed at creation ({current.parent or 'none'}); delete and re-create", "parent"
                )
            new = m.validate_site(dataclasses.replace(current, labels=labels, description=description))
            return Plan(
                [mod_is(site_key(name), current.version)],
                [Put(site_key(name), encode(new))],
                lambda rev: dataclasses.replace(new, version=rev),
            )

        return await self.commit(f"updated site {name}", attempt)  # type: ignore[no-any-return]

    async def delete_site(self, name: str, version: int = 0, force: bool = False) -> int:
        async def attempt() -> Plan:
            current = await self.get_site(name)
            _check_version(version, current.version, f"site {name}")
            endpoints, _ = await self.store.get_prefix(f"{ENDPOINTS}{name}/")
            if endpoints:
                names = ", ".join(decode_endpoint(kv).name for kv in endpoints[:10])
                raise FailedPrecondition(f"site {name} still has endpoints: {names}; delete them first")
            devices, _ = await self.store.get_prefix(device_names(name))
            if devices:
                names = ", ".join(kv.key.rsplit("/", 1)[1] for kv in devices[:10])
                raise FailedPrecondition(f"site {name} still has gateway devices: {names}; delete them first")
            cells, _ = await self.store.get_prefix(site_refs(name))
            if cells:
                names = ", ".join(kv.key.rsplit("/", 1)[1] for kv in cells[:10])
                raise FailedPrecondition(f"site {name} is the parent of cells: {names}; delete them first")
            guarded: list[Compare] = []
            ops: list[Put | Delete] = [Delete(site_key(name))]
            for guard in self.site_guards:
                compares, settle = await guard(name, force)
                guarded += compares
                ops += settle
            if current.parent:
                ops.append(Delete(site_refs(current.parent) + name))
            # What the site's agent reported for the global views goes with it (a region that no longer
            # exists must not hold back the others' quota raises).
            ops += [Delete(f"{VIEWS}{part}/{name}") for part in ("regions", "attached", "usage", "capacity")]
            ops.append(Delete(f"{VIEWS}addresses/{name}/", prefix=True))
            ops += [Delete(last_status_key(name)), Delete(desired_key(name))]
            return Plan(
                [mod_is(site_key(name), current.version), prefix_empty(f"{ENDPOINTS}{name}/"),
                 prefix_empty(site_refs(name)), prefix_empty(device_names(name)), *guarded],
                ops,
                lambda rev: rev,
            )

        return await self.commit(f"deleted site {name}", attempt)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ endpoints

    async def _users(self, ref: m.EndpointRef) -> tuple[list[m.Connection], int]:
        """The connections using an endpoint, and the revision of the read."""
        kvs, rev = await self.store.get_prefix(endpoint_refs(ref))
        conns = []
        for kv in kvs:
            conn_kv = await self.store.get(connection_key(kv.key.rsplit("/", 1)[1]))
            if conn_kv is not None:
                conns.append(decode_connection(conn_kv))
        return conns, rev

    async def create_endpoint(self, ep: m.Endpoint) -> m.Endpoint:
        ep = m.validate_endpoint(ep)
        key = endpoint_key(ep.site, ep.name)

        def plan(site: m.Site) -> Plan:
            if site.kind == m.SiteKind.EXTERNAL and ep.role != m.EndpointRole.REMOTE:
                raise InvalidArgument(
                    f"site {site.name} is external (it runs no agent to realize a local endpoint); "
                    "its endpoints are remote", "role")
            return Plan(
                [mod_is(site_key(site.name), site.version), absent(key)],
                [Put(key, encode(ep))],
                lambda rev: dataclasses.replace(ep, version=rev),
            )

        def fast() -> Plan | None:
            cache = self._cached()
            site = cache.sites.get(ep.site) if cache is not None else None
            if cache is None or site is None or ep.ref in cache.endpoints:
                return None
            return plan(site)

        async def attempt() -> Plan:
            site_kv, existing = await self.store.get_many([site_key(ep.site), key])
            if site_kv is None:
                raise NotFound(f"site: site {ep.site} does not exist")
            if existing is not None:
                raise AlreadyExists(f"endpoint {ep.site}/{ep.name} already exists", "name")
            return plan(decode_site(site_kv))

        return await self.commit(f"created endpoint {ep.site}/{ep.name}", attempt,  # type: ignore[no-any-return]
                                  fast)

    async def update_endpoint(self, ep: m.Endpoint, *, role_given: bool) -> m.Endpoint:
        """Replace address, asn, router_id and properties of ``ep.site/ep.name``."""

        async def attempt() -> Plan:
            current = await self.get_endpoint(ep.site, ep.name)
            _check_version(ep.version, current.version, f"endpoint {ep.site}/{ep.name}")
            if role_given and ep.role != current.role:
                raise InvalidArgument(f"is fixed at creation ({current.role}); delete and re-create", "role")
            new = m.validate_endpoint(dataclasses.replace(ep, role=current.role, version=0))
            key = endpoint_key(ep.site, ep.name)
            compares = [mod_is(key, current.version)]
            family = ipaddress.ip_address(new.address).version
            users, read_rev = await self._users(current.ref)
            # No connection may start using the endpoint, nor change, between this read and the commit
            # (two range compares, however many connections use the endpoint: etcd takes 128 operations).
            compares.append(Compare(endpoint_refs(current.ref), "mod", "<", read_rev + 1, prefix=True))
            compares.append(Compare(CONNECTIONS, "mod", "<", read_rev + 1, prefix=True))
            for conn in users:
                other_ref = conn.b if conn.a == current.ref else conn.a
                other = await self.get_endpoint(other_ref.site, other_ref.name)
                if ipaddress.ip_address(other.address).version != family:
                    raise InvalidArgument(
                        f"IPv{family} address cannot serve connection {conn.name}, "
                        f"whose other end {other_ref} is IPv{ipaddress.ip_address(other.address).version}",
                        "address",
                    )
                pass
            return Plan(compares, [Put(key, encode(new))], lambda rev: dataclasses.replace(new, version=rev))

        return await self.commit(f"updated endpoint {ep.site}/{ep.name}", attempt)  # type: ignore[no-any-return]

    async def delete_endpoint(self, site: str, name: str, version: int = 0) -> int:
        async def attempt() -> Plan:
            current = await self.get_endpoint(site, name)
            _check_version(version, current.version, f"endpoint {site}/{name}")
            users = await self.store.get_prefix(endpoint_refs(current.ref))
            if users[0]:
                names = ", ".join(kv.key.rsplit("/", 1)[1] for kv in users[0][:10])
                raise FailedPrecondition(
                    f"endpoint {site}/{name} is used by connections: {names}; delete them first"
                )
            key = endpoint_key(site, name)
            return Plan(
                [mod_is(key, current.version), prefix_empty(endpoint_refs(current.ref))],
                [Delete(key)],
                lambda rev: rev,
            )

        return await self.commit(f"deleted endpoint {site}/{name}", attempt)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ connections

    async def _end(self, ref: m.EndpointRef, label: str) -> m.Endpoint:
        return await self._get(
            endpoint_key(ref.site, ref.name), decode_endpoint, f"{label}: endpoint {ref} does not exist"
        )

    async def create_connection(self, conn: m.Connection) -> m.Connection:
        conn = m.validate_connection(conn)
        key = connection_key(conn.name)
        vni = conn.vxlan.vni if conn.vxlan is not None else 0

        def plan(a: m.Endpoint, b: m.Endpoint, used: dict[str, int], read_at: int) -> Plan:
            """The write, given both ends and the connections at each LOCAL end's site (counted at ``read_at``
            when near the budget, else 0 and not compared). Pair, VNI and segment are compared absent."""
            if a.role == m.EndpointRole.REMOTE and b.role == m.EndpointRole.REMOTE:
                raise InvalidArgument(
                    f"both {conn.a} and {conn.b} are REMOTE; at least one end must be LOCAL to a site's agent",
                    "b",
                )
            fa, fb = ipaddress.ip_address(a.address).version, ipaddress.ip_address(b.address).version
            if fa != fb:
                raise InvalidArgument(f"{conn.b} is IPv{fb} but {conn.a} is IPv{fa}", "b")
            compares = [absent(key), mod_is(endpoint_key(a.site, a.name), a.version),
                        mod_is(endpoint_key(b.site, b.name), b.version), absent(pair_key(conn))]
            for side, ref, ep in (("a", conn.a, a), ("b", conn.b, b)):
                if ep.role == m.EndpointRole.LOCAL and ref.site in used:
                    if used[ref.site] >= checks.MAX_CONNECTIONS_PER_SITE:
                        raise InvalidArgument(f"site {ref.site} has {used[ref.site]} connections; the budget is "
                                              f"{checks.MAX_CONNECTIONS_PER_SITE} per site", side)
                    if read_at and used[ref.site] >= checks.MAX_CONNECTIONS_PER_SITE - BUDGET_GUARD:
                        # Near the budget: no connection added at the site since it was counted.
                        compares.append(Compare(f"{REFS}endpoint/{ref.site}/", "mod", "<", read_at + 1,
                                                prefix=True))
            final = conn
            if conn.type == m.ConnectionType.BGP and conn.bgp is not None and not conn.bgp.address_families:
                final = dataclasses.replace(
                    conn, bgp=dataclasses.replace(conn.bgp, address_families=m.default_address_families(a.address))
                )
            ops: list[Put | Delete] = [
                Put(key, encode(final)),
                Put(pair_key(conn), conn.name.encode()),
                Put(endpoint_refs(conn.a) + conn.name, b""),
                Put(endpoint_refs(conn.b) + conn.name, b""),
            ]
            if vni:
                compares += [absent(vni_key(vni)), absent(segment_key(vni))]
                ops.append(Put(vni_key(vni), conn.name.encode()))
            return Plan(compares, ops, lambda rev: dataclasses.replace(final, version=rev))

        def fast() -> Plan | None:
            cache = self._cached()
            if cache is None or conn.name in cache.connections:
                return None
            a, b = cache.endpoints.get(conn.a), cache.endpoints.get(conn.b)
            if a is None or b is None:
                return None
            budget = checks.MAX_CONNECTIONS_PER_SITE - BUDGET_GUARD
            if any(cache.connection_count(ref.site) >= budget for ref in (conn.a, conn.b)):
                return None  # near a budget: counted in etcd and compared
            try:
                return plan(a, b, {}, 0)
            except IsthmusError:
                return None  # refused on what the cache shows: let etcd's content say so

        async def attempt() -> Plan:
            # Everything this write depends on, in one round trip.
            existing, a_kv, b_kv, pair, vni_owner, segment = await self.store.get_many([
                key, endpoint_key(conn.a.site, conn.a.name), endpoint_key(conn.b.site, conn.b.name),
                pair_key(conn), vni_key(vni), segment_key(vni)])
            if existing is not None:
                raise AlreadyExists(f"connection {conn.name} already exists", "name")
            if a_kv is None:
                raise NotFound(f"a: endpoint {conn.a} does not exist")
            if b_kv is None:
                raise NotFound(f"b: endpoint {conn.b} does not exist")
            a, b = decode_endpoint(a_kv), decode_endpoint(b_kv)
            read_at = await self.store.revision()
            used = {ref.site: await self.store.count(f"{REFS}endpoint/{ref.site}/", revision=read_at)
                    for ref, ep in ((conn.a, a), (conn.b, b)) if ep.role == m.EndpointRole.LOCAL}
            result = plan(a, b, used, read_at)
            if pair is not None:  # a topology policy's connection of the pair is replaced (absent(pair) is 4th)
                result.compares[3:4], replaced = await self._take_over(conn, pair)
                result.ops += replaced
            if vni:
                _check_vni_free(vni, conn.name, vni_owner, segment)
            return result

        return await self.commit(f"created connection {conn.name}", attempt,  # type: ignore[no-any-return]
                                  fast)

    async def _take_over(self, conn: m.Connection, pair: KV) -> tuple[list[Compare], list[Put | Delete]]:
        """What replaces the topology policy's connection of ``conn``'s endpoint pair by the explicit ``conn``
        (an explicit connection wins over a policy's); AlreadyExists when the pair's holder is not a policy's."""
        holder_kv = await self.store.get(connection_key(pair.value.decode()))
        holder = decode_connection(holder_kv) if holder_kv is not None else None
        if holder is None or not holder.policy or conn.policy:
            raise AlreadyExists(
                f"{conn.type.upper()} connection {pair.value.decode()} already joins {conn.a} and {conn.b}", "b")
        log.info("explicit connection %s replaces %s of topology policy %s", conn.name, holder.name, holder.policy)
        ops: list[Put | Delete] = [Delete(connection_key(holder.name)), Delete(endpoint_refs(holder.a) + holder.name),
                                   Delete(endpoint_refs(holder.b) + holder.name)]
        if holder.vxlan is not None:
            ops.append(Delete(vni_key(holder.vxlan.vni)))
        return [mod_is(pair.key, pair.mod_revision), mod_is(connection_key(holder.name), holder.version)], ops

    async def update_connection(self, conn: m.Connection, *, type_given: bool, owner: str = "") -> m.Connection:
        """Replace parameters, admin state and description; ends and type are fixed. ``owner``: the topology
        policy writing (a policy's connection changes only through it, an explicit one never through one)."""

        async def attempt() -> Plan:
            current = await self.get_connection(conn.name)
            _check_version(conn.version, current.version, f"connection {conn.name}")
            _check_owner(current, owner)
            if type_given and conn.type != current.type:
                raise InvalidArgument(f"is fixed at creation ({current.type}); delete and re-create", "type")
            for label, given, stored in (("a", conn.a, current.a), ("b", conn.b, current.b)):
                if (given.site or given.name) and given != stored:
                    raise InvalidArgument(f"is fixed at creation ({stored}); delete and re-create", label)
            new = dataclasses.replace(conn, a=current.a, b=current.b, type=current.type, policy=current.policy,
                                      version=0)
            if new.type == m.ConnectionType.BGP and new.bgp is None:
                new = dataclasses.replace(new, bgp=current.bgp)
            if new.type == m.ConnectionType.VXLAN and new.vxlan is None:
                new = dataclasses.replace(new, vxlan=current.vxlan)
            new = m.validate_connection(new)
            if new.bgp is not None and not new.bgp.address_families:
                a = await self._end(new.a, "a")
                new = dataclasses.replace(
                    new, bgp=dataclasses.replace(new.bgp, address_families=m.default_address_families(a.address))
                )
            key = connection_key(conn.name)
            compares = [mod_is(key, current.version)]
            ops: list[Put | Delete] = [Put(key, encode(new))]
            old_vni = current.vxlan.vni if current.vxlan else 0
            new_vni = new.vxlan.vni if new.vxlan else 0
            if new_vni != old_vni:
                _check_vni_free(new_vni, conn.name, *await self.store.get_many([vni_key(new_vni),
                                                                               segment_key(new_vni)]))
                compares += [absent(vni_key(new_vni)), absent(segment_key(new_vni))]
                ops += [Delete(vni_key(old_vni)), Put(vni_key(new_vni), conn.name.encode())]
            return Plan(compares, ops, lambda rev: dataclasses.replace(new, version=rev))

        return await self.commit(f"updated connection {conn.name}", attempt)  # type: ignore[no-any-return]

    async def delete_connection(self, name: str, version: int = 0, owner: str = "") -> int:
        async def attempt() -> Plan:
            current = await self.get_connection(name)
            _check_version(version, current.version, f"connection {name}")
            _check_owner(current, owner)
            ops: list[Put | Delete] = [
                Delete(connection_key(name)),
                Delete(pair_key(current)),
                Delete(endpoint_refs(current.a) + name),
                Delete(endpoint_refs(current.b) + name),
            ]
            if current.vxlan is not None:
                ops.append(Delete(vni_key(current.vxlan.vni)))
            return Plan([mod_is(connection_key(name), current.version)], ops, lambda rev: rev)

        return await self.commit(f"deleted connection {name}", attempt)  # type: ignore[no-any-return]
