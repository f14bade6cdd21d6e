"""The neutron driver: a provider network in the site's Neutron for every peering the dataplane established.

A companion driver: it realizes no peering itself. For each peering another
driver has ESTABLISHED it makes sure the site's Neutron has a provider network
describing the inter-site network (and a subnet when the local endpoint gives
one), so that OpenStack can use it; it deletes that network when the peering is
no longer given to it. Its ERROR (Neutron refused the network) turns the
peering's state to ERROR.

What isthmus owns: a network (or subnet) is the driver's only when it carries
BOTH tags ``isthmus:<site>`` and ``isthmus-connection:<connection>`` AND is
named ``<name_prefix><site>-<connection>``. Anything else, even a network of
that name or one with a similar tag, is never updated or deleted. Tags are set
right after the create (Neutron before 2023.2 takes no tags in the POST); when
setting them fails the new network is deleted again, so an untagged leftover
only remains if the agent dies in between (delete it by hand).

Options (``--driver-opt neutron.KEY=VALUE``):
  cloud             the cloud's name in clouds.yaml (the usual places, or $OS_CLIENT_CONFIG_FILE)
  region            its region (default: the cloud's region_name)
  project_id        the project the networks are created in (default: the credentials' project)
  endpoint          use this network endpoint instead of the catalog's (e.g. http://127.0.0.1:9696/)
  auth              ``none``: no Keystone at all, for a neutron-server with ``auth_strategy = noauth``
                    (development and tests); needs ``endpoint`` and ``project_id``, excludes ``cloud``,
                    and sends ``X-Project-Id: <project_id>`` and ``X-Roles: admin`` with every request
  name_prefix       prefix of the names of the networks and subnets (default ``isthmus-``); changing it
                    makes the old networks foreign: they are left alone, delete them by hand
  timeout           seconds one Neutron API call may take (default 30)
  network_type      flat, vlan, vxlan, geneve or gre (default vxlan)
  physical_network  the provider physical network (required for flat, allowed for vlan, refused for the
                    tunnel types; default: Neutron's choice for vlan)
  segmentation_id   the VLAN id or tunnel id. Default: the peering's VNI for a VXLAN peering on a vxlan
                    network, else Neutron allocates one from its ranges. A fixed id serves one peering only.
  shared            true/false (default false): the network is usable by every project
  external          true/false (default false): ``router:external``, routers may use it as gateway

The five network options may be given per connection type, which wins over the
plain key: ``neutron.bgp.network_type=vlan neutron.bgp.physical_network=physnet1``
makes the networks of BGP peerings VLANs on physnet1 while VXLAN peerings keep
vxlan networks with their VNI.

Local endpoint properties (per peering):
  neutron.subnet          a CIDR: the network gets one subnet with it (DHCP off)
  neutron.gateway         its gateway address, or ``none`` for no gateway (default: Neutron's choice)
  neutron.allocation_pool START-END addresses Neutron may hand out (default: Neutron's choice)

What differs from the desired state is updated in place where Neutron allows it
(name, description, shared, router:external, a VLAN's segmentation id, a
subnet's gateway, pool and DHCP) and otherwise replaced (network type, physical
network, project, tunnel id, subnet CIDR); a replacement Neutron refuses (ports
still on the network) shows as the peering's ERROR.

openstacksdk calls block, so all of them run on one worker thread; the
agent's event loop never waits on Neutron.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import openstack
from keystoneauth1 import exceptions as ks_exceptions
from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from isthmus.cloud.session import quiet_openstacksdk
from isthmus.core.model import ConnectionType, DesiredPeering, ObservedPeering, PeeringState
from isthmus.drivers.base import Driver, DriverContext, DriverError, StateClock

log = logging.getLogger(__name__)

NETWORK_TYPES = ("flat", "vlan", "vxlan", "geneve", "gre")
TUNNEL_TYPES = frozenset({"vxlan", "geneve", "gre"})
MAX_VLAN = 4094
MAX_TUNNEL_ID = 16_777_215
TYPE_OPTIONS = ("network_type", "physical_network", "segmentation_id", "shared", "external")
OPTIONS = ("cloud", "region", "project_id", "endpoint", "auth", "name_prefix", "timeout", *TYPE_OPTIONS)
DEFAULT_PREFIX = "isthmus-"
DEFAULT_TIMEOUT = 30.0
SUBNET_PROPERTY = "neutron.subnet"
GATEWAY_PROPERTY = "neutron.gateway"
POOL_PROPERTY = "neutron.allocation_pool"
CONNECTION_TAG = "isthmus-connection:"
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

T = TypeVar("T")



def site_tag(site: str) -> str:
    """The tag every network and subnet of site ``site`` carries."""
    return f"isthmus:{site}"


def connection_tag(connection: str) -> str:
    """The tag naming the connection a network or subnet belongs to."""
    return f"{CONNECTION_TAG}{connection}"


def _neutron_text(exc: os_exceptions.HttpException) -> str:
    """Neutron's own message (the NeutronError body) and the HTTP status."""
    text = exc.details or exc.message or str(exc)
    return f"{text} (HTTP {exc.status_code})" if exc.status_code else text


