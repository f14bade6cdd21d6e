"""The BGP speaker of the bgp driver: os-ken's BGPSpeaker for one local endpoint, a process that outlives the agent.

This is the only isthmus module that imports os-ken. Started by the driver as::

    python -m isthmus.drivers.bgp.speaker --daemon --endpoint SITE/EP --asn 65001 --router-id 192.0.2.1 \\
        --listen-host 192.0.2.1 --listen-port 179 --socket STATE/speaker-SITE-EP.sock \\
        --pid-file STATE/speaker-SITE-EP.pid [--log-level info]

With ``--daemon`` the process detaches (a process of its own session, no
longer the agent's child) and the command returns once the speaker listens on
both its BGP port and its socket (exit 0), or with the speaker's exit code
when it could not start (3: cannot listen on the address). It then runs until
asked to stop (the ``shutdown`` op, or SIGTERM): an agent that stops, crashes
or is replaced leaves it, and every session, as they are; the next agent
connects to the socket, reads what it holds (``hello``) and goes on from there.

Protocol: JSON, one object per line, on the unix socket (mode 0600). The message
types are defined (as TypedDicts) in ``isthmus.drivers.bgp.protocol``.

- Requests: ``{"id": N, "op": OP, "args": {...}}``. Ops:

  ``hello``         result HelloResult: protocol version, pid, endpoint, AS, router id, listen address and
                    port, the neighbors it has (password as a salted digest) and the prefixes it advertises
  ``neighbor_add``  args NeighborArgs ``{address, remote_as, hold_time, password, ipv4, ipv6, evpn}``:
                    create the neighbor (os-ken ``neighbor.create``)
  ``neighbor_del``  args ``{address, reason}``: delete the neighbor; a session that is up is sent a
                    NOTIFICATION Cease, Peer De-configured (reason ``deconfigured``) or Administrative
                    Shutdown (``shutdown``)
  ``prefix_add``    args ``{prefix}``: advertise the prefix to every neighbor (idempotent)
  ``prefix_del``    args ``{prefix}``: withdraw it (idempotent)
  ``state``         result StateResult ``{neighbors: {ADDRESS: NeighborStatus}, refused_connections}``
  ``shutdown``      answered, then every session is sent a Cease (Administrative Shutdown) and the
                    process exits (SIGTERM does the same)

- Responses, one per request on the connection it came on: ``{"id": N, "ok": true, "result": ...}``
  or ``{"id": N, "ok": false, "error": TEXT}``.
- Events, unsolicited, to every connected client: ``log`` (the speaker's own log
  records, which the agent re-logs), ``peer_up``, ``peer_down`` (with the reason:
  the NOTIFICATION, hold timer expiry or the lost connection), ``notification``,
  and ``routes`` (the prefixes received from a neighbor changed; sent at most
  every ROUTES_EVENT_DELAY seconds per neighbor).

Passwords appear only in ``neighbor_add`` requests: they are never logged or
echoed (os-ken's API log is silenced; ``hello`` reports a digest keyed by a
random salt of this process). Logs go to stderr (the driver makes that
``STATE_DIR/bgp/speaker-SITE-EP.log``) and to the connected clients.

Neighbors are dialled every 10 s (os-ken's minimum connect-retry), from the
listen address, and accepted at any time; a connection from any other address
is refused quietly (a counter in ``state`` and a debug line).

os-ken runs on its native hub (threads, ``OSKEN_HUB_TYPE=native``, forced
here), without eventlet or monkey-patching; the socket side is bgp/channel.py,
the kernel routes bgp/kernel.py.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from isthmus.core.model import ImportRule, import_accepts
from isthmus.drivers.bgp.channel import (
    ClientLog,
    Clients,
    NotificationLevels,
    accept,
    check_listen,
    detach,
    listen_unix,
)
from isthmus.drivers.bgp.kernel import KernelRoutes, KernelSettings
from isthmus.drivers.bgp.protocol import (
    PROTOCOL_VERSION,
    Event,
    HelloResult,
    KernelArgs,
    NeighborSettings,
    NeighborStatus,
    Request,
    StateResult,
)

log = logging.getLogger("isthmus.bgp_speaker")

EXIT_CANNOT_LISTEN = 3
LISTEN_TIMEOUT = 10.0
CONNECT_RETRY = 10  # seconds between attempts to dial a neighbor: os-ken's minimum (its default is 30)
ROUTES_EVENT_DELAY = 0.1  # seconds: received-route changes of one neighbor are reported together
CEASE = 6  # RFC 4271 NOTIFICATION error code, and its RFC 4486 subcodes:
CEASE_SUBCODES = {"shutdown": 2, "deconfigured": 3}
CEASE_CONNECTION_REJECTED = 5
CEASE_MAX_PREFIXES = 1
GR_RESTART_STATE = 0x8  # RFC 4724 restart flags (4 bits): R, "I have restarted"
GR_FORWARDING_PRESERVED = 0x80  # per-family flags: F, the forwarding state was kept


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- os-ken


def adapt_os_ken(host: str, refused: Callable[[str], None], lost: Callable[[str, str], None],
                 looped: Callable[[str, int], None], accepts: Callable[[str, str], bool],
                 restart_time: Callable[[str], int], restarting: Callable[[], bool]) -> None:
    """Fixes to os-ken 4.2.2 for this process, which serves the one endpoint at ``host``.

    - TCP MD5 keys: os-ken hands the password (a str) to ``struct.pack("80s")``,
      which wants bytes on Python 3, so no MD5 key could be set or cleared.
      Keys are encoded before they reach the socket option.
    - Source address: os-ken dials a neighbor from whatever address the kernel
      picks, and binds a source only together with a fixed source port. A peer
      knows us by the endpoint's address and refuses (with MD5: never sees) a
      connection from another address of this host, so os-ken's one dialling
      method gets ``host`` with an ephemeral port.
    - Hold time: os-ken refuses hold times below 10 s and, offered 0, would
      start its timers with a 0 s interval. RFC 4271 allows 0 (no keepalives)
      and 3..65535: its validator takes those, and a negotiated 0 starts no timers.
    - Refused connections: a connection from an address that is not a neighbor
      (a peer whose session was removed keeps dialling) is answered with a
      Cease (Connection Rejected) and closed; os-ken logged each one as an
      ERROR. Here ``refused(address)`` counts it and it is logged at debug.
    - Why a session ended: ``lost(address, reason)`` gets os-ken's reason
      before the session's down signal is emitted.
    - AS-path loops: a peer sending our own prefixes back with our AS in the
      path is normal; os-ken logged each such UPDATE as an ERROR with a full
      dump. Here ``looped(address, prefixes)`` counts them, logged at debug, and
      the UPDATE is ignored as before (RFC 4271 9.1.2).
    - Import policy: os-ken's in-filters are replaced by ``accepts(address,
      prefix)``, the neighbor's import policy; a refused route stays in the
      adj-RIB-in marked filtered (counted) and never reaches the RIB.
    - Graceful restart (RFC 4724), which os-ken lacks: the OPEN to a neighbor
      with ``restart_time(address)`` > 0 carries the capability with that
      time, the R bit while ``restarting()`` (this speaker started less than
      that long ago) and the F bit for IPv4 and IPv6 unicast (the routes this
      speaker installed stay in the kernel while it restarts, see
      bgp/kernel.py); after the initial UPDATEs to a neighbor that offered the
      capability too, an End-of-RIB for each of those families. (os-ken does
      not act as the helper for a restarting peer: a peer's routes go when
      its session does.)
    - Every NOTIFICATION was logged as an ERROR, the Ceases this speaker sends
      on purpose too: sent ones are logged at info, received ones at warning
      (each is also reported as an event, and shown in the peering's state).
    """
    from os_ken.lib import sockopt
    from os_ken.lib.packet.bgp import BGPNotification
    from os_ken.services.protocols.bgp import base as osken_base
    from os_ken.services.protocols.bgp import core as osken_core
    from os_ken.services.protocols.bgp import peer as osken_peer
    from os_ken.services.protocols.bgp import speaker as osken_speaker
    from os_ken.services.protocols.bgp.base import Activity
    from os_ken.services.protocols.bgp.rtconf.base import HOLD_TIME, ConfigValueError

    set_md5 = sockopt.set_tcp_md5sig

    def set_md5_bytes(sock: Any, addr: str, key: str | bytes) -> Any:
        return set_md5(sock, addr, key.encode() if isinstance(key, str) else key)

    sockopt.set_tcp_md5sig = set_md5_bytes

    dial = Activity._connect_tcp

    def dial_from_host(self: Any, peer_addr: Any, conn_handler: Any, time_out: Any = None,
                       bind_address: Any = None, password: Any = None) -> Any:
        return dial(self, peer_addr, conn_handler, time_out=time_out, bind_address=bind_address or (host, 0),
                    password=password)

    Activity._connect_tcp = dial_from_host

    def validate_hold_time(hold_time: Any) -> int:
        if not isinstance(hold_time, int) or not (hold_time == 0 or 3 <= hold_time <= 65535):
            raise ConfigValueError(desc=f"Invalid hold_time configuration value {hold_time} (0 or 3..65535)")
        return hold_time

    osken_base._VALIDATORS[HOLD_TIME] = validate_hold_time
    start_timers = osken_speaker.BgpProtocol._start_timers

    def start_timers_unless_zero(self: Any, peer_holdtime: int) -> None:
        if min(self._holdtime, peer_holdtime) == 0:  # RFC 4271 4.2: no keepalives, no hold timer
            self._holdtime = 0
            return
        start_timers(self, peer_holdtime)

    osken_speaker.BgpProtocol._start_timers = start_timers_unless_zero
    start_protocol = osken_core.CoreService.start_protocol

    def start_protocol_quietly(self: Any, sock: Any) -> Any:
        address, _port = self.get_remotename(sock)
        peer = self._peer_manager.get_by_addr(address)
        if peer is not None and peer.enabled:
            return start_protocol(self, sock)
        refused(_canonical(str(address)))
        with contextlib.suppress(OSError):
            sock.sendall(BGPNotification(CEASE, CEASE_CONNECTION_REJECTED).serialize())
        with contextlib.suppress(OSError):
            sock.close()
        return None

    osken_core.CoreService.start_protocol = start_protocol_quietly
    connection_lost = osken_peer.Peer.connection_lost

    def connection_lost_with_reason(self: Any, reason: Any) -> Any:
        lost(_canonical(str(self.ip_address)), str(reason or ""))
        return connection_lost(self, reason)

    osken_peer.Peer.connection_lost = connection_lost_with_reason
    is_looped = osken_peer.Peer._is_looped_path_attrs

    def is_looped_quietly(self: Any, update_msg: Any) -> Any:
        from os_ken.lib.packet.bgp import BGP_ATTR_TYPE_AS_PATH

        aspath = update_msg.pathattr_map.get(BGP_ATTR_TYPE_AS_PATH)
        if aspath is not None and aspath.has_local_as(self.local_as,
                                                      max_count=self._common_conf.allow_local_as_in_count):
            looped(_canonical(str(self.ip_address)), len(getattr(update_msg, "nlri", None) or []) or 1)
            return True
        return is_looped(self, update_msg)

    osken_peer.Peer._is_looped_path_attrs = is_looped_quietly

    def import_policy(self: Any, path: Any) -> tuple[bool, str | None]:
        nlri = getattr(path, "nlri", None)
        prefix = getattr(nlri, "formatted_nlri_str", "")
        if "/" not in prefix or path.is_withdraw:  # not an IP prefix (EVPN), or a withdrawal: not filtered
            return False, None
        if accepts(_canonical(str(self.ip_address)), prefix):
            return False, None
        return True, "import policy"

    osken_peer.Peer._apply_in_filter = import_policy
    from os_ken.lib.packet.bgp import BGP_CAP_GRACEFUL_RESTART, BGPOptParamCapabilityGracefulRestart
    from os_ken.services.protocols.bgp.base import RF_IPv4_UC, RF_IPv6_UC
    from os_ken.services.protocols.bgp.rtconf.neighbors import NeighborConf

    configured = NeighborConf.get_configured_capabilities

    def with_graceful_restart(self: Any) -> Any:
        caps = configured(self)
        seconds = restart_time(_canonical(str(self.ip_address)))
        if seconds:
            families = [(rf.afi, rf.safi, GR_FORWARDING_PRESERVED)
                        for on, rf in ((self.cap_mbgp_ipv4, RF_IPv4_UC), (self.cap_mbgp_ipv6, RF_IPv6_UC)) if on]
            caps[BGP_CAP_GRACEFUL_RESTART] = [BGPOptParamCapabilityGracefulRestart(
                GR_RESTART_STATE if restarting() else 0, min(seconds, 4095), families)]
        return caps

    NeighborConf.get_configured_capabilities = with_graceful_restart
    comm_all_best_paths = osken_peer.Peer.comm_all_best_paths

    def then_end_of_rib(self: Any, global_tables: Any) -> Any:
        result = comm_all_best_paths(self, global_tables)
        offered = restart_time(_canonical(str(self.ip_address)))
        theirs = self.protocol.recv_open_msg if self.protocol is not None else None
        if offered and theirs is not None and any(getattr(cap, "cap_code", None) == BGP_CAP_GRACEFUL_RESTART
                                                  for cap in theirs.opt_param):
            for rf in (RF_IPv4_UC, RF_IPv6_UC):
                if self.is_mbgp_cap_valid(rf):
                    self.enque_end_of_rib(rf)
        return result

    osken_peer.Peer.comm_all_best_paths = then_end_of_rib
    logging.getLogger("bgpspeaker.speaker").addFilter(NotificationLevels())



class Speaker:
    """os-ken's BGPSpeaker plus what the protocol needs: per-neighbor settings, errors, session times, events."""

    def __init__(self, clients: Clients, endpoint: str, asn: int, router_id: str, host: str, port: int) -> None:
        # Imported here, after main() has chosen the hub: os-ken reads OSKEN_HUB_TYPE at import.
        from os_ken.lib.packet.bgp import BGPNotification
        from os_ken.services.protocols.bgp.api.base import call
        from os_ken.services.protocols.bgp.bgpspeaker import BGPSpeaker
        from os_ken.services.protocols.bgp.core_manager import CORE_MANAGER
        from os_ken.services.protocols.bgp.rtconf.common import BGP_CONN_RETRY_TIME
        from os_ken.services.protocols.bgp.signals.emit import BgpSignalBus

        self._call: Callable[..., Any] = call
        self._notification = BGPNotification
        self._core = CORE_MANAGER
        self._signals = BgpSignalBus
        self.clients = clients
        self.endpoint, self.asn, self.router_id, self.host, self.port = endpoint, asn, router_id, host, port
        self.started_ms = _now_ms()
        self.salt = os.urandom(16).hex()
        self.settings: dict[str, NeighborSettings] = {}  # neighbor address -> as added
        self.prefixes: set[str] = set()
        self.refused_connections = 0
        self._errors: dict[str, tuple[str, int]] = {}  # neighbor address -> (text, BGP error code)
        self._up_since: dict[str, float] = {}  # neighbor address -> monotonic time its session came up
        self._since_ms: dict[str, int] = {}  # neighbor address -> wall clock of its last up or down
        self._lost: dict[str, str] = {}  # neighbor address -> os-ken's reason the connection ended
        self._down_reason: dict[str, str] = {}
        self._flaps: dict[str, int] = {}
        self._routes_pending: set[str] = set()
        self._lock = threading.RLock()
        self._looped: dict[str, int] = {}  # neighbor address -> UPDATEs refused for an AS-path loop
        self._policy: dict[str, tuple[tuple[ImportRule, ...], int]] = {}  # address -> (import rules, max)
        self._over_max: dict[str, str] = {}  # address -> why its session was closed
        self.kernel = KernelRoutes(self._settled)
        adapt_os_ken(host, self._refused, self._connection_lost, self._loop, self._accepts, self._restart_time,
                     self._restarting)

        class _BGPSpeaker(BGPSpeaker):  # type: ignore[misc]
            def _core_start(self, settings: dict[str, Any]) -> None:
                # BGPSpeaker takes no connect-retry argument; its core does (default 30 s).
                settings[BGP_CONN_RETRY_TIME] = CONNECT_RETRY
                super()._core_start(settings)

        self.speaker = _BGPSpeaker(as_number=asn, router_id=router_id, bgp_server_hosts=[host],
                                   bgp_server_port=port, best_path_change_handler=self._best_path)
        bus = self._bus()
        bus.register_listener(BgpSignalBus.BGP_ADJ_UP, lambda _id, data: self._peer_event("peer_up", data))
        bus.register_listener(BgpSignalBus.BGP_ADJ_DOWN, lambda _id, data: self._peer_event("peer_down", data))
        bus.register_listener(BgpSignalBus.BGP_ADJ_RIB_IN_CHANGED, lambda _id, data: self._routes_changed(data))

    def wait_listening(self, timeout: float) -> bool:
        """True once os-ken listens. Its listening sockets appear after BGPSpeaker() returns, and a
        neighbor's MD5 key is set only on sockets that exist when the neighbor is added."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if getattr(self._core.get_core_service(), "listen_sockets", None):
                return True
            time.sleep(0.01)
        return False

    def _bus(self) -> Any:
        # BGPSpeaker registers its own handlers on this bus the same way; the peer
        # up/down handlers it offers pass the router id where we need the address.
        return self._core.get_core_service()._signal_bus

    # ------------------------------------------------------------ os-ken's threads

    def _refused(self, address: str) -> None:
        with self._lock:
            self.refused_connections += 1
            count = self.refused_connections
        log.debug("refused a connection from %s, not a neighbor (%d refused so far)", address, count)

    def _loop(self, address: str, prefixes: int) -> None:
        with self._lock:
            self._looped[address] = self._looped.get(address, 0) + prefixes
            count = self._looped[address]
        log.debug("ignored %d route(s) from %s with our AS %d in the path (%d so far)", prefixes, address,
                  self.asn, count)

    def _restart_time(self, address: str) -> int:
        with self._lock:
            settings = self.settings.get(address)
        return int(settings.get("graceful_restart", 0)) if settings is not None else 0

    def _restarting(self) -> bool:
        """Within the longest restart time of its start: the R bit says this speaker (re)started."""
        with self._lock:
            longest = max((int(s.get("graceful_restart", 0)) for s in self.settings.values()), default=0)
        return _now_ms() - self.started_ms < longest * 1000

    def _accepts(self, address: str, prefix: str) -> bool:
        with self._lock:
            rules = self._policy.get(address, ((), 0))[0]
        try:
            network = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            return True
        return import_accepts(rules, network)

    def _best_path(self, event: Any) -> None:
        source = getattr(event.path, "source", None)
        gateway = None if event.is_withdraw or source is None else _canonical(str(source.ip_address))
        self.kernel.best(str(event.prefix), gateway)

    def _settled(self) -> bool:
        """Every configured neighbor's session is up (for a second at least), so the RIB is whole again."""
        now = time.monotonic()
        with self._lock:
            addresses = list(self.settings)
            up = dict(self._up_since)
        return bool(addresses) and all(a in up and now - up[a] >= 1.0 for a in addresses)

    def _accepted(self, address: str) -> tuple[list[str], int]:
        """(prefixes accepted from ``address``, how many its import policy refused), from its adj-RIB-in."""
        peer = self._core.get_core_service().peer_manager.get_by_addr(address)
        if peer is None:
            return [], 0
        accepted, refused = [], 0
        for route in list(peer._adj_rib_in.values()):
            if route.path.is_withdraw:
                continue
            if route.filtered:
                refused += 1
            else:
                accepted.append(str(route.path.nlri.formatted_nlri_str))
        return accepted, refused

    def _check_max(self, address: str) -> None:
        """Close the session of ``address`` (Cease, Maximum Number of Prefixes Reached) when it sent too many."""
        with self._lock:
            limit = self._policy.get(address, ((), 0))[1]
        peer = self._core.get_core_service().peer_manager.get_by_addr(address)
        if not limit or peer is None or not peer.in_established():
            return
        accepted, _ = self._accepted(address)
        if len(accepted) <= limit:
            return
        text = (f"received {len(accepted)} routes, more than max_prefixes {limit}: session closed (Cease, Maximum "
                "Number of Prefixes Reached) until the limit or the policy changes")
        log.warning("neighbor %s: %s", address, text)
        with self._lock:
            self._over_max[address] = text
        self._close_session(peer, CEASE_MAX_PREFIXES)
        self._call("neighbor.update_enabled", ip_address=address, enabled=False)

    def _close_session(self, peer: Any, subcode: int) -> None:
        """End ``peer``'s session with a Cease of ``subcode``, as os-ken's own disabling of a neighbor does
        (which always says Administrative Shutdown), and take its paths out of the RIB as a lost connection does."""
        from os_ken.services.protocols.bgp.constants import BGP_FSM_IDLE

        protocol = getattr(peer, "_protocol", None)
        if protocol is None:
            return
        protocol.send_notification(CEASE, subcode)
        protocol.stop()
        peer._protocol = None
        peer.state.bgp_state = BGP_FSM_IDLE
        peer.version_num += 1
        peer._peer_manager.on_peer_down(peer)  # its paths leave the RIB, so their routes leave the kernel
        peer._adj_rib_in.clear()

    def _connection_lost(self, address: str, reason: str) -> None:
        with self._lock:
            self._lost[address] = reason

    def _peer_event(self, kind: str, data: Any) -> None:
        peer = data["peer"]
        address = _canonical(str(peer.ip_address))
        with self._lock:
            self._since_ms[address] = _now_ms()
            if kind == "peer_up":
                self._errors.pop(address, None)  # a session that came up has no current error
                self._lost.pop(address, None)
                self._down_reason.pop(address, None)
                self._up_since[address] = time.monotonic()
                reason = ""
            else:
                self._up_since.pop(address, None)
                self._flaps[address] = self._flaps.get(address, 0) + 1
                reason = self._why_down(address)
                self._down_reason[address] = reason
        if kind == "peer_up":
            log.info("session with %s (AS %s) is up", address, peer.remote_as)
            self._send_event(Event(event="peer_up", address=address, remote_as=int(peer.remote_as)))
        else:
            log.info("session with %s (AS %s) went down: %s", address, peer.remote_as, reason)
            self._send_event(Event(event="peer_down", address=address, remote_as=int(peer.remote_as),
                                   reason=reason))

    def _why_down(self, address: str) -> str:
        """The reason of a session that just ended: its NOTIFICATION, else how os-ken lost the connection."""
        text, code = self._errors.get(address, ("", 0))
        if text:
            return text
        lost = self._lost.get(address, "")
        if "hold time" in lost.lower():
            return f"hold timer expired ({lost})"
        return f"connection lost: {lost}" if lost else "connection lost"

    def _notification_event(self, address: str, direction: str, code: int, subcode: int, reason: str) -> None:
        reason = reason or self._notification(code, subcode).reason or f"code {code} subcode {subcode}"
        with self._lock:
            self._errors[address] = (f"NOTIFICATION {direction}: {reason}", int(code))
        self._send_event(Event(event="notification", address=address,
                               direction="sent" if direction == "sent" else "received",
                               code=int(code), subcode=int(subcode), reason=reason))

    def _routes_changed(self, data: Any) -> None:
        address = _canonical(str(data["peer"].ip_address))
        with self._lock:
            if address in self._routes_pending:
                return
            self._routes_pending.add(address)
        timer = threading.Timer(ROUTES_EVENT_DELAY, self._routes_event, (address,))
        timer.daemon = True
        timer.start()

    def _routes_event(self, address: str) -> None:
        with self._lock:
            self._routes_pending.discard(address)
        try:
            self._check_max(address)
        except Exception:  # noqa: BLE001 (os-ken's tables changed under us: the next change checks again)
            log.debug("could not count the routes of %s", address, exc_info=True)
        self._send_event(Event(event="routes", address=address))

    def _send_event(self, ev: Event) -> None:
        self.clients.broadcast(ev)

    def _watch_peer(self, address: str) -> None:
        peer = self._core.get_core_service().peer_manager.get_by_addr(address)
        if peer is None:
            return
        bus = self._bus()

        def received(_id: Any, msg: Any) -> None:
            self._notification_event(address, "received", msg.error_code, msg.error_subcode, msg.reason or "")

        def sent(_id: Any, data: Any) -> None:
            self._notification_event(address, "sent", data["code"], data["subcode"], data.get("reason") or "")

        # Signals about one peer are emitted under (..., peer): listen to exactly those.
        bus.register_listener(self._signals.BGP_NOTIFICATION_RECEIVED + (peer,), received)
        bus.register_listener(self._signals.BGP_ERROR + (peer,), sent)

    # ------------------------------------------------------------ operations (client threads, one at a time)

    def hello(self) -> HelloResult:
        with self._lock:
            neighbors = [self.settings[a] for a in sorted(self.settings)]
            prefixes = sorted(self.prefixes)
        return HelloResult(protocol=PROTOCOL_VERSION, pid=os.getpid(), endpoint=self.endpoint, asn=self.asn,
                           router_id=self.router_id, address=self.host, port=self.port,
                           started_ms=self.started_ms, salt=self.salt, neighbors=neighbors, prefixes=prefixes,
                           kernel=self.kernel_args())

    def kernel_args(self) -> KernelArgs:
        k = self.kernel.settings
        return KernelArgs(install=k.install, table=k.table, protocol=k.protocol, rule_priority=k.rule_priority)

    def configure_kernel(self, install: bool, table: int, protocol: int, rule_priority: int) -> None:
        if not (1 <= table < 2**32 and table not in (253, 255) and 5 <= protocol <= 255 and 1 <= rule_priority):
            raise ValueError(f"cannot install into table {table} with protocol {protocol}, rule priority "
                             f"{rule_priority}")
        self.kernel.configure(KernelSettings(install, table, protocol, rule_priority))
        log.info("learned routes: %s", f"installed in table {table}, protocol {protocol}" if install
                 else "not installed")

    def neighbor_policy(self, address: str, import_prefixes: list[str], max_prefixes: int) -> None:
        """Change a neighbor's import policy in place: its routes are evaluated again; no session reset."""
        address = _canonical(address)
        rules = tuple(ImportRule.parse(t) for t in import_prefixes)
        with self._lock:
            if address not in self.settings:
                raise ValueError(f"no neighbor {address}")
            self._policy[address] = (rules, int(max_prefixes))
            self.settings[address]["import_prefixes"] = [str(r) for r in rules]
            self.settings[address]["max_prefixes"] = int(max_prefixes)
            was_over = self._over_max.pop(address, "")
        peer = self._core.get_core_service().peer_manager.get_by_addr(address)
        if peer is not None:
            peer.on_update_in_filter()
        if was_over:
            self._call("neighbor.update_enabled", ip_address=address, enabled=True)
        else:
            self._check_max(address)  # a lower limit applies to what the neighbor already sent
        log.info("neighbor %s: import policy %s, max prefixes %s", address,
                 "; ".join(str(r) for r in rules) or "all but the default route", max_prefixes or "unlimited")

    def password_digest(self, password: str | None) -> str:
        if not password:
            return ""
        return hmac.new(bytes.fromhex(self.salt), password.encode(), hashlib.sha256).hexdigest()

    def neighbor_add(self, address: str, remote_as: int, hold_time: int, password: str | None,
                     ipv4: bool, ipv6: bool, evpn: bool, import_prefixes: list[str] | None = None,
                     max_prefixes: int = 0, graceful_restart: int = 0, rr_client: bool = False) -> None:
        address = _canonical(address)
        rules = tuple(ImportRule.parse(t) for t in import_prefixes or [])
        with self._lock:  # before os-ken can dial (the OPEN reads graceful_restart) or receive a route
            self._errors.pop(address, None)
            self._over_max.pop(address, None)
            self._policy[address] = (rules, int(max_prefixes))
            self.settings[address] = NeighborSettings(
                address=address, remote_as=int(remote_as), hold_time=int(hold_time),
                password_digest=self.password_digest(password), ipv4=bool(ipv4), ipv6=bool(ipv6), evpn=bool(evpn),
                import_prefixes=[str(r) for r in rules], max_prefixes=int(max_prefixes),
                graceful_restart=int(graceful_restart), rr_client=rr_client)
            self._flaps[address] = 0
            self._since_ms.pop(address, None)
            self._down_reason.pop(address, None)
        try:
            # BGPSpeaker.neighbor_add has no hold time; os-ken's neighbor.create call does.
            self._call("neighbor.create", ip_address=address, remote_as=int(remote_as), hold_time=int(hold_time),
                       password=password or None, cap_mbgp_ipv4=bool(ipv4), cap_mbgp_ipv6=bool(ipv6),
                       cap_mbgp_evpn=bool(evpn), cap_four_octet_as_number=True, is_route_reflector_client=rr_client)
        except Exception:
            with self._lock:
                self.settings.pop(address, None)
                self._policy.pop(address, None)
            raise
        self._watch_peer(address)
        self.kernel.own(address)
        log.info("neighbor %s added (AS %d, hold time %d%s)", address, remote_as, hold_time,
                 ", MD5" if password else "")

    def neighbor_del(self, address: str, reason: str = "deconfigured") -> None:
        """Delete a neighbor; a session that is up first gets a Cease with ``reason``'s subcode."""
        address = _canonical(address)
        subcode = CEASE_SUBCODES.get(reason, CEASE_SUBCODES["deconfigured"])
        peer = self._core.get_core_service().peer_manager.get_by_addr(address)
        if peer is not None:
            self._close_session(peer, subcode)  # neighbor.delete alone would say Administrative Shutdown
        self.speaker.neighbor_del(address)
        with self._lock:
            self.settings.pop(address, None)
            for table in (self._errors, self._up_since, self._since_ms, self._lost, self._down_reason, self._flaps,
                          self._looped, self._policy, self._over_max):
                table.pop(address, None)
        log.info("neighbor %s removed (Cease: %s)", address,
                 "Peer De-configured" if subcode == CEASE_SUBCODES["deconfigured"] else "Administrative Shutdown")

    def prefix_add(self, prefix: str) -> None:
        self.speaker.prefix_add(prefix)
        with self._lock:
            self.prefixes.add(prefix)

    def prefix_del(self, prefix: str) -> None:
        self.speaker.prefix_del(prefix)
        with self._lock:
            self.prefixes.discard(prefix)

    def shutdown(self) -> None:
        """Every session gets a Cease (Administrative Shutdown); then nothing is left to do but exit."""
        with self._lock:
            addresses = list(self.settings)
        for address in addresses:
            with contextlib.suppress(Exception):
                self.neighbor_del(address, "shutdown")
        self.kernel.stop()  # a speaker stopped on purpose leaves none of its routes behind

    def state(self) -> StateResult:
        # neighbors_get reports address, AS and FSM state only; neighbor_state_get would dump
        # each neighbor's configuration, password included.
        now = time.monotonic()
        neighbors: dict[str, NeighborStatus] = {}
        for entry in json.loads(self.speaker.neighbors_get()):
            raw = str(entry.get("ip_addr", ""))
            address = _canonical(raw)
            fsm = str(entry.get("bgp_state", ""))
            received, refused_routes = self._accepted(address) if fsm == "Established" else ([], 0)
            with self._lock:
                text, code = self._errors.get(address, ("", 0))
                up_since = self._up_since.get(address)
                since_ms = self._since_ms.get(address, 0)
                down = self._down_reason.get(address, "")
                flaps = self._flaps.get(address, 0)
                looped = self._looped.get(address, 0)
                over = self._over_max.get(address, "")
            uptime = now - up_since if fsm == "Established" and up_since is not None else -1.0
            neighbors[address] = NeighborStatus(state=fsm, since_ms=since_ms, uptime=uptime, last_error=text,
                                                error_code=code, down_reason=down if fsm != "Established" else "",
                                                flaps=flaps, looped=looped, received=sorted(received),
                                                refused=refused_routes, over_max=over)
        with self._lock:
            refused = self.refused_connections
        return StateResult(neighbors=neighbors, refused_connections=refused, installed=self.kernel.installed,
                           kernel_error=self.kernel.last_error, foreign=list(self.kernel.foreign))


def handle(speaker: Speaker, req: Request) -> Any:
    """Run one request (not shutdown); returns its result. Raises whatever os-ken raises, or ValueError
    for an unknown op."""
    op, args = req["op"], req["args"]
    if op == "hello":
        return speaker.hello()
    if op == "neighbor_add":
        speaker.neighbor_add(args["address"], args["remote_as"], args["hold_time"], args.get("password"),
                             args.get("ipv4", True), args.get("ipv6", False), args.get("evpn", False),
                             args.get("import_prefixes", []), args.get("max_prefixes", 0),
                             args.get("graceful_restart", 0), bool(args.get("rr_client", False)))
        return None
    if op == "neighbor_policy":
        speaker.neighbor_policy(args["address"], args.get("import_prefixes", []), args.get("max_prefixes", 0))
        return None
    if op == "kernel":
        speaker.configure_kernel(bool(args["install"]), int(args["table"]), int(args["protocol"]),
                                 int(args["rule_priority"]))
        return None
    if op == "neighbor_del":
        speaker.neighbor_del(args["address"], args.get("reason", "deconfigured"))
        return None
    if op == "prefix_add":
        speaker.prefix_add(args["prefix"])
        return None
    if op == "prefix_del":
        speaker.prefix_del(args["prefix"])
        return None
    if op == "state":
        # os-ken's threads change its tables while we read them: a second try reads a settled view.
        try:
            return speaker.state()
        except RuntimeError:
            return speaker.state()
    raise ValueError(f"unknown op {op!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m isthmus.drivers.bgp.speaker",
                                description="BGP speaker of isthmus' bgp driver (JSON lines on a unix socket).")
    p.add_argument("--endpoint", required=True, help="SITE/ENDPOINT this speaker serves (reported by hello)")
    p.add_argument("--asn", type=int, required=True, help="local AS number")
    p.add_argument("--router-id", required=True, help="BGP router id (dotted quad)")
    p.add_argument("--listen-host", required=True, help="address to listen on")
    p.add_argument("--listen-port", type=int, default=179, help="TCP port to listen on (default 179)")
    p.add_argument("--socket", required=True, help="unix socket to serve the protocol on")
    p.add_argument("--pid-file", default="", help="file to write the pid into while running")
    p.add_argument("--daemon", action="store_true",
                   help="detach; return once listening (exit 0) or with the speaker's exit code")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    ready_fd = detach() if args.daemon else -1
    os.dup2(2, 1)  # anything printing to stdout lands in the log
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s pid %(process)d %(levelname)s %(name)s: %(message)s")
    logging.getLogger("bgpspeaker.api.base").setLevel(logging.WARNING)  # logs every call with its arguments
    os.environ["OSKEN_HUB_TYPE"] = "native"  # threads; eventlet's hub must not take over this process's I/O
    problem = check_listen(args.listen_host, args.listen_port)
    if problem:
        log.error("%s", problem)
        sys.stderr.flush()
        os._exit(EXIT_CANNOT_LISTEN)
    clients = Clients()
    handler = ClientLog(clients)
    handler.setLevel(args.log_level.upper())
    logging.getLogger().addHandler(handler)
    stop = threading.Event()
    code = 0
    try:
        speaker = Speaker(clients, args.endpoint, args.asn, args.router_id, args.listen_host, args.listen_port)
        if not speaker.wait_listening(LISTEN_TIMEOUT):
            log.error("os-ken did not listen on %s port %d within %g s", args.listen_host, args.listen_port,
                      LISTEN_TIMEOUT)
            sys.stderr.flush()
            os._exit(EXIT_CANNOT_LISTEN)
        server = listen_unix(args.socket)
        if args.pid_file:
            Path(args.pid_file).write_text(f"{os.getpid()}\n")
        ops = threading.Lock()  # one operation at a time, whichever client asks

        def on_sigterm(_sig: int, _frame: Any) -> None:
            stop.set()
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)

        signal.signal(signal.SIGTERM, on_sigterm)
        threading.Thread(target=accept, args=(server, clients, partial(handle, speaker), speaker.shutdown, stop, ops),
                         name="speaker-accept", daemon=True).start()
        log.info("BGP speaker of %s listening on %s port %d (AS %d, router id %s), protocol on %s",
                 args.endpoint, args.listen_host, args.listen_port, args.asn, args.router_id, args.socket)
        if ready_fd >= 0:
            os.write(ready_fd, b"\0")
            os.close(ready_fd)
        while not stop.wait(1.0):
            pass
        log.info("stopping: every session gets a Cease (Administrative Shutdown)")
        with ops:
            speaker.shutdown()
        time.sleep(0.2)  # the last responses and events reach the clients
    except Exception:
        log.exception("the BGP speaker failed")
        code = 1
    for path in (args.socket, args.pid_file):
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    # os-ken's threads are not daemons and have no clean stop: leave at once. The
    # kernel closes the BGP sockets that are left.
    os._exit(code)


if __name__ == "__main__":
    main()
