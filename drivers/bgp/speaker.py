"""The BGP speaker child of the bgp driver: os-ken's BGPSpeaker for one local endpoint, driven over stdin/stdout.

This is the only isthmus module that imports os-ken. Run by the driver as::

    python -m isthmus.drivers.bgp.speaker --asn 65001 --router-id 192.0.2.1 \\
        --listen-host 192.0.2.1 --listen-port 179 [--log-level info]

Protocol: JSON, one object per line. The message types are defined (as
TypedDicts) in ``isthmus.drivers.bgp.protocol``.

- Requests, on stdin: ``{"id": N, "op": OP, "args": {...}}``. Ops:

  ``neighbor_add``  args NeighborArgs ``{address, remote_as, hold_time, password, ipv4, ipv6, evpn}``:
                    create the neighbor (os-ken ``neighbor.create``; ``hold_time`` >= 10)
  ``neighbor_del``  args ``{address}``: delete the neighbor (its session ends with a Cease)
  ``prefix_add``    args ``{prefix}``: advertise the prefix to every neighbor (idempotent)
  ``prefix_del``    args ``{prefix}``: withdraw it (idempotent)
  ``state``         no args; result StateResult ``{neighbors: {ADDRESS: {state, uptime, last_error,
                    error_code, received}}}``
  ``shutdown``      no args; answered, then the process exits

- Responses, on stdout, one per request: ``{"id": N, "ok": true, "result": ...}``
  or ``{"id": N, "ok": false, "error": TEXT}``.
- Events, on stdout, unsolicited: ``{"event": "ready", "pid": N}`` once the
  speaker listens; ``{"event": "peer_up"|"peer_down", "address", "remote_as"}``;
  ``{"event": "notification", "address", "direction": "sent"|"received", "code",
  "subcode", "reason"}``.

Passwords appear only in ``neighbor_add`` requests: they are never logged or
echoed (os-ken's API log is silenced, and ``state`` reports no configuration).
Logs go to stderr. The process exits when stdin closes (the agent is gone),
after ``shutdown``, or with status 3 when it cannot listen on the address.

Neighbors are dialled every 10 s (os-ken's minimum connect-retry), from the
listen address, and accepted at any time.

os-ken runs on its native hub (threads, ``OSKEN_HUB_TYPE=native``, forced
here), without eventlet or monkey-patching, as seen working against gobgpd; so
stdin is read with a plain blocking loop in the main thread while os-ken's
threads run the sessions, and every write to stdout takes one lock.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from isthmus.drivers.bgp.protocol import Event, NeighborStatus, Request, Response, StateResult

log = logging.getLogger("isthmus.bgp_speaker")

EXIT_CANNOT_LISTEN = 3
LISTEN_TIMEOUT = 10.0
CONNECT_RETRY = 10  # seconds between attempts to dial a neighbor: os-ken's minimum (its default is 30)


def _canonical(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address


class Channel:
    """The protocol's output: one JSON object per line, whole lines only, from any thread."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, msg: Response | Event) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._out.write(data)
            self._out.flush()


def adapt_os_ken(host: str) -> None:
    """Two fixes to os-ken 4.2.2 for this process, which serves the one endpoint at ``host``.

    - TCP MD5 keys: os-ken hands the password (a str) to ``struct.pack("80s")``,
      which wants bytes on Python 3, so no MD5 key could be set or cleared.
      Keys are encoded before they reach the socket option.
    - Source address: os-ken dials a neighbor from whatever address the kernel
      picks, and binds a source only together with a fixed source port. A peer
      knows us by the endpoint's address and refuses (with MD5: never sees) a
      connection from another address of this host, so os-ken's one dialling
      method gets ``host`` with an ephemeral port.
    """
    from os_ken.lib import sockopt
    from os_ken.services.protocols.bgp.base import Activity

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