class _PeeringError(Exception):
    """One peering cannot be realized; the others go on."""


@dataclass(frozen=True)
class NetworkSettings:
    """How the networks of one connection type are made (from the options)."""

    network_type: str
    physical_network: str | None  # None: Neutron's choice (vlan) or none at all (tunnels)
    segmentation_id: int | None  # None: the VNI (VXLAN peering on vxlan) or Neutron's choice
    shared: bool
    external: bool


@dataclass(frozen=True)
class _SubnetSpec:
    cidr: str
    ip_version: int
    gateway: str | None  # None: Neutron's choice, not managed; "": no gateway
    pool: tuple[str, str] | None  # None: Neutron's choice, not managed


@dataclass(frozen=True)
class _NetworkSpec:
    """What one peering needs in Neutron."""

    connection: str
    name: str
    description: str
    network_type: str
    physical_network: str | None  # None: not compared
    segmentation_id: int | None  # None: not compared
    shared: bool
    external: bool
    project_id: str | None  # None: not compared
    subnet: _SubnetSpec | None


@dataclass(frozen=True)
class _Net:
    """One network as Neutron shows it."""

    id: str
    name: str
    tags: frozenset[str]
    description: str
    network_type: str | None
    physical_network: str | None
    segmentation_id: int | None
    shared: bool
    external: bool
    project_id: str
    subnet_ids: frozenset[str]


@dataclass(frozen=True)
class _Sub:
    """One subnet as Neutron shows it."""

    id: str
    name: str
    tags: frozenset[str]
    network_id: str
    cidr: str
    ip_version: int
    gateway: str | None
    pools: tuple[tuple[str, str], ...]
    dhcp: bool


@dataclass(frozen=True)
class _Snapshot:
    networks: list[_Net]  # those tagged for this site, owned or not
    subnets: list[_Sub]


def _as_net(res: Any) -> _Net:
    seg = res.provider_segmentation_id
    return _Net(
        id=str(res.id),
        name=str(res.name or ""),
        tags=frozenset(res.tags or ()),
        description=str(res.description or ""),
        network_type=res.provider_network_type,
        physical_network=res.provider_physical_network,
        segmentation_id=int(seg) if seg is not None else None,
        shared=bool(res.is_shared),
        external=bool(res.is_router_external),
        project_id=str(res.project_id or ""),
        subnet_ids=frozenset(res.subnet_ids or ()),
    )


def _as_sub(res: Any) -> _Sub:
    return _Sub(
        id=str(res.id),
        name=str(res.name or ""),
        tags=frozenset(res.tags or ()),
        network_id=str(res.network_id),
        cidr=str(res.cidr),
        ip_version=int(res.ip_version),
        gateway=res.gateway_ip,
        pools=tuple((str(p["start"]), str(p["end"])) for p in res.allocation_pools or ()),
        dhcp=bool(res.is_dhcp_enabled),
    )


