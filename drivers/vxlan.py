"""The vxlan driver: one kernel VXLAN device per VNI, configured over netlink (pyroute2, through drivers/netlink.py).

All VXLAN peerings with the same VNI share one device named ``isx<VNI>``: the
VNI, local address and UDP port, MAC learning off, the MTU, and one all-zeros
FDB entry per remote VTEP (head-end replication: a broadcast goes to every
remote). A point-to-point connection is the case of one remote; the tunnels of
a border-gateway segment, which share the segment's VNI at a site, are the case
of several. The kernel never forwards between the remotes of one device, so
one device per site and segment cannot loop. IPv4 and IPv6 underlays work alike.

The peerings of one VNI must agree on local address, UDP port, MTU and bridge;
one that disagrees with the others is ERROR (naming the difference) and the
others go on. When a device exists, the peerings that agree with it keep it.

A device is the driver's only when its name has the ``isx`` prefix AND its
ifalias (IFLA_IFALIAS) starts with ``isthmus:<site>:``; the driver writes
``isthmus:<site>:vni<VNI>``, and converges devices marked by older versions
(``isthmus:<site>:<connection>``) to that. Anything else, even a device named
``isx...``, is never changed or removed.

Options (``--driver-opt vxlan.KEY=VALUE``):
  bridge    enslave every device to this existing bridge; a peering's local endpoint
            property ``vxlan.bridge`` overrides it for that peering's device (while the
            bridge is missing, the peerings that need it are ERROR and their device is
            not created)
  isolated  true or false (default true with bridge): make each device an isolated bridge port
  netns     work in this named network namespace (``ip netns``) instead of the agent's own,
            e.g. when the agent runs on the host and the site router is a namespace

Why isolated ports: a full mesh of tunnels on one bridge is a loop. A bridge
floods a broadcast out of every port but the one it came in on, so site B would
send site A's ARP request on to C, C back to A and B, and so on for ever (STP
would instead block a tunnel and carry its traffic through a third site). An
isolated port (IFLA_BRPORT_ISOLATED) forwards only to non-isolated ports: what
arrives through one tunnel reaches the hosts behind the bridge but never leaves
through another tunnel, so every site talks to every other directly and
nothing loops. Set ``isolated=false`` only when the tunnels form a tree. (On a
bridge with a single device of several remotes the flag changes nothing.)

Netlink calls block, so all of them run on one worker thread (pyroute2 keeps a
socket per thread); the agent's event loop never waits on the kernel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from isthmus.core.model import (
    VXLAN_BRIDGE_PROPERTY,
    AdminState,
    ConnectionType,
    DesiredPeering,
    ObservedPeering,
    PeeringState,
)
from isthmus.drivers.base import Driver, DriverContext, DriverError, StateClock
from isthmus.drivers.netlink import IPRoute, NetlinkError

log = logging.getLogger(__name__)

PREFIX = "isx"  # + the VNI: at most "isx16777215", 11 of the kernel's 15 characters
MARKER = "isthmus"
ZERO_MAC = "00:00:00:00:00:00"
NETNS_DIR = Path("/run/netns")
IFF_UP = 0x1
ENOENT, ENODEV = 2, 19
OPTIONS = ("bridge", "isolated", "netns")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DeviceParams = tuple[Address, int, int, str]  # local address, UDP port, MTU, bridge ("" for none)
T = TypeVar("T")



def device_name(vni: int) -> str:
    """The name of the device of VNI ``vni``."""
    return f"{PREFIX}{vni}"


def _kernel_text(exc: NetlinkError) -> str:
    """The kernel's message (extended ack when it gave one) and errno."""
    text = exc.args[1] if len(exc.args) > 1 and exc.args[1] else str(exc)
    return f"{text} (errno {exc.code})"


def _bad_name(value: str, max_len: int) -> bool:
    return (not value or value in (".", "..") or "/" in value or any(c.isspace() for c in value)
            or len(value) > max_len)


class _PeeringError(Exception):
    """Some peerings cannot be realized; the others go on."""


@dataclass(frozen=True)
class _Tunnel:
    """What one peering needs: the device of its VNI, with parameters, and its remote VTEP."""

    connection: str
    ifname: str
    vni: int
    local: Address
    remote: Address
    port: int
    mtu: int
    bridge: str  # "" when the device joins no bridge
    up: bool

    @property
    def device_params(self) -> DeviceParams:
        """What the peerings of one VNI must agree on."""
        return (self.local, self.port, self.mtu, self.bridge)