class Speaker:
    """os-ken's BGPSpeaker plus what the protocol needs: per-neighbor last errors, events."""

    def __init__(self, channel: Channel, asn: int, router_id: str, host: str, port: int) -> None:
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
        self.channel = channel
        self._errors: dict[str, tuple[str, int]] = {}  # neighbor address -> (text, BGP error code)
        self._up_since: dict[str, float] = {}  # neighbor address -> monotonic time its session came up
        self._lock = threading.Lock()
        adapt_os_ken(host)

        class _BGPSpeaker(BGPSpeaker):  # type: ignore[misc]
            def _core_start(self, settings: dict[str, Any]) -> None:
                # BGPSpeaker takes no connect-retry argument; its core does (default 30 s).
                settings[BGP_CONN_RETRY_TIME] = CONNECT_RETRY
                super()._core_start(settings)

        self.speaker = _BGPSpeaker(as_number=asn, router_id=router_id, bgp_server_hosts=[host],
                                   bgp_server_port=port)
        bus = self._bus()
        bus.register_listener(BgpSignalBus.BGP_ADJ_UP, lambda _id, data: self._peer_event("peer_up", data))
        bus.register_listener(BgpSignalBus.BGP_ADJ_DOWN, lambda _id, data: self._peer_event("peer_down", data))

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

    # ------------------------------------------------------------ os-ken signal handlers (os-ken's threads)

    def _peer_event(self, kind: str, data: Any) -> None:
        peer = data["peer"]
        address = _canonical(str(peer.ip_address))
        with self._lock:
            if kind == "peer_up":
                self._errors.pop(address, None)  # a session that came up has no current error
                self._up_since[address] = time.monotonic()
            else:
                self._up_since.pop(address, None)
        self._send_event(Event(event="peer_up" if kind == "peer_up" else "peer_down", address=address,
                               remote_as=int(peer.remote_as)))

    def _notification_event(self, address: str, direction: str, code: int, subcode: int, reason: str) -> None:
        reason = reason or self._notification(code, subcode).reason or f"code {code} subcode {subcode}"
        with self._lock:
            self._errors[address] = (f"NOTIFICATION {direction}: {reason}", int(code))
        self._send_event(Event(event="notification", address=address,
                               direction="sent" if direction == "sent" else "received",
                               code=int(code), subcode=int(subcode), reason=reason))

    def _send_event(self, ev: Event) -> None:
        try:
            self.channel.send(ev)
        except OSError:
            pass  # the agent is gone; the main loop sees stdin close and exits

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

    # ------------------------------------------------------------ operations (main thread)

    def neighbor_add(self, address: str, remote_as: int, hold_time: int, password: str | None,
                     ipv4: bool, ipv6: bool, evpn: bool) -> None:
        address = _canonical(address)
        with self._lock:
            self._errors.pop(address, None)
        # BGPSpeaker.neighbor_add has no hold time; os-ken's neighbor.create call does.
        self._call("neighbor.create", ip_address=address, remote_as=int(remote_as), hold_time=int(hold_time),
                   password=password or None, cap_mbgp_ipv4=bool(ipv4), cap_mbgp_ipv6=bool(ipv6),
                   cap_mbgp_evpn=bool(evpn), cap_four_octet_as_number=True)
        self._watch_peer(address)

    def neighbor_del(self, address: str) -> None:
        address = _canonical(address)
        self.speaker.neighbor_del(address)
        with self._lock:
            self._errors.pop(address, None)

    def prefix_add(self, prefix: str) -> None:
        self.speaker.prefix_add(prefix)

    def prefix_del(self, prefix: str) -> None:
        self.speaker.prefix_del(prefix)

    def state(self) -> StateResult:
        # neighbors_get reports address, AS and FSM state only; neighbor_state_get would dump
        # each neighbor's configuration, password included.
        now = time.monotonic()
        neighbors: dict[str, NeighborStatus] = {}
        for entry in json.loads(self.speaker.neighbors_get()):
            raw = str(entry.get("ip_addr", ""))
            address = _canonical(raw)
            fsm = str(entry.get("bgp_state", ""))
            received: list[str] = []
            if fsm == "Established":
                for route in json.loads(self.speaker.neighbor_get("received-routes", raw)):
                    path = route.get("path", {})
                    if not path.get("is_withdraw"):
                        prefix = path.get("nlri", {}).get("prefix")
                        if prefix:
                            received.append(str(prefix))
            with self._lock:
                text, code = self._errors.get(address, ("", 0))
                up_since = self._up_since.get(address)
            uptime = now - up_since if fsm == "Established" and up_since is not None else -1.0
            neighbors[address] = NeighborStatus(state=fsm, uptime=uptime, last_error=text, error_code=code,
                                                received=sorted(received))
        return StateResult(neighbors=neighbors)