def _parse_bool(key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise DriverError(f"neutron.{key}: {value!r} is not true or false", terminal=True)


def _settings(opts: Mapping[str, str], ctype: ConnectionType) -> NetworkSettings:
    """The network settings of connection type ``ctype``: ``<type>.<key>`` wins over ``<key>``.

    Raises DriverError(terminal=True) naming the option for a value or combination Neutron would refuse.
    """

    def get(key: str) -> tuple[str, str | None]:
        typed = f"{ctype}.{key}"
        if typed in opts:
            return typed, opts[typed]
        return key, opts.get(key)

    key, ntype = get("network_type")
    ntype = ntype or "vxlan"
    if ntype not in NETWORK_TYPES:
        raise DriverError(f"neutron.{key}: {ntype!r} is not one of {', '.join(NETWORK_TYPES)}", terminal=True)
    key, physnet = get("physical_network")
    if ntype == "flat" and not physnet:
        raise DriverError(f"neutron.{ctype}.physical_network: a flat network needs a physical network "
                          f"(set neutron.physical_network or neutron.{ctype}.physical_network)", terminal=True)
    if ntype in TUNNEL_TYPES and physnet:
        raise DriverError(f"neutron.{key}: a {ntype} network has no physical network", terminal=True)
    key, seg_text = get("segmentation_id")
    seg: int | None = None
    if seg_text:
        if ntype == "flat":
            raise DriverError(f"neutron.{key}: a flat network has no segmentation id", terminal=True)
        limit = MAX_VLAN if ntype == "vlan" else MAX_TUNNEL_ID
        try:
            seg = int(seg_text)
        except ValueError:
            raise DriverError(f"neutron.{key}: {seg_text!r} is not a number", terminal=True) from None
        if not 1 <= seg <= limit:
            raise DriverError(f"neutron.{key}: {seg} is out of range 1..{limit} for {ntype}", terminal=True)
    key, shared = get("shared")
    key2, external = get("external")
    return NetworkSettings(
        network_type=ntype,
        physical_network=physnet or None,
        segmentation_id=seg,
        shared=_parse_bool(key, shared) if shared else False,
        external=_parse_bool(key2, external) if external else False,
    )


def _subnet_spec(props: Mapping[str, str]) -> _SubnetSpec | None:
    """The subnet the local endpoint's properties ask for; raises _PeeringError naming the bad property."""
    cidr_text = props.get(SUBNET_PROPERTY, "").strip()
    if not cidr_text:
        for key in (GATEWAY_PROPERTY, POOL_PROPERTY):
            if key in props:
                raise _PeeringError(f"endpoint property {key} needs {SUBNET_PROPERTY}")
        return None
    try:
        net = ipaddress.ip_network(cidr_text, strict=True)
    except ValueError as exc:
        raise _PeeringError(f"endpoint property {SUBNET_PROPERTY}: {cidr_text!r} is not a CIDR ({exc})") from None

    def inside(key: str, text: str) -> str:
        try:
            addr = ipaddress.ip_address(text.strip())
        except ValueError:
            raise _PeeringError(f"endpoint property {key}: {text!r} is not an address") from None
        if addr not in net:
            raise _PeeringError(f"endpoint property {key}: {addr} is not in {net}")
        return str(addr)

    gateway: str | None = None
    if GATEWAY_PROPERTY in props:
        text = props[GATEWAY_PROPERTY]
        gateway = "" if text.strip().lower() == "none" else inside(GATEWAY_PROPERTY, text)
    pool: tuple[str, str] | None = None
    if POOL_PROPERTY in props:
        start, sep, end = props[POOL_PROPERTY].partition("-")
        if not sep:
            raise _PeeringError(f"endpoint property {POOL_PROPERTY}: {props[POOL_PROPERTY]!r} is not START-END")
        pool = (inside(POOL_PROPERTY, start), inside(POOL_PROPERTY, end))
        if int(ipaddress.ip_address(pool[0])) > int(ipaddress.ip_address(pool[1])):
            raise _PeeringError(f"endpoint property {POOL_PROPERTY}: {pool[0]} is after {pool[1]}")
    return _SubnetSpec(str(net), net.version, gateway, pool)


class NeutronDriver(Driver):
    """Keeps a provider network in the site's Neutron for every established peering (see the module docstring).

    Options (``context.options``): ``cloud``, ``region``, ``project_id``, ``endpoint``, ``auth``,
    ``name_prefix``, ``timeout`` and the network options, plain or per connection type.
    """

    name = "neutron"
    handles = frozenset({ConnectionType.BGP, ConnectionType.VXLAN})
    companion = True

    def __init__(self, context: DriverContext) -> None:
        """``context``: the site (part of every name and tag), state directory (unused) and options.

        Raises DriverError(terminal=True) naming the option for an unknown
        option, a value it cannot use, or a cloud clouds.yaml does not know.
        Talks to no server yet (``apply`` does).
        """
        super().__init__(context)
        opts = dict(context.options)
        typed = {f"{t}.{k}" for t in ConnectionType for k in TYPE_OPTIONS}
        for key in opts:
            if key not in OPTIONS and key not in typed:
                raise DriverError(f"neutron.{key}: unknown option (known: {', '.join(OPTIONS)}, and "
                                  f"bgp.KEY / vxlan.KEY for {', '.join(TYPE_OPTIONS)})", terminal=True)
        self.settings = {t: _settings(opts, t) for t in ConnectionType}
        self.prefix = opts.get("name_prefix", DEFAULT_PREFIX)
        self.project_id = opts.get("project_id") or None
        try:
            timeout = float(opts.get("timeout", DEFAULT_TIMEOUT))
        except ValueError:
            raise DriverError(f"neutron.timeout: {opts['timeout']!r} is not a number", terminal=True) from None
        if timeout <= 0:
            raise DriverError("neutron.timeout: must be positive", terminal=True)
        auth = opts.get("auth", "")
        endpoint = opts.get("endpoint", "")
        cloud = opts.get("cloud", "")
        if auth not in ("", "none"):
            raise DriverError(f"neutron.auth: {auth!r}: only 'none' (no Keystone) is known; credentials "
                              "come from clouds.yaml through neutron.cloud", terminal=True)
        if auth == "none":
            if cloud:
                raise DriverError("neutron.auth=none excludes neutron.cloud", terminal=True)
            if not endpoint or not self.project_id:
                raise DriverError("neutron.auth=none needs neutron.endpoint and neutron.project_id", terminal=True)
        elif not cloud:
            raise DriverError("neutron.cloud: required (the cloud's name in clouds.yaml), "
                              "or neutron.auth=none with neutron.endpoint for a Neutron without Keystone",
                              terminal=True)
        self._where = endpoint or f"cloud {cloud}" + (f" region {opts['region']}" if opts.get("region") else "")
        self._site_tag = site_tag(context.site)
        quiet_openstacksdk()
        kwargs: dict[str, Any] = {"api_timeout": timeout}
        if endpoint:
            kwargs["network_endpoint_override"] = endpoint
        if opts.get("region"):
            kwargs["region_name"] = opts["region"]
        self._conn: Connection
        try:
            if auth == "none":
                self._conn = openstack.connect(auth_type="none", **kwargs)
                self._conn.session.additional_headers = {"X-Project-Id": opts["project_id"], "X-Roles": "admin"}
            else:
                self._conn = openstack.connect(cloud=cloud, **kwargs)
        except (os_exceptions.SDKException, ks_exceptions.ClientException) as exc:
            raise DriverError(f"neutron.cloud: cannot use cloud {cloud!r}: {exc}", terminal=True) from exc
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="isthmus-neutron")
        self._closed = False
        self._specs: dict[str, _NetworkSpec] = {}  # by connection, of the last apply
        self._names: tuple[str, ...] = ()
        self._errors: dict[str, str] = {}  # per-peering failures of the last apply
        self._removal_errors: dict[str, str] = {}  # by network id, logged once
        self._clock = StateClock()

    # ------------------------------------------------------------ the Driver interface

    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        """Make the site's isthmus networks match ``peerings`` (keyed by connection name; BGP or VXLAN).

        Creates a missing network (and subnet), updates or replaces one that
        differs, and deletes owned networks (with their owned subnets) whose
        connection is not in ``peerings``. Foreign networks and subnets are
        never touched. A peering Neutron refuses (segmentation id in use,
        quota, ports on a network to replace) or whose endpoint properties
        are wrong is recorded and reported ERROR by ``observe``; the others go on.

        Raises DriverError when Neutron cannot be reached or refuses to list
        networks (terminal for a 4xx such as 401/403, retryable otherwise).
        """
        specs: dict[str, _NetworkSpec] = {}
        errors: dict[str, str] = {}
        for name, peering in peerings.items():
            try:
                specs[name] = self._spec(peering)
            except _PeeringError as exc:
                errors[name] = str(exc)
        errors.update(await self._run(self._apply_sync, specs, set(errors)))
        for name, text in errors.items():
            if text != self._errors.get(name):  # once, not every pass
                log.warning("site %s: connection %s: %s", self.context.site, name, text)
        self._specs = specs
        self._errors = errors
        self._clock.keep(peerings)
        self._names = tuple(peerings)

    async def observe(self) -> dict[str, ObservedPeering]:
        """The state of every peering of the last ``apply``, keyed by connection name.

        ESTABLISHED when its network (and subnet) exists in Neutron as
        desired; ERROR with Neutron's message when ``apply`` failed for it, or
        naming what is missing or differs.

        Raises DriverError when Neutron cannot be read (see ``apply``).
        """
        problems = await self._run(self._observe_sync, dict(self._specs))
        out: dict[str, ObservedPeering] = {}
        for name in self._names:
            error = self._errors.get(name) or problems.get(name, "")
            state = PeeringState.ERROR if error else PeeringState.ESTABLISHED
            out[name] = self._clock.observed(name, state, error, self.name)
        return out

    async def close(self) -> None:
        """Close the connection and the worker thread; every network stays as it is."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._worker, self._conn.close)
        self._worker.shutdown(wait=True)

    # ------------------------------------------------------------ on the event loop

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the worker thread, Neutron's failures as DriverError."""
        if self._closed:
            raise DriverError("the neutron driver is closed")
        call = functools.partial(fn, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, call)
        except os_exceptions.HttpException as exc:
            status = exc.status_code or 0
            raise DriverError(f"Neutron at {self._where}: {_neutron_text(exc)}",
                              terminal=400 <= status < 500 and status not in (408, 429)) from exc
        except (os_exceptions.SDKException, ks_exceptions.ClientException) as exc:
            raise DriverError(f"Neutron at {self._where} is unreachable: {exc}") from exc

    def name_of(self, connection: str) -> str:
        """The name of the network and subnet of ``connection``."""
        return f"{self.prefix}{self.context.site}-{connection}"

    def _spec(self, peering: DesiredPeering) -> _NetworkSpec:
        s = self.settings[peering.type]
        seg = s.segmentation_id
        if seg is None and peering.type == ConnectionType.VXLAN and s.network_type == "vxlan":
            if peering.vxlan is None:
                raise _PeeringError("the peering has no VXLAN parameters")
            seg = peering.vxlan.vni
        vni = f" (VNI {peering.vxlan.vni})" if peering.vxlan is not None else ""
        return _NetworkSpec(
            connection=peering.connection,
            name=self.name_of(peering.connection),
            description=(f"isthmus {peering.type.upper()} connection {peering.connection}{vni} of site "
                         f"{self.context.site} to {peering.remote.site}/{peering.remote.name}"),
            network_type=s.network_type,
            physical_network=s.physical_network,
            segmentation_id=seg,
            shared=s.shared,
            external=s.external,
            project_id=self.project_id,
            subnet=_subnet_spec(peering.local.properties),
        )

    # ------------------------------------------------------------ on the worker thread

    def _read(self) -> _Snapshot:
        net = self._conn.network
        return _Snapshot(
            networks=[_as_net(n) for n in net.networks(tags=self._site_tag)],
            subnets=[_as_sub(s) for s in net.subnets(tags=self._site_tag)],
        )

    def _owner(self, tags: frozenset[str], name: str) -> str | None:
        """The connection a network or subnet with ``tags`` and ``name`` belongs to, None if it is not ours."""
        if self._site_tag not in tags:
            return None
        connections = [t.removeprefix(CONNECTION_TAG) for t in tags if t.startswith(CONNECTION_TAG)]
        if len(connections) != 1 or name != self.name_of(connections[0]):
            return None
        return connections[0]

    def _owned(self, snap: _Snapshot) -> tuple[dict[str, list[_Net]], dict[str, list[_Sub]]]:
        """Owned networks by connection, and owned subnets by network id."""
        nets: dict[str, list[_Net]] = {}
        for n in snap.networks:
            owner = self._owner(n.tags, n.name)
            if owner is not None:
                nets.setdefault(owner, []).append(n)
        subs: dict[str, list[_Sub]] = {}
        for s in snap.subnets:
            if self._owner(s.tags, s.name) is not None:
                subs.setdefault(s.network_id, []).append(s)
        return nets, subs

    def _apply_sync(self, specs: dict[str, _NetworkSpec], failed: set[str]) -> dict[str, str]:
        """Create, update, replace and remove networks; the failure of each peering, by connection."""
        snap = self._read()
        nets, subs = self._owned(snap)
        errors: dict[str, str] = {}
        ids = {n.id for found in nets.values() for n in found}
        self._removal_errors = {i: text for i, text in self._removal_errors.items() if i in ids}
        # Removals first: they free the segmentation ids a create may need.
        for owner, found in nets.items():
            if owner in failed:
                continue  # its endpoint properties are wrong for now: leave what exists
            keep = self._pick(specs[owner], found) if owner in specs else None
            for n in found:
                if n is not keep:
                    why = "duplicate" if owner in specs else "its connection is gone"
                    self._remove(n, subs.get(n.id, []), why)
        for name, spec in specs.items():
            found = nets.get(name, [])
            current = self._pick(spec, found) if found else None
            try:
                self._ensure(spec, current, subs.get(current.id, []) if current else [])
            except _PeeringError as exc:
                errors[name] = str(exc)
            except os_exceptions.HttpException as exc:
                errors[name] = f"{spec.name}: {_neutron_text(exc)}"
        return errors

    def _pick(self, spec: _NetworkSpec, found: list[_Net]) -> _Net:
        """Of several owned networks of one connection, the one to keep: the best match."""
        return min(found, key=lambda n: (len(self._net_diffs(spec, n)), n.id))

    def _remove(self, n: _Net, owned_subs: list[_Sub], why: str) -> None:
        foreign = n.subnet_ids - {s.id for s in owned_subs}
        try:
            if foreign:
                raise _PeeringError(f"it has subnets isthmus does not own ({', '.join(sorted(foreign))})")
            for s in owned_subs:
                self._conn.network.delete_subnet(s.id)
            self._conn.network.delete_network(n.id)
        except (_PeeringError, os_exceptions.HttpException) as exc:
            text = str(exc) if isinstance(exc, _PeeringError) else _neutron_text(exc)
            if self._removal_errors.get(n.id) != text:  # once, not every pass
                self._removal_errors[n.id] = text
                log.warning("site %s: cannot remove network %s (%s, %s): %s", self.context.site, n.name, n.id,
                            why, text)
            return
        self._removal_errors.pop(n.id, None)
        log.info("site %s: removed network %s (%s): %s", self.context.site, n.name, n.id, why)

    def _net_diffs(self, spec: _NetworkSpec, n: _Net) -> dict[str, tuple[Any, Any]]:
        """What differs, by Neutron attribute: (have, want)."""
        want: dict[str, tuple[Any, Any]] = {
            "description": (n.description, spec.description),
            "shared": (n.shared, spec.shared),
            "router:external": (n.external, spec.external),
            "provider:network_type": (n.network_type, spec.network_type),
        }
        if spec.physical_network is not None:
            want["provider:physical_network"] = (n.physical_network, spec.physical_network)
        if spec.segmentation_id is not None:
            want["provider:segmentation_id"] = (n.segmentation_id, spec.segmentation_id)
        if spec.project_id is not None:
            want["project_id"] = (n.project_id, spec.project_id)
        return {k: v for k, v in want.items() if v[0] != v[1]}

    def _ensure(self, spec: _NetworkSpec, n: _Net | None, owned_subs: list[_Sub]) -> None:
        if n is not None:
            diffs = self._net_diffs(spec, n)
            plain = {_SDK_NAMES[k]: want for k, (_, want) in diffs.items() if k in _UPDATABLE}
            provider = {_SDK_NAMES[k]: want for k, (_, want) in diffs.items() if k.startswith("provider:")}
            if "project_id" in diffs:  # Neutron never moves a network to another project
                n = self._replace(spec, n, owned_subs, _describe(diffs, {"project_id"}))
                owned_subs = []
                plain = provider = {}
            if plain:
                self._conn.network.update_network(n.id, **plain)
                log.info("site %s: updated network %s of connection %s: %s", self.context.site, spec.name,
                         spec.connection, _describe(diffs, _UPDATABLE))
            if provider:
                try:
                    self._conn.network.update_network(n.id, **provider)
                    log.info("site %s: updated network %s of connection %s: %s", self.context.site, spec.name,
                             spec.connection, _describe(diffs, _PROVIDER))
                except os_exceptions.BadRequestException as exc:  # e.g. "Only VLAN type networks can be updated"
                    log.info("site %s: network %s: Neutron cannot update %s in place (%s)", self.context.site,
                             spec.name, _describe(diffs, _PROVIDER), _neutron_text(exc))
                    n = self._replace(spec, n, owned_subs, _describe(diffs, _PROVIDER))
                    owned_subs = []
        if n is None:
            n = self._create(spec)
        self._ensure_subnet(spec, n, owned_subs)

    def _replace(self, spec: _NetworkSpec, n: _Net, owned_subs: list[_Sub], why: str) -> _Net:
        foreign = n.subnet_ids - {s.id for s in owned_subs}
        if foreign:
            raise _PeeringError(f"{spec.name}: {why} needs a new network, but it has subnets isthmus does not own "
                                f"({', '.join(sorted(foreign))})")
        try:
            for s in owned_subs:
                self._conn.network.delete_subnet(s.id)
            self._conn.network.delete_network(n.id)
        except os_exceptions.HttpException as exc:
            raise _PeeringError(f"{spec.name}: {why} needs a new network, and Neutron refuses to delete the old "
                                f"one: {_neutron_text(exc)}") from exc
        log.info("site %s: deleted network %s (%s) of connection %s to replace it: %s", self.context.site,
                 spec.name, n.id, spec.connection, why)
        return self._create(spec)

    def _create(self, spec: _NetworkSpec) -> _Net:
        attrs: dict[str, Any] = {
            "name": spec.name,
            "description": spec.description,
            "provider_network_type": spec.network_type,
            "is_shared": spec.shared,
            "is_router_external": spec.external,
        }
        if spec.physical_network is not None:
            attrs["provider_physical_network"] = spec.physical_network
        if spec.segmentation_id is not None:
            attrs["provider_segmentation_id"] = spec.segmentation_id
        if spec.project_id is not None:
            attrs["project_id"] = spec.project_id
        res = self._conn.network.create_network(**attrs)
        try:
            # Without its tags the network would look foreign for ever.
            self._conn.network.set_tags(res, [self._site_tag, connection_tag(spec.connection)])
        except os_exceptions.HttpException:
            self._conn.network.delete_network(res.id)
            raise
        n = _as_net(res)
        log.info("site %s: created network %s (%s) for connection %s: %s%s%s", self.context.site, spec.name, n.id,
                 spec.connection, n.network_type, f" {n.physical_network}" if n.physical_network else "",
                 f" {n.segmentation_id}" if n.segmentation_id is not None else "")
        return n

    def _sub_diffs(self, want: _SubnetSpec, s: _Sub) -> dict[str, tuple[Any, Any]]:
        """What differs in place, by Neutron attribute: (have, want)."""
        pairs: dict[str, tuple[Any, Any]] = {"enable_dhcp": (s.dhcp, False)}
        if want.gateway is not None:
            pairs["gateway_ip"] = (s.gateway, want.gateway or None)
        if want.pool is not None:
            pairs["allocation_pools"] = (s.pools, (want.pool,))
        return {k: v for k, v in pairs.items() if v[0] != v[1]}

    def _ensure_subnet(self, spec: _NetworkSpec, n: _Net, owned_subs: list[_Sub]) -> None:
        want = spec.subnet
        keep = next((s for s in owned_subs if want is not None and s.cidr == want.cidr), None)
        for s in owned_subs:
            if s is not keep:
                self._conn.network.delete_subnet(s.id)
                log.info("site %s: removed subnet %s (%s) of connection %s", self.context.site, s.cidr, s.id,
                         spec.connection)
        if want is None:
            return
        if keep is not None:
            diffs = self._sub_diffs(want, keep)
            if diffs:
                self._conn.network.update_subnet(keep.id, **{_SDK_NAMES.get(k, k): _to_api(k, w)
                                                             for k, (_, w) in diffs.items()})
                log.info("site %s: updated subnet %s of connection %s: %s", self.context.site, want.cidr,
                         spec.connection, _describe(diffs, set(diffs)))
            return
        attrs: dict[str, Any] = {
            "name": spec.name,
            "network_id": n.id,
            "cidr": want.cidr,
            "ip_version": want.ip_version,
            "is_dhcp_enabled": False,
        }
        if want.gateway is not None:
            attrs["gateway_ip"] = want.gateway or None
        if want.pool is not None:
            attrs["allocation_pools"] = [{"start": want.pool[0], "end": want.pool[1]}]
        if spec.project_id is not None:
            attrs["project_id"] = spec.project_id
        res = self._conn.network.create_subnet(**attrs)
        try:
            self._conn.network.set_tags(res, [self._site_tag, connection_tag(spec.connection)])
        except os_exceptions.HttpException:
            self._conn.network.delete_subnet(res.id)
            raise
        log.info("site %s: created subnet %s (%s) on network %s for connection %s", self.context.site, want.cidr,
                 res.id, spec.name, spec.connection)

    def _observe_sync(self, specs: dict[str, _NetworkSpec]) -> dict[str, str]:
        """What is missing or differs for each peering, by connection ("" when all is as desired)."""
        snap = self._read()
        nets, subs = self._owned(snap)
        out: dict[str, str] = {}
        for name, spec in specs.items():
            found = nets.get(name)
            if not found:
                out[name] = f"network {spec.name} is missing"
                continue
            n = self._pick(spec, found)
            problems = [f"{k} is {have} (want {want})" for k, (have, want) in self._net_diffs(spec, n).items()]
            owned_subs = subs.get(n.id, [])
            want = spec.subnet
            if want is not None:
                s = next((s for s in owned_subs if s.cidr == want.cidr), None)
                if s is None:
                    problems.append(f"subnet {want.cidr} is missing")
                else:
                    problems += [f"subnet {k} is {have} (want {w})"
                                 for k, (have, w) in self._sub_diffs(want, s).items()]
            extra = [s.cidr for s in owned_subs if want is None or s.cidr != want.cidr]
            if extra:
                problems.append(f"unwanted subnets {', '.join(extra)}")
            out[name] = f"network {spec.name}: {'; '.join(problems)}" if problems else ""
        return out


# Neutron attribute -> openstacksdk attribute
_SDK_NAMES = {
    "description": "description",
    "shared": "is_shared",
    "router:external": "is_router_external",
    "provider:network_type": "provider_network_type",
    "provider:physical_network": "provider_physical_network",
    "provider:segmentation_id": "provider_segmentation_id",
    "enable_dhcp": "is_dhcp_enabled",
}
_UPDATABLE = frozenset({"description", "shared", "router:external"})
_PROVIDER = frozenset({"provider:network_type", "provider:physical_network", "provider:segmentation_id"})


def _to_api(key: str, value: Any) -> Any:
    if key == "allocation_pools":
        return [{"start": start, "end": end} for start, end in value]
    return value


def _describe(diffs: Mapping[str, tuple[Any, Any]], keys: frozenset[str] | set[str]) -> str:
    return ", ".join(f"{k} {have} -> {want}" for k, (have, want) in diffs.items() if k in keys)