@dataclass(frozen=True)
class _Group:
    """The device of one VNI as the peerings that agree on it want it."""

    ifname: str
    vni: int
    local: Address
    port: int
    mtu: int
    bridge: str
    members: tuple[_Tunnel, ...]  # in connection name order

    @property
    def up(self) -> bool:
        return any(t.up for t in self.members)

    @property
    def remotes(self) -> frozenset[Address]:
        """The destinations of its all-zeros FDB entries: the remotes of the peerings that are up."""
        return frozenset(t.remote for t in self.members if t.up)


@dataclass(frozen=True)
class _Link:
    """One network device as netlink shows it; the vxlan fields are None for other kinds."""

    index: int
    name: str
    alias: str
    kind: str
    up: bool
    operstate: str
    mtu: int
    master: int
    isolated: bool
    vni: int | None
    local: Address | None
    port: int | None
    learning: bool
    remotes: frozenset[Address]  # destinations of the all-zeros FDB entries


@dataclass(frozen=True)
class _Snapshot:
    links: dict[str, _Link]  # by name
    addresses: frozenset[Address]  # configured on any device

    def master_name(self, link: _Link) -> str:
        """The name of the bridge ``link`` is a port of, "" when none."""
        if not link.master:
            return ""
        return next((x.name for x in self.links.values() if x.index == link.master and x.kind == "bridge"), "")


def _address(text: Any) -> Address | None:
    try:
        return ipaddress.ip_address(text) if text else None
    except ValueError:
        return None


