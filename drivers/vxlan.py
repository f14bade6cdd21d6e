"""The vxlan driver: one kernel VXLAN device per VXLAN peering, configured over netlink with pyroute2.

Each peering becomes a point-to-point tunnel named ``isx<VNI>``: the peering's
VNI, local address and UDP port, MAC learning off, the peering's MTU, and one
all-zeros FDB entry that sends every frame to the remote VTEP. IPv4 and IPv6
underlays work alike. A device is the driver's only when its name has the
``isx`` prefix AND its ifalias (IFLA_IFALIAS) reads
``isthmus:<site>:<connection>``; anything else, even a device named ``isx...``,
is never changed or removed.

Options (``--driver-opt vxlan.KEY=VALUE``):
  bridge    enslave every tunnel to this existing bridge (while it is missing the
            driver fails and the agent retries)
  isolated  true or false (default true with bridge): make each tunnel an isolated bridge port
  netns     work in this named network namespace (``ip netns``) instead of the agent's own,
            e.g. when the agent runs on the host and the site router is a namespace

Why isolated ports: a full mesh of tunnels on one bridge is a loop. A bridge
floods a broadcast out of every port but the one it came in on, so site B would
send site A's ARP request on to C, C back to A and B, and so on for ever (STP
would instead block a tunnel and carry its traffic through a third site). An
isolated port (IFLA_BRPORT_ISOLATED) forwards only to non-isolated ports: what
arrives through one tunnel reaches the hosts behind the bridge but never leaves
through another tunnel, so every site talks to every other directly and
nothing loops. Set ``isolated=false`` only when the tunnels form a tree.

Netlink calls block, so all of them run on one worker thread (pyroute2 keeps a
socket per thread); the agent's event loop never waits on the kernel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from isthmus.drivers.base import Driver, DriverContext, DriverError
from isthmus.model import AdminState, ConnectionType, DesiredPeering, ObservedPeering, PeeringState

log = logging.getLogger(__name__)

PREFIX = "isx"  # + the VNI: at most "isx16777215", 11 of the kernel's 15 characters
MARKER = "isthmus"
ZERO_MAC = "00:00:00:00:00:00"
NETNS_DIR = Path("/run/netns")
IFF_UP = 0x1
OPTIONS = ("bridge", "isolated", "netns")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")


def _now_ms() -> int:
    return int(time.time() * 1000)


def device_name(vni: int) -> str:
    """The name of the device of VNI ``vni``."""
    return f"{PREFIX}{vni}"


def _kernel_text(exc: NetlinkError) -> str:
    """The kernel's message (extended ack when it gave one) and errno."""
    text = exc.args[1] if len(exc.args) > 1 and exc.args[1] else str(exc)
    return f"{text} (errno {exc.code})"


class _PeeringError(Exception):
    """One peering cannot be realized; the others go on."""


@dataclass(frozen=True)
class _Tunnel:
    """What one peering needs: the device's name and parameters."""

    connection: str
    ifname: str
    vni: int
    local: Address
    remote: Address
    port: int
    mtu: int
    up: bool


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
    if not value or value in (".", "..") or "/" in value or any(c.isspace() for c in value) or len(value) > max_len:
        raise DriverError(f"vxlan.{key}: {value!r} is not a valid name (1-{max_len} characters, no '/' or spaces)",
                          terminal=True)
    return value