def handle(speaker: Speaker, req: Request) -> Any:
    """Run one request; returns its result. Raises whatever os-ken raises, or ValueError for an unknown op."""
    op, args = req["op"], req["args"]
    if op == "neighbor_add":
        speaker.neighbor_add(args["address"], args["remote_as"], args["hold_time"], args.get("password"),
                             args.get("ipv4", True), args.get("ipv6", False), args.get("evpn", False))
        return None
    if op == "neighbor_del":
        speaker.neighbor_del(args["address"])
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


def _error_text(exc: BaseException) -> str:
    # os-ken's exceptions carry their text in .message / .desc, str() is often empty.
    for attr in ("message", "desc"):
        text = getattr(exc, attr, None)
        if text:
            return str(text)
    return str(exc) or type(exc).__name__


def check_listen(host: str, port: int) -> str:
    """"" when ``host:port`` can be listened on, else why not (os-ken only logs a failed bind)."""
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return f"cannot listen on {host} port {port}: {exc.strerror or exc}"
    return ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m isthmus.drivers.bgp.speaker",
                                description="BGP speaker child of isthmus' bgp driver (JSON lines on stdin/stdout).")
    p.add_argument("--asn", type=int, required=True, help="local AS number")
    p.add_argument("--router-id", required=True, help="BGP router id (dotted quad)")
    p.add_argument("--listen-host", required=True, help="address to listen on")
    p.add_argument("--listen-port", type=int, default=179, help="TCP port to listen on (default 179)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p.parse_args(argv)


def serve(speaker: Speaker, channel: Channel, requests: IO[bytes]) -> None:
    """Answer requests from ``requests`` until it closes or a shutdown arrives."""
    for line in requests:
        try:
            req: Request = json.loads(line)
            rid = int(req["id"])
        except (ValueError, KeyError, TypeError):
            log.error("ignoring a line that is not a request: %.200r", line)
            continue
        if req.get("op") == "shutdown":
            channel.send(Response(id=rid, ok=True, result=None))
            return
        try:
            resp = Response(id=rid, ok=True, result=handle(speaker, req))
        except Exception as exc:  # noqa: BLE001 (os-ken's refusal goes back to the driver)
            resp = Response(id=rid, ok=False, error=_error_text(exc))
        channel.send(resp)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # The protocol owns the real stdout; anything else printing to fd 1 lands in stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("bgpspeaker.api.base").setLevel(logging.WARNING)  # logs every call with its arguments
    os.environ["OSKEN_HUB_TYPE"] = "native"  # threads; eventlet's hub must not take over this process's I/O
    problem = check_listen(args.listen_host, args.listen_port)
    if problem:
        log.error("%s", problem)
        sys.stderr.flush()
        os._exit(EXIT_CANNOT_LISTEN)
    channel = Channel(out)
    code = 0
    try:
        speaker = Speaker(channel, args.asn, args.router_id, args.listen_host, args.listen_port)
        if not speaker.wait_listening(LISTEN_TIMEOUT):
            log.error("os-ken did not listen on %s port %d within %g s", args.listen_host, args.listen_port,
                      LISTEN_TIMEOUT)
            sys.stderr.flush()
            os._exit(EXIT_CANNOT_LISTEN)
        channel.send(Event(event="ready", pid=os.getpid()))
        serve(speaker, channel, sys.stdin.buffer)
    except OSError as exc:  # stdout closed under us: the agent is gone
        log.info("protocol channel closed: %s", exc)
    except Exception:
        log.exception("the BGP speaker failed")
        code = 1
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    # os-ken's threads are not daemons and have no clean stop: leave at once. The
    # kernel closes the BGP sockets, so peers see the sessions end.
    os._exit(code)


if __name__ == "__main__":
    main()