def _parse_link(msg: Any, remotes: Mapping[int, frozenset[Address]]) -> _Link:
    info = msg.get("IFLA_LINKINFO")
    kind = (info.get("IFLA_INFO_KIND") if info else None) or ""
    data = info.get("IFLA_INFO_DATA") if info and kind == "vxlan" else None
    port_data = info.get("IFLA_INFO_SLAVE_DATA") if info else None
    index = int(msg["index"])
    return _Link(
        index=index,
        name=str(msg.get("IFLA_IFNAME") or ""),
        alias=str(msg.get("IFLA_IFALIAS") or ""),
        kind=str(kind),
        up=bool(msg["flags"] & IFF_UP),
        operstate=str(msg.get("IFLA_OPERSTATE") or "UNKNOWN"),
        mtu=int(msg.get("IFLA_MTU") or 0),
        master=int(msg.get("IFLA_MASTER") or 0),
        isolated=bool(port_data.get("IFLA_BRPORT_ISOLATED")) if port_data else False,
        vni=int(data.get("IFLA_VXLAN_ID")) if data else None,
        local=_address(data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6")) if data else None,
        port=int(data.get("IFLA_VXLAN_PORT")) if data else None,
        learning=bool(data.get("IFLA_VXLAN_LEARNING")) if data else False,
        remotes=remotes.get(index, frozenset()),
    )


def _parse_bool(key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise DriverError(f"vxlan.{key}: {value!r} is not true or false", terminal=True)


def _check_name(key: str, value: str, max_len: int) -> str:
    if _bad_name(value, max_len):
        raise DriverError(f"vxlan.{key}: {value!r} is not a valid name (1-{max_len} characters, no '/' or spaces)",
                          terminal=True)
    return value


def _conflict(t: _Tunnel, leader: _Tunnel) -> str:
    """Why ``t`` cannot share the device of its VNI with ``leader``'s peerings."""
    diffs = []
    if t.local != leader.local:
        diffs.append(f"local address {t.local}, not {leader.local}")
    if t.port != leader.port:
        diffs.append(f"UDP port {t.port}, not {leader.port}")
    if t.mtu != leader.mtu:
        diffs.append(f"MTU {t.mtu}, not {leader.mtu}")
    if t.bridge != leader.bridge:
        diffs.append(f"bridge {t.bridge or '(none)'}, not {leader.bridge or '(none)'}")
    return (f"conflicts with connection {leader.connection} on {t.ifname}, the one device of VNI {t.vni}: "
            f"{'; '.join(diffs)}")


class VxlanDriver(Driver):
    """Realizes VXLAN peerings as kernel VXLAN devices, one per VNI (see the module docstring).

    Options (``context.options``): ``bridge``, ``isolated``, ``netns``.
    """

    name = "vxlan"
    handles = frozenset({ConnectionType.VXLAN})

    def __init__(self, context: DriverContext) -> None:
        """``context``: the site (part of the ownership marker), state directory (unused) and options.

        Raises DriverError(terminal=True) naming the option for an unknown option
        or a value it cannot use. Opens no netlink socket yet (``apply`` does).
        """
        super().__init__(context)
        opts = dict(context.options)
        for key in opts:
            if key not in OPTIONS:
                raise DriverError(f"vxlan.{key}: unknown option (known: {', '.join(OPTIONS)})", terminal=True)
        self.bridge = _check_name("bridge", opts["bridge"], 15) if "bridge" in opts else ""
        if "isolated" in opts and not self.bridge:
            raise DriverError("vxlan.isolated: only applies together with vxlan.bridge", terminal=True)
        self.isolated = _parse_bool("isolated", opts.get("isolated", "true"))
        self.netns = _check_name("netns", opts["netns"], 255) if "netns" in opts else ""
        self._where = f"in network namespace {self.netns}" if self.netns else "in the agent's network namespace"
        self._marker_head = f"{MARKER}:{context.site}:"
        # One thread for every netlink call: pyroute2's sockets are per thread.
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="isthmus-vxlan")
        self._ipr: Any = None  # pyroute2 IPRoute, opened and used on the worker thread only
        self._ipr_netns: tuple[int, int] | None = None  # (device, inode) of the namespace it was opened in
        self._closed = False
        self._names: tuple[str, ...] = ()  # the connections of the last apply
        self._tunnels: dict[str, _Tunnel] = {}  # what each of them needs, by connection
        self._groups: dict[str, _Group] = {}  # their devices, by device name
        self._errors: dict[str, str] = {}  # per-peering failures of the last apply
        self._clock = StateClock()

    # ------------------------------------------------------------ the Driver interface

    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        """Make the VXLAN devices match ``peerings`` (keyed by connection name, all VXLAN).

        Groups the peerings by VNI, one device each. Creates missing devices;
        changes the MTU, FDB entries (one per remote of a peering that is up),
        bridge port, marker and up/down state in place; replaces a device whose
        VNI, local address, UDP port or learning changed; removes owned devices
        whose VNI no peering has. A peering that fails (it disagrees with the
        others of its VNI, the kernel refuses its device, its local address or
        bridge does not exist, a foreign device has its device's name) is
        recorded and reported ERROR by ``observe``; the others go on.

        Raises DriverError (not terminal) when netlink cannot be opened or read
        (e.g. the ``netns`` namespace does not exist).
        """
        tunnels: dict[str, _Tunnel] = {}
        errors: dict[str, str] = {}
        for name, peering in peerings.items():
            try:
                tunnels[name] = self._tunnel(peering)
            except _PeeringError as exc:
                errors[name] = str(exc)
                if errors[name] != self._errors.get(name):
                    log.warning("site %s: connection %s: %s", self.context.site, name, errors[name])
        groups, failed = await self._run(self._apply_sync, tunnels)
        errors.update(failed)
        self._tunnels = tunnels
        self._groups = groups
        self._errors = errors
        self._clock.keep(peerings)
        self._names = tuple(peerings)

    async def observe(self) -> dict[str, ObservedPeering]:
        """The state of every peering of the last ``apply``, keyed by connection name.

        ESTABLISHED when the device of its VNI exists, is up and matches
        (parameters, bridge port) and has the FDB entry for its remote; DOWN when
        the peering is administratively down and its remote has no FDB entry;
        ERROR with the reason otherwise, or with the message of ``apply``'s
        failure for it.

        Raises DriverError when netlink cannot be read.
        """
        problems = await self._run(self._observe_sync, dict(self._groups))
        out: dict[str, ObservedPeering] = {}
        for name in self._names:
            error = self._errors.get(name) or problems.get(name, "")
            tunnel = self._tunnels.get(name)
            if error:
                state = PeeringState.ERROR
            elif tunnel is not None and not tunnel.up:
                state = PeeringState.DOWN
            else:
                state = PeeringState.ESTABLISHED
            out[name] = self._clock.observed(name, state, error, self.name)
        return out

    async def close(self) -> None:
        """Release the netlink handle and the worker thread; every device stays as it is."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._worker, self._drop_handle)
        self._worker.shutdown(wait=True)

    # ------------------------------------------------------------ on the event loop

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise DriverError("the vxlan driver is closed")
        return await asyncio.get_running_loop().run_in_executor(self._worker, functools.partial(fn, *args))

    def _tunnel(self, peering: DesiredPeering) -> _Tunnel:
        params = peering.vxlan
        if params is None:
            raise _PeeringError("the peering has no VXLAN parameters")
        local = _address(peering.local.address)
        remote = _address(peering.remote.address)
        if local is None or remote is None:
            raise _PeeringError(f"{peering.local.address!r} -> {peering.remote.address!r} is not an address pair")
        if local.version != remote.version:
            raise _PeeringError(f"local {local} and remote {remote} are not of one address family")
        bridge = peering.local.properties.get(VXLAN_BRIDGE_PROPERTY) or self.bridge
        if bridge and _bad_name(bridge, 15):
            raise _PeeringError(f"local endpoint property {VXLAN_BRIDGE_PROPERTY}: {bridge!r} is not a valid "
                                "bridge name (1-15 characters, no '/' or spaces)")
        return _Tunnel(
            connection=peering.connection,
            ifname=device_name(params.vni),
            vni=params.vni,
            local=local,
            remote=remote,
            port=params.udp_port,
            mtu=params.mtu,
            bridge=bridge,
            up=peering.admin_state == AdminState.UP,
        )

    # ------------------------------------------------------------ on the worker thread

    def _netns_id(self) -> tuple[int, int]:
        try:
            st = (NETNS_DIR / self.netns).stat()
        except OSError:
            raise DriverError(f"vxlan.netns: network namespace {self.netns} does not exist "
                              f"(no {NETNS_DIR / self.netns})") from None
        return (st.st_dev, st.st_ino)

    def _handle(self) -> Any:
        ns_id = self._netns_id() if self.netns else None
        if self._ipr is not None and ns_id != self._ipr_netns:
            # The namespace was deleted and made again: our socket still lives in the old one.
            log.info("site %s: network namespace %s was recreated; reopening netlink", self.context.site, self.netns)
            self._drop_handle()
        if self._ipr is None:
            try:
                # IPRoute(netns=...) is what pyroute2's NetNS wraps since 0.9.1; flags=0: never create it.
                self._ipr = IPRoute(netns=self.netns, flags=0, ext_ack=True) if self.netns else IPRoute(ext_ack=True)
            except OSError as exc:
                raise DriverError(f"cannot open netlink {self._where}: {exc}") from exc
            self._ipr_netns = ns_id
        return self._ipr

    def _drop_handle(self) -> None:
        if self._ipr is not None:
            ipr, self._ipr = self._ipr, None
            ipr.close()

    def _read(self, ipr: Any) -> _Snapshot:
        try:
            remotes: dict[int, set[Address]] = {}
            for msg in ipr.fdb("dump"):
                dst = _address(msg.get("NDA_DST"))
                if msg.get("NDA_LLADDR") == ZERO_MAC and dst is not None:
                    remotes.setdefault(int(msg["ifindex"]), set()).add(dst)
            frozen = {index: frozenset(dsts) for index, dsts in remotes.items()}
            links = {link.name: link for link in (_parse_link(msg, frozen) for msg in ipr.link("dump"))}
            addresses = frozenset(
                a for a in (_address(msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")) for msg in ipr.addr("dump"))
                if a is not None
            )
        except (NetlinkError, OSError) as exc:
            self._drop_handle()  # reopened on the next call
            raise DriverError(f"cannot read the network devices {self._where}: {exc}") from exc
        return _Snapshot(links, addresses)

    def _marker(self, vni: int) -> str:
        return f"{self._marker_head}vni{vni}"

    def _owned(self, link: _Link) -> bool:
        """Whether this driver made the device: the prefix and a marker of this site.

        Any text after the site counts: ``vni<VNI>`` now, the connection name before the devices were per VNI.
        """
        return link.name.startswith(PREFIX) and link.alias.startswith(self._marker_head) \
            and len(link.alias) > len(self._marker_head)

    def _apply_sync(self, tunnels: dict[str, _Tunnel]) -> tuple[dict[str, _Group], dict[str, str]]:
        try:
            return self._converge_all(tunnels)
        except OSError as exc:  # the socket, not the kernel's answer to one request
            self._drop_handle()
            raise DriverError(f"netlink failed {self._where}: {exc}") from exc

    def _group(self, tunnels: dict[str, _Tunnel], snap: _Snapshot) -> tuple[dict[str, _Group], dict[str, str]]:
        """One group per VNI of the peerings that agree on its device; the others get a conflict error.

        The peerings that agree with the existing device keep it (a peering added later cannot take it
        over); without one, the first in connection name order sets the parameters.
        """
        by_ifname: dict[str, list[_Tunnel]] = {}
        for name in sorted(tunnels):
            by_ifname.setdefault(tunnels[name].ifname, []).append(tunnels[name])
        groups: dict[str, _Group] = {}
        errors: dict[str, str] = {}
        for ifname, candidates in by_ifname.items():
            link = snap.links.get(ifname)
            chosen = candidates[0].device_params
            if link is not None and self._owned(link) and link.local is not None and link.port is not None:
                existing: DeviceParams = (link.local, link.port, link.mtu, snap.master_name(link))
                if any(t.device_params == existing for t in candidates):
                    chosen = existing
            members = tuple(t for t in candidates if t.device_params == chosen)
            for t in candidates:
                if t.device_params != chosen:
                    errors[t.connection] = _conflict(t, members[0])
            local, port, mtu, bridge = chosen
            groups[ifname] = _Group(ifname, members[0].vni, local, port, mtu, bridge, members)
        return groups, errors

    def _converge_all(self, tunnels: dict[str, _Tunnel]) -> tuple[dict[str, _Group], dict[str, str]]:
        ipr = self._handle()
        snap = self._read(ipr)
        groups, errors = self._group(tunnels, snap)
        links = dict(snap.links)
        # Removals and replacements first, so that a replaced device's name and VNI are free again.
        for link in snap.links.values():
            if not self._owned(link):
                continue
            group = groups.get(link.name)
            why = "no peering has its VNI" if group is None else "; ".join(self._replace_reasons(link, group))
            if not why:
                continue
            try:
                ipr.link("del", index=link.index)
            except NetlinkError as exc:
                if exc.code != ENODEV:  # already gone
                    log.warning("site %s: cannot remove %s: %s", self.context.site, link.name, _kernel_text(exc))
                    for t in group.members if group is not None else ():
                        errors[t.connection] = f"removing {link.name} ({why}): {_kernel_text(exc)}"
                    continue
            log.info("site %s: removed %s (%s)", self.context.site, link.name, why)
            links.pop(link.name, None)
        for ifname, group in groups.items():
            if any(t.connection in errors for t in group.members):
                continue
            try:
                self._ensure(ipr, group, links.get(ifname), snap)
                continue
            except _PeeringError as exc:
                text = str(exc)
            except NetlinkError as exc:
                text = f"{ifname}: {_kernel_text(exc)}"
            for t in group.members:
                errors[t.connection] = text
        for name, text in errors.items():
            if text != self._errors.get(name):  # once, not every pass
                log.warning("site %s: connection %s: %s", self.context.site, name, text)
        return groups, errors

    def _replace_reasons(self, link: _Link, g: _Group) -> list[str]:
        """What differs in ways only a new device fixes."""
        out = []
        if link.kind != "vxlan":
            out.append(f"it is a {link.kind or 'plain'} device, not vxlan")
            return out
        if link.vni != g.vni:
            out.append(f"VNI {link.vni} (want {g.vni})")
        if link.local != g.local:
            out.append(f"local {link.local} (want {g.local})")
        if link.port != g.port:
            out.append(f"UDP port {link.port} (want {g.port})")
        if link.learning:
            out.append("MAC learning is on")
        return out

    def _ensure(self, ipr: Any, g: _Group, link: _Link | None, snap: _Snapshot) -> None:
        if link is not None and not self._owned(link):
            raise _PeeringError(f"{g.ifname} exists and is not isthmus's (no ifalias {self._marker_head}...); "
                                "it is left alone")
        bridge = None
        if g.bridge:
            bridge = snap.links.get(g.bridge)
            if bridge is None or bridge.kind != "bridge":
                if link is not None and link.master:
                    # Off the segment it joined before: its peerings now want another one.
                    ipr.link("set", index=link.index, master=0)
                what = "does not exist" if bridge is None else f"is a {bridge.kind or 'plain'} device, not a bridge"
                raise _PeeringError(f"bridge {g.bridge} {what} at this site ({self._where}); create it "
                                    f"(ip link add {g.bridge} type bridge) or change {VXLAN_BRIDGE_PROPERTY} "
                                    "or the vxlan.bridge option")
        if link is None:
            if g.local not in snap.addresses:
                raise _PeeringError(f"local address {g.local} is not configured {self._where}")
            link = self._create(ipr, g)
        marker = self._marker(g.vni)
        if link.alias != marker:
            ipr.link("set", index=link.index, ifalias=marker)
            log.info("site %s: %s is marked %s (was %s)", self.context.site, g.ifname, marker, link.alias)
        if link.mtu != g.mtu:
            ipr.link("set", index=link.index, mtu=g.mtu)
        for remote in sorted(g.remotes - link.remotes, key=str):
            ipr.fdb("append", ifindex=link.index, lladdr=ZERO_MAC, dst=str(remote))
        for remote in sorted(link.remotes - g.remotes, key=str):
            try:
                ipr.fdb("del", ifindex=link.index, lladdr=ZERO_MAC, dst=str(remote))
            except NetlinkError as exc:
                if exc.code != ENOENT:
                    raise
        if bridge is not None:
            if link.master != bridge.index:
                ipr.link("set", index=link.index, master=bridge.index)
            if link.master != bridge.index or link.isolated != self.isolated:
                ipr.brport("set", index=link.index, isolated=int(self.isolated))
        if link.up != g.up:
            ipr.link("set", index=link.index, state="up" if g.up else "down")

    def _create(self, ipr: Any, g: _Group) -> _Link:
        local_key = "vxlan_local" if g.local.version == 4 else "vxlan_local6"
        ipr.link("add", ifname=g.ifname, kind="vxlan", vxlan_id=g.vni, vxlan_port=g.port, vxlan_learning=0,
                 mtu=g.mtu, **{local_key: str(g.local)})
        (msg,) = ipr.link("get", ifname=g.ifname)
        index = int(msg["index"])
        marker = self._marker(g.vni)
        try:
            # The kernel takes no alias at creation; without it the device would look foreign for ever.
            ipr.link("set", index=index, ifalias=marker)
        except NetlinkError:
            ipr.link("del", index=index)
            raise
        log.info("site %s: created %s (VNI %d, local %s, port %d) for %s", self.context.site, g.ifname, g.vni,
                 g.local, g.port, ", ".join(t.connection for t in g.members))
        return dataclasses.replace(_parse_link(msg, {}), alias=marker)

    def _observe_sync(self, groups: dict[str, _Group]) -> dict[str, str]:
        """The problem of each peering of ``groups``, by connection ("" when its part of the device matches)."""
        snap = self._read(self._handle())
        out: dict[str, str] = {}
        for g in groups.values():
            link = snap.links.get(g.ifname)
            if link is None or not self._owned(link):
                out.update((t.connection, f"{g.ifname} is missing") for t in g.members)
                continue
            shared = self._device_problems(link, g, snap)
            for t in g.members:
                problems = list(shared)
                if t.up:
                    if t.remote not in link.remotes:
                        problems.append(f"fdb entry for {t.remote} missing")
                    if not link.up:
                        problems.append("it is down")
                    elif link.operstate not in ("UP", "UNKNOWN"):
                        problems.append(f"its operational state is {link.operstate}")
                else:
                    if t.remote in link.remotes and t.remote not in g.remotes:
                        problems.append(f"fdb entry for {t.remote} although the connection is administratively "
                                        "down")
                    if link.up and not g.up:
                        problems.append("it is up although every connection of its VNI is administratively down")
                out[t.connection] = f"{g.ifname}: {'; '.join(problems)}" if problems else ""
        return out

    def _device_problems(self, link: _Link, g: _Group, snap: _Snapshot) -> list[str]:
        """What is wrong with the device for all of its peerings alike."""
        problems = self._replace_reasons(link, g)
        if link.mtu != g.mtu:
            problems.append(f"MTU {link.mtu} (want {g.mtu})")
        if g.local not in snap.addresses:
            problems.append(f"local address {g.local} is not configured {self._where}")
        stray = link.remotes - {t.remote for t in g.members}
        if stray:
            problems.append(f"fdb also sends to {', '.join(sorted(map(str, stray)))}")
        if g.bridge:
            bridge = snap.links.get(g.bridge)
            if bridge is None or bridge.kind != "bridge":
                problems.append(f"bridge {g.bridge} does not exist at this site")
            elif link.master != bridge.index:
                problems.append(f"not a port of bridge {g.bridge}")
            elif link.isolated != self.isolated:
                problems.append(f"bridge port isolation is {'off' if self.isolated else 'on'}")
        return problems