class VxlanDriver(Driver):
    """Realizes VXLAN peerings as kernel VXLAN devices, one per peering (see the module docstring).

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
        self._tunnels: dict[str, _Tunnel] = {}  # their devices, by connection
        self._errors: dict[str, str] = {}  # per-peering failures of the last apply
        self._since: dict[str, tuple[PeeringState, int]] = {}

    # ------------------------------------------------------------ the Driver interface

    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        """Make the VXLAN devices match ``peerings`` (keyed by connection name, all VXLAN).

        Creates missing devices, changes the MTU, FDB entry, bridge port and
        up/down state in place, replaces a device whose VNI, local address, UDP
        port, learning or remote changed, and removes owned devices whose
        connection is not in ``peerings``. A peering that fails (the kernel
        refuses it, its local address is not configured, a foreign device has
        its name) is recorded and reported ERROR by ``observe``; the others go on.

        Raises DriverError (not terminal) when netlink cannot be opened or read
        (e.g. the ``netns`` namespace does not exist) or the ``bridge`` is missing.
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
        errors.update(await self._run(self._apply_sync, tunnels))
        self._tunnels = tunnels
        self._errors = errors
        for name in list(self._since):
            if name not in peerings:
                del self._since[name]
        self._names = tuple(peerings)

    async def observe(self) -> dict[str, ObservedPeering]:
        """The state of every peering of the last ``apply``, keyed by connection name.

        ESTABLISHED when its device exists, is up and matches the peering
        (parameters, FDB entry, bridge port); DOWN when the peering is
        administratively down and its device is down; ERROR with the reason
        otherwise, or with the kernel's message when ``apply`` failed for it.

        Raises DriverError when netlink cannot be read.
        """
        problems = await self._run(self._observe_sync, dict(self._tunnels))
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
            prev = self._since.get(name)
            if prev is None or prev[0] != state:
                self._since[name] = (state, _now_ms())
            out[name] = ObservedPeering(name, state, error, self._since[name][1], self.name)
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
        return _Tunnel(
            connection=peering.connection,
            ifname=device_name(params.vni),
            vni=params.vni,
            local=local,
            remote=remote,
            port=params.udp_port,
            mtu=params.mtu,
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

    def _owner(self, link: _Link) -> str | None:
        """The connection of a device this driver owns, else None (the device is not ours)."""
        if not link.name.startswith(PREFIX) or not link.alias.startswith(self._marker_head):
            return None
        return link.alias[len(self._marker_head):] or None

    def _bridge(self, snap: _Snapshot) -> _Link | None:
        if not self.bridge:
            return None
        bridge = snap.links.get(self.bridge)
        if bridge is None:
            raise DriverError(f"vxlan.bridge: bridge {self.bridge} does not exist {self._where}; create it "
                              "(ip link add NAME type bridge) or change the option")
        if bridge.kind != "bridge":
            raise DriverError(f"vxlan.bridge: {self.bridge} is a {bridge.kind or 'plain'} device, not a bridge")
        return bridge

    def _apply_sync(self, tunnels: dict[str, _Tunnel]) -> dict[str, str]:
        try:
            return self._converge_all(tunnels)
        except OSError as exc:  # the socket, not the kernel's answer to one request
            self._drop_handle()
            raise DriverError(f"netlink failed {self._where}: {exc}") from exc

    def _converge_all(self, tunnels: dict[str, _Tunnel]) -> dict[str, str]:
        ipr = self._handle()
        snap = self._read(ipr)
        bridge = self._bridge(snap)
        links = dict(snap.links)
        errors: dict[str, str] = {}
        # Removals and replacements first, so that a VNI moving between connections frees its name.
        for link in snap.links.values():
            owner = self._owner(link)
            if owner is None:
                continue
            tunnel = tunnels.get(owner)
            if tunnel is None:
                why = "its connection is no longer desired"
            elif link.name != tunnel.ifname:
                why = f"the VNI is now {tunnel.vni}"
            else:
                why = "; ".join(self._replace_reasons(link, tunnel))
            if not why:
                continue
            try:
                ipr.link("del", index=link.index)
            except NetlinkError as exc:
                if exc.code != 19:  # ENODEV: already gone
                    log.warning("site %s: cannot remove %s of connection %s: %s", self.context.site, link.name,
                                owner, _kernel_text(exc))
                    if tunnel is not None:
                        errors[owner] = f"removing {link.name} ({why}): {_kernel_text(exc)}"
                    continue
            log.info("site %s: removed %s of connection %s (%s)", self.context.site, link.name, owner, why)
            links.pop(link.name, None)
        for name, tunnel in tunnels.items():
            if name in errors:
                continue
            try:
                self._ensure(ipr, tunnel, links.get(tunnel.ifname), snap.addresses, bridge)
            except _PeeringError as exc:
                errors[name] = str(exc)
            except NetlinkError as exc:
                errors[name] = f"{tunnel.ifname}: {_kernel_text(exc)}"
            if name in errors and errors[name] != self._errors.get(name):  # once, not every pass
                log.warning("site %s: connection %s: %s", self.context.site, name, errors[name])
        return errors

    def _replace_reasons(self, link: _Link, t: _Tunnel) -> list[str]:
        """What differs in ways only a new device fixes."""
        out = []
        if link.kind != "vxlan":
            out.append(f"it is a {link.kind or 'plain'} device, not vxlan")
            return out
        if link.vni != t.vni:
            out.append(f"VNI {link.vni} (want {t.vni})")
        if link.local != t.local:
            out.append(f"local {link.local} (want {t.local})")
        if link.port != t.port:
            out.append(f"UDP port {link.port} (want {t.port})")
        if link.learning:
            out.append("MAC learning is on")
        if link.remotes and link.remotes != {t.remote}:
            out.append(f"fdb sends to {', '.join(sorted(map(str, link.remotes)))} (want {t.remote})")
        return out

    def _ensure(self, ipr: Any, t: _Tunnel, link: _Link | None, addresses: frozenset[Address],
                bridge: _Link | None) -> None:
        if link is not None:
            owner = self._owner(link)
            if owner is None:
                raise _PeeringError(f"{t.ifname} exists and is not isthmus's (no ifalias {self._marker_head}...); "
                                    "it is left alone")
            if owner != t.connection:
                raise _PeeringError(f"{t.ifname} belongs to connection {owner}, which has the same VNI")
        if link is None:
            if t.local not in addresses:
                raise _PeeringError(f"local address {t.local} is not configured {self._where}")
            link = self._create(ipr, t)
        if link.mtu != t.mtu:
            ipr.link("set", index=link.index, mtu=t.mtu)
        if t.remote not in link.remotes:
            ipr.fdb("append", ifindex=link.index, lladdr=ZERO_MAC, dst=str(t.remote))
        if bridge is not None:
            if link.master != bridge.index:
                ipr.link("set", index=link.index, master=bridge.index)
            if link.master != bridge.index or link.isolated != self.isolated:
                ipr.brport("set", index=link.index, isolated=int(self.isolated))
        if link.up != t.up:
            ipr.link("set", index=link.index, state="up" if t.up else "down")

    def _create(self, ipr: Any, t: _Tunnel) -> _Link:
        local_key = "vxlan_local" if t.local.version == 4 else "vxlan_local6"
        ipr.link("add", ifname=t.ifname, kind="vxlan", vxlan_id=t.vni, vxlan_port=t.port, vxlan_learning=0,
                 mtu=t.mtu, **{local_key: str(t.local)})
        (msg,) = ipr.link("get", ifname=t.ifname)
        index = int(msg["index"])
        try:
            # The kernel takes no alias at creation; without it the device would look foreign for ever.
            ipr.link("set", index=index, ifalias=f"{self._marker_head}{t.connection}")
        except NetlinkError:
            ipr.link("del", index=index)
            raise
        log.info("site %s: created %s for connection %s (VNI %d, %s -> %s port %d)", self.context.site, t.ifname,
                 t.connection, t.vni, t.local, t.remote, t.port)
        return _parse_link(msg, {})

    def _observe_sync(self, tunnels: dict[str, _Tunnel]) -> dict[str, str]:
        """The problem of each peering's device, by connection ("" when it matches)."""
        snap = self._read(self._handle())
        bridge = snap.links.get(self.bridge) if self.bridge else None
        out: dict[str, str] = {}
        for name, t in tunnels.items():
            link = snap.links.get(t.ifname)
            if link is None or self._owner(link) != t.connection:
                out[name] = f"{t.ifname} is missing"
                continue
            problems = self._replace_reasons(link, t)
            if t.remote not in link.remotes:
                problems.append(f"fdb entry for {t.remote} missing")
            if link.mtu != t.mtu:
                problems.append(f"MTU {link.mtu} (want {t.mtu})")
            if t.local not in snap.addresses:
                problems.append(f"local address {t.local} is not configured {self._where}")
            if self.bridge:
                if bridge is None or bridge.kind != "bridge":
                    problems.append(f"bridge {self.bridge} does not exist")
                elif link.master != bridge.index:
                    problems.append(f"not a port of bridge {self.bridge}")
                elif link.isolated != self.isolated:
                    problems.append(f"bridge port isolation is {'off' if self.isolated else 'on'}")
            if t.up and not link.up:
                problems.append("it is down")
            elif not t.up and link.up:
                problems.append("it is up although the connection is administratively down")
            elif t.up and link.operstate not in ("UP", "UNKNOWN"):
                problems.append(f"its operational state is {link.operstate}")
            out[name] = f"{t.ifname}: {'; '.join(problems)}" if problems else ""
        return out
