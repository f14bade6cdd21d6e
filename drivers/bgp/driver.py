"""The bgp driver: BGP sessions from a site's local endpoints to their peers, spoken by os-ken in a child process.

os-ken (and the eventlet it brings) never runs in the agent's asyncio/grpc.aio
process: each local endpoint that has BGP peerings gets one speaker child,
``python -m isthmus.drivers.bgp.speaker`` (see that module for the protocol on
its stdin/stdout, whose message types are in ``isthmus.drivers.bgp.protocol``).
A crash of a child takes down that endpoint's sessions, never the agent; the
driver logs the exit code with the child's last stderr lines, starts a new
child on the next apply (backoff 0.5 s doubling up to 30 s while it keeps
dying) and re-adds every desired neighbor and prefix. Child stderr goes to the agent's log, each line
prefixed with the endpoint and the child's pid; the pid is also written to
``STATE_DIR/speaker-SITE-ENDPOINT.pid`` while the child runs.

What a peering asks for, and how it is realized:

- speaker: AS and router id of the local endpoint (an IPv6 endpoint needs an
  explicit router id), listening on the endpoint's address, port 179 (option
  ``listen_port``). One child per local endpoint, so endpoints with different
  AS numbers or router ids coexist; a changed AS, router id or address restarts
  that endpoint's child. Two local endpoints with the same address cannot both
  listen on it: the peerings of the later one (by name) show ERROR.
- neighbor: ``remote.address`` / ``remote.asn`` (2- and 4-byte ASNs, IPv4 and
  IPv6), dialled from the local endpoint's address; address families from
  ``bgp.address_families`` (the IPv4/IPv6 unicast and EVPN capabilities); TCP
  MD5 password from ``bgp.password_ref`` (``file:/PATH`` or ``env:NAME``, read
  on the agent host at every apply and never logged; an unreadable secret is an
  ERROR of that peering naming the path or variable, and its neighbor is
  removed). Two peerings of one endpoint with the same neighbor address: the
  later one (by name) shows ERROR.
- hold time: os-ken's ``neighbor_add`` has no hold-time argument, so the child
  creates neighbors through os-ken's ``neighbor.create`` call, which has one.
  os-ken refuses hold times below 10 s: 3..9 are offered as 10 (the peer's
  lower value still wins the negotiation); 0 (no keepalives) cannot be offered
  at all and shows ERROR.
- prefixes: the local endpoint's property ``bgp.advertise`` (comma-separated),
  added and withdrawn one by one as the property changes.
- admin state DOWN: the neighbor is removed; the peering shows DOWN.

An unchanged neighbor is never removed and re-added, so repeated applies do not
reset its session; any change of its parameters (AS, hold time, password,
families) re-creates it, because os-ken can change none of them in place.

Observed state: ESTABLISHED only while os-ken's FSM is Established; ERROR after
an OPEN message error NOTIFICATION sent or received (bad peer AS, bad BGP
identifier, unacceptable hold time, ...), which retrying cannot fix; otherwise
CONNECTING, with the last NOTIFICATION as the error text when there was one.
``received_prefixes`` are the prefixes in the neighbor's adj-RIB-in. While a
child is being restarted its peerings show CONNECTING; after three quick
deaths in a row, ERROR with the exit code and its last stderr line.

Options (``--driver-opt bgp.KEY=VALUE``):
  listen_port        TCP port the speakers listen on (default 179); peers are still dialled on 179
  speaker_log_level  log level of the speaker children: debug, info, warning, error (default info)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from isthmus.core.model import (
    ADVERTISE_PROPERTY,
    AdminState,
    ConnectionType,
    DesiredPeering,
    Endpoint,
    ObservedPeering,
    PeeringState,
    default_address_families,
)
from isthmus.drivers.base import Driver, DriverContext, DriverError
from isthmus.drivers.bgp.protocol import (
    AddressArgs,
    Event,
    NeighborArgs,
    Op,
    PrefixArgs,
    Request,
    Response,
    StateResult,
)
from isthmus.drivers.secrets import SecretError, read_secret

log = logging.getLogger(__name__)

SPEAKER_MODULE = "isthmus.drivers.bgp.speaker"
BGP_PORT = 179
OSKEN_MIN_HOLD_TIME = 10
START_TIMEOUT = 30.0  # seconds for a child to import os-ken and listen
REQUEST_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
RESTART_DELAY = 0.5  # first restart; doubles while the child keeps dying
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 30.0  # a child that lived this long starts the backoff afresh
FAILURES_BEFORE_ERROR = 3
STDERR_TAIL = 20
MAX_LINE = 16 * 1024 * 1024  # a state reply lists every received prefix
LOG_LEVELS = ("debug", "info", "warning", "error")
OPEN_MESSAGE_ERROR = 2  # BGP error code (RFC 4271 6.2): a configuration mismatch
_DIGEST_KEY = os.urandom(32)  # passwords are compared as keyed digests that mean nothing outside this process


# ---------------------------------------------------------------- errors of this module
#
#   SpeakerError          the child did not do what was asked
#   ├── SpeakerGone       it is not running (exited, never started, stopped answering)
#   └── SpeakerRefused    it answered ok=false (os-ken refused the operation)
#
# They stay inside this module, as does SecretError (isthmus.drivers.secrets, an
# unreadable password_ref): apply/observe turn them into peering states.


class SpeakerError(Exception):
    """The speaker child did not do what was asked."""


class SpeakerGone(SpeakerError):
    """The speaker child is not running or stopped answering."""


class SpeakerRefused(SpeakerError):
    """The speaker child answered with an error (os-ken refused the operation)."""


# ---------------------------------------------------------------- what a peering asks for


def speaker_hold_time(hold_time: int) -> int:
    """The hold time to offer for the desired ``hold_time``; raises ValueError for 0, which os-ken cannot offer."""
    if hold_time == 0:
        raise ValueError("hold time 0 (no keepalives) is not supported by the os-ken speaker; use 10..65535")
    return max(hold_time, OSKEN_MIN_HOLD_TIME)


@dataclass(frozen=True)
class SpeakerConfig:
    """What one speaker child is started with: it changes only by restarting the child."""

    asn: int
    router_id: str
    address: str
    port: int

    @classmethod
    def of(cls, local: Endpoint, port: int) -> SpeakerConfig:
        """The speaker of ``local``; raises ValueError when the endpoint has no router id."""
        if not local.router_id:
            raise ValueError(
                f"local endpoint {local.site}/{local.name} has the IPv6 address {local.address} and no router id; "
                "give it one (a dotted quad)"
            )
        return cls(local.asn, local.router_id, local.address, port)


@dataclass(frozen=True)
class NeighborConfig:
    """One neighbor as configured in a child. The password is kept only as a digest, to notice changes."""

    address: str
    remote_as: int
    hold_time: int
    password_digest: str
    ipv4: bool
    ipv6: bool
    evpn: bool

    @classmethod
    def of(cls, peering: DesiredPeering) -> tuple[NeighborConfig, str | None]:
        """The neighbor of ``peering`` and its password; raises SecretError or ValueError (hold time)."""
        bgp = peering.bgp
        hold = speaker_hold_time(bgp.hold_time if bgp is not None else 90)
        password = read_secret(bgp.password_ref) if bgp is not None and bgp.password_ref else None
        families = (bgp.address_families if bgp is not None else ()) or default_address_families(
            peering.remote.address)
        digest = hmac.new(_DIGEST_KEY, password.encode(), hashlib.sha256).hexdigest() if password is not None else ""
        cfg = cls(peering.remote.address, peering.remote.asn, hold, digest,
                  "ipv4-unicast" in families, "ipv6-unicast" in families, "l2vpn-evpn" in families)
        return cfg, password

    def args(self, password: str | None) -> NeighborArgs:
        return NeighborArgs(address=self.address, remote_as=self.remote_as, hold_time=self.hold_time,
                            password=password, ipv4=self.ipv4, ipv6=self.ipv6, evpn=self.evpn)


def advertised_prefixes(local: Endpoint) -> set[str]:
    """The prefixes ``local`` advertises (its ``bgp.advertise`` property, canonical since validation)."""
    text = local.properties.get(ADVERTISE_PROPERTY, "")
    out = set()
    for item in (t.strip() for t in text.split(",")):
        if item:
            with contextlib.suppress(ValueError):  # validated by the coordinator; skip anything else
                out.add(str(ipaddress.ip_network(item, strict=True)))
    return out


def _now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- one speaker child


class SpeakerProcess:
    """One running ``bgp.speaker`` child: requests over its stdin/stdout, stderr to the log.

    Use ``await SpeakerProcess.start(...)``; ``request`` sends one operation;
    ``stop`` ends the child (shutdown op, then kill).
    """

    def __init__(self, label: str, proc: asyncio.subprocess.Process) -> None:
        self.label = label
        self.proc = proc
        self.pid = proc.pid
        self.started = time.monotonic()
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        self.exited = asyncio.Event()
        self.ready = asyncio.Event()
        self.stopping = False
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Response]] = {}
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name=f"bgp-speaker-{label}-stdout"),
            asyncio.create_task(self._read_stderr(), name=f"bgp-speaker-{label}-stderr"),
        ]
        self._tasks.append(asyncio.create_task(self._watch(), name=f"bgp-speaker-{label}-exit"))

    @classmethod
    async def start(cls, label: str, config: SpeakerConfig, log_level: str) -> SpeakerProcess:
        """Start a child for ``config`` and wait until it listens.

        ``label``: how logs name it (the endpoint). Raises SpeakerGone (with the
        exit code and its last stderr line) when it exits or is not ready in time.
        """
        args = [sys.executable, "-m", SPEAKER_MODULE, "--asn", str(config.asn), "--router-id", config.router_id,
                "--listen-host", config.address, "--listen-port", str(config.port), "--log-level", log_level]
        try:
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=MAX_LINE,
                start_new_session=True,  # a Ctrl-C meant for the agent must not kill it first
            )
        except OSError as exc:
            raise SpeakerGone(f"cannot start the BGP speaker ({sys.executable}): {exc}") from None
        child = cls(label, proc)
        ready = asyncio.create_task(child.ready.wait())
        exited = asyncio.create_task(child.exited.wait())
        try:
            await asyncio.wait({ready, exited}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            exited.cancel()
        if not child.ready.is_set():
            died = child.exited.is_set()
            child.stopping = not died  # a child that did not start in time is killed: no exit warning
            await child.kill()
            raise SpeakerGone(child.exit_text() if died
                              else f"the BGP speaker was not ready within {START_TIMEOUT:g} s")
        return child

    @property
    def running(self) -> bool:
        return not self.exited.is_set()

    def exit_text(self) -> str:
        """How the child ended, for logs and peering errors: exit code (or signal) and its last complaint."""
        code = self.proc.returncode
        if code is None:
            return "the BGP speaker is not answering"
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        last = next((line for line in reversed(self.stderr_tail)
                     if line.strip() and not line.startswith(("INFO ", "DEBUG "))), "")
        return f"the BGP speaker {how}" + (f": {last}" if last else "")

    async def request(self, op: Op, args: Mapping[str, Any] | None = None,
                      timeout: float = REQUEST_TIMEOUT) -> Any:
        """Send ``op`` with ``args`` and return its result.

        Raises SpeakerRefused when the child answers with an error, SpeakerGone
        when it is not running, exits meanwhile or does not answer within ``timeout``.
        """
        if not self.running or self.proc.stdin is None:
            raise SpeakerGone(self.exit_text())
        self._next_id += 1
        req = Request(id=self._next_id, op=op, args=dict(args or {}))
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[req["id"]] = fut
        try:
            self.proc.stdin.write(json.dumps(req).encode() + b"\n")
            await self.proc.stdin.drain()
            resp = await asyncio.wait_for(fut, timeout)
        except (BrokenPipeError, ConnectionResetError):
            raise SpeakerGone(self.exit_text()) from None
        except TimeoutError:
            log.warning("bgp speaker %s (pid %d) did not answer %s within %g s; killing it",
                        self.label, self.pid, op, timeout)
            await self.kill()
            raise SpeakerGone(f"the BGP speaker did not answer {op} within {timeout:g} s") from None
        finally:
            self._pending.pop(req["id"], None)
        if not resp.get("ok"):
            raise SpeakerRefused(resp.get("error") or f"{op} failed")
        return resp.get("result")

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End the child: ask it to shut down, wait up to ``timeout`` seconds, then kill it."""
        self.stopping = True
        if self.running:
            with contextlib.suppress(SpeakerError):
                await self.request("shutdown", timeout=timeout)
            try:
                await asyncio.wait_for(self.exited.wait(), timeout)
            except TimeoutError:
                log.warning("bgp speaker %s (pid %d) did not exit within %g s; killing it",
                            self.label, self.pid, timeout)
        await self.kill()

    async def kill(self) -> None:
        """Kill the child at once and wait for its reader tasks."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await asyncio.wait_for(self.exited.wait(), STOP_TIMEOUT)

    # ------------------------------------------------------------ readers

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                line = await self.proc.stdout.readline()
            except ValueError:  # a line over MAX_LINE: the protocol is broken
                log.error("bgp speaker %s (pid %d) wrote a line over %d bytes; killing it",
                          self.label, self.pid, MAX_LINE)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                return
            if not line:
                return
            try:
                msg = json.loads(line)
            except ValueError:
                log.warning("bgp speaker %s (pid %d): not a protocol line: %.200r", self.label, self.pid, line)
                continue
            if not isinstance(msg, dict):
                continue
            if "event" in msg:
                self._on_event(cast(Event, msg))
            elif isinstance(msg.get("id"), int):
                fut = self._pending.get(msg["id"])
                if fut is not None and not fut.done():
                    fut.set_result(cast(Response, msg))

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while True:
            try:
                raw = await self.proc.stderr.readline()
            except ValueError:
                continue  # an overlong line was dropped
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            self.stderr_tail.append(line)
            log.info("bgp speaker %s[%d]: %s", self.label, self.pid, line)

    async def _watch(self) -> None:
        await self.proc.wait()
        await asyncio.wait(self._tasks[:2], timeout=2)  # the last stderr lines
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(SpeakerGone(self.exit_text()))
        if not self.stopping:
            log.warning("bgp speaker %s (pid %d) %s; last stderr lines:\n%s", self.label, self.pid,
                        self.exit_text().removeprefix("the BGP speaker "), "\n".join(self.stderr_tail) or "(none)")
        self.exited.set()

    def _on_event(self, ev: Event) -> None:
        kind = ev.get("event")
        if kind == "ready":
            self.ready.set()
        elif kind == "peer_up":
            log.info("bgp speaker %s: session with %s (AS %s) is up", self.label, ev.get("address"),
                     ev.get("remote_as"))
        elif kind == "peer_down":
            log.info("bgp speaker %s: session with %s (AS %s) went down", self.label, ev.get("address"),
                     ev.get("remote_as"))
        elif kind == "notification":
            log.warning("bgp speaker %s: NOTIFICATION %s %s %s: %s", self.label, ev.get("direction"),
                        "to" if ev.get("direction") == "sent" else "from", ev.get("address"),
                        ev.get("reason") or f"code {ev.get('code')} subcode {ev.get('subcode')}")


# ---------------------------------------------------------------- the driver


@dataclass
class _Speaker:
    """The driver's view of one local endpoint's speaker: its child and what that child has."""

    endpoint: str  # site/name
    config: SpeakerConfig
    process: SpeakerProcess | None = None
    neighbors: dict[str, NeighborConfig] = field(default_factory=dict)
    prefixes: set[str] = field(default_factory=set)
    refused: dict[str, str] = field(default_factory=dict)  # neighbor address or prefix -> os-ken's refusal
    failures: int = 0  # deaths in a row of children that lived less than STABLE_AFTER
    retry_at: float = 0.0  # monotonic time before which no new child is started
    last_exit: str = ""


@dataclass(frozen=True)
class _Plan:
    """What apply decided for one peering: a fixed state, or a neighbor of an endpoint's speaker."""

    state: PeeringState | None = None  # set: no neighbor, show this
    error: str = ""
    endpoint: str = ""
    address: str = ""


@dataclass
class _Wanted:
    config: SpeakerConfig
    neighbors: dict[str, tuple[NeighborConfig, str | None]] = field(default_factory=dict)
    prefixes: set[str] = field(default_factory=set)


class BgpDriver(Driver):
    """Realizes BGP peerings with one os-ken speaker child process per local endpoint.

    ``context.options``: ``listen_port`` (default 179), ``speaker_log_level``
    (default info). See the module docstring for what is realized and how.
    """

    name = "bgp"
    handles = frozenset({ConnectionType.BGP})

    def __init__(self, context: DriverContext) -> None:
        """``context``: the site, the state directory (pid files), the options.

        Raises DriverError(terminal=True) for an option value it cannot use.
        """
        super().__init__(context)
        opts = dict(context.options)
        port_text = opts.pop("listen_port", str(BGP_PORT))
        try:
            self.listen_port = int(port_text)
        except ValueError:
            self.listen_port = -1
        if not 1 <= self.listen_port <= 65535:
            raise DriverError(f"bgp.listen_port: {port_text!r} is not a TCP port (1..65535)", terminal=True)
        self.log_level = opts.pop("speaker_log_level", "info").lower()
        if self.log_level not in LOG_LEVELS:
            raise DriverError(f"bgp.speaker_log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}",
                              terminal=True)
        if opts:
            raise DriverError(f"bgp: unknown option(s) {', '.join(sorted(opts))}; known: listen_port, "
                              "speaker_log_level", terminal=True)
        self._speakers: dict[str, _Speaker] = {}
        self._plans: dict[str, _Plan] = {}
        self._since: dict[str, tuple[PeeringState, int]] = {}

    # ------------------------------------------------------------ apply

    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        """Make the speakers match ``peerings`` (BGP peerings keyed by connection name).

        Starts, restarts (changed AS, router id or address; a dead child after
        its backoff) and stops speaker children, adds and removes neighbors and
        prefixes. Problems of one peering or one endpoint show in ``observe``;
        raises DriverError only if the state directory cannot be created.
        """
        try:
            self.context.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DriverError(f"cannot create the bgp state directory {self.context.state_dir}: {exc}") from None
        plans, wanted = self._plan(peerings)
        self._plans = plans
        for key in [k for k in self._speakers if k not in wanted]:
            sp = self._speakers.pop(key)
            log.info("site %s: stopping the BGP speaker of %s (no peerings left)", self.context.site, key)
            await self._stop(sp)
        await asyncio.gather(*(self._sync(key, want) for key, want in sorted(wanted.items())))
        for name in [n for n in self._since if n not in plans]:
            del self._since[name]

    def _plan(self, peerings: Mapping[str, DesiredPeering]) -> tuple[dict[str, _Plan], dict[str, _Wanted]]:
        plans: dict[str, _Plan] = {}
        wanted: dict[str, _Wanted] = {}
        owners: dict[str, str] = {}  # listen address -> endpoint whose speaker has it
        users: dict[tuple[str, str], str] = {}  # (endpoint, neighbor address) -> connection
        for name, peering in sorted(peerings.items()):
            local = peering.local
            key = f"{local.site}/{local.name}"
            try:
                config = SpeakerConfig.of(local, self.listen_port)
            except ValueError as exc:
                plans[name] = _Plan(PeeringState.ERROR, str(exc))
                continue
            owner = owners.setdefault(local.address, key)
            if owner != key:
                plans[name] = _Plan(PeeringState.ERROR, f"address {local.address} is already the BGP speaker of "
                                    f"local endpoint {owner}; one speaker per address")
                continue
            want = wanted.setdefault(key, _Wanted(config, prefixes=advertised_prefixes(local)))
            if want.config != config:  # copies of one endpoint from different revisions: the first wins
                plans[name] = _Plan(PeeringState.CONNECTING, f"local endpoint {key} is changing")
                continue
            want.prefixes |= advertised_prefixes(local)
            if peering.admin_state == AdminState.DOWN:
                plans[name] = _Plan(PeeringState.DOWN)
                continue
            address = peering.remote.address
            other = users.setdefault((key, address), name)
            if other != name:
                plans[name] = _Plan(PeeringState.ERROR, f"neighbor {address} of {key} is already used by "
                                    f"connection {other}; one session per neighbor address")
                continue
            try:
                neighbor, password = NeighborConfig.of(peering)
            except (SecretError, ValueError) as exc:
                plans[name] = _Plan(PeeringState.ERROR, str(exc))
                continue
            want.neighbors[address] = (neighbor, password)
            plans[name] = _Plan(endpoint=key, address=address)
        # An endpoint whose peerings are all DOWN or in error needs no speaker.
        return plans, {k: w for k, w in wanted.items() if w.neighbors}

    async def _sync(self, key: str, want: _Wanted) -> None:
        sp = self._speakers.get(key)
        if sp is not None and sp.config != want.config:
            changes = ", ".join(f"{what} {old} -> {new}" for what, old, new in (
                ("AS", sp.config.asn, want.config.asn), ("router id", sp.config.router_id, want.config.router_id),
                ("address", sp.config.address, want.config.address), ("port", sp.config.port, want.config.port),
            ) if old != new)
            log.info("site %s: restarting the BGP speaker of %s: %s", self.context.site, key, changes)
            await self._stop(sp)
            sp = None
        if sp is None:
            sp = self._speakers[key] = _Speaker(key, want.config)
        if sp.process is not None and not sp.process.running:
            self._reap(sp)
        if sp.process is None:
            if time.monotonic() < sp.retry_at:
                return
            try:
                sp.process = await SpeakerProcess.start(key, sp.config, self.log_level)
            except SpeakerGone as exc:
                self._failed(sp, str(exc), lived=0.0)
                return
            sp.neighbors.clear()
            sp.prefixes.clear()
            sp.refused.clear()
            self._pid_file(key).write_text(f"{sp.process.pid}\n")
            log.info("site %s: BGP speaker of %s started (pid %d, AS %d, router id %s, listening on %s port %d)",
                     self.context.site, key, sp.process.pid, sp.config.asn, sp.config.router_id,
                     sp.config.address, sp.config.port)
        proc = sp.process
        try:
            for address in [a for a, cfg in sp.neighbors.items()
                            if a not in want.neighbors or want.neighbors[a][0] != cfg]:
                with contextlib.suppress(SpeakerRefused):  # already gone is fine
                    await proc.request("neighbor_del", AddressArgs(address=address))
                del sp.neighbors[address]
                log.info("site %s: %s: removed BGP neighbor %s", self.context.site, key, address)
            for address, (cfg, password) in sorted(want.neighbors.items()):
                if address in sp.neighbors:
                    continue
                try:
                    await proc.request("neighbor_add", cfg.args(password))
                except SpeakerRefused as exc:
                    if sp.refused.get(address) != str(exc):
                        log.warning("site %s: %s: os-ken refused neighbor %s: %s", self.context.site, key,
                                    address, exc)
                    sp.refused[address] = str(exc)
                    continue
                sp.refused.pop(address, None)
                sp.neighbors[address] = cfg
                log.info("site %s: %s: added BGP neighbor %s (AS %d, hold time %d%s)", self.context.site, key,
                         address, cfg.remote_as, cfg.hold_time, ", MD5" if password else "")
            for prefix in sorted(sp.prefixes - want.prefixes):
                with contextlib.suppress(SpeakerRefused):
                    await proc.request("prefix_del", PrefixArgs(prefix=prefix))
                sp.prefixes.discard(prefix)
                sp.refused.pop(prefix, None)
                log.info("site %s: %s: withdrew %s", self.context.site, key, prefix)
            for prefix in sorted(want.prefixes - sp.prefixes):
                try:
                    await proc.request("prefix_add", PrefixArgs(prefix=prefix))
                except SpeakerRefused as exc:
                    sp.refused[prefix] = str(exc)
                    continue
                sp.refused.pop(prefix, None)
                sp.prefixes.add(prefix)
                log.info("site %s: %s: advertising %s", self.context.site, key, prefix)
            for stale in [k for k in sp.refused if k not in want.neighbors and k not in want.prefixes]:
                del sp.refused[stale]
        except SpeakerGone:
            if proc.running:
                await proc.kill()
            self._reap(sp)

    def _pid_file(self, key: str) -> Path:
        return self.context.state_dir / f"speaker-{key.replace('/', '-')}.pid"

    def _reap(self, sp: _Speaker) -> None:
        """Record the death of ``sp``'s child and when to start the next one."""
        proc = sp.process
        assert proc is not None
        sp.process = None
        self._pid_file(sp.endpoint).unlink(missing_ok=True)
        self._failed(sp, proc.exit_text(), lived=time.monotonic() - proc.started)

    def _failed(self, sp: _Speaker, text: str, lived: float) -> None:
        sp.failures = 1 if lived >= STABLE_AFTER else sp.failures + 1
        delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (sp.failures - 1))
        sp.retry_at = time.monotonic() + delay
        sp.last_exit = text
        log.warning("site %s: BGP speaker of %s is down (%s); starting a new one in %.1f s",
                    self.context.site, sp.endpoint, text, delay)

    async def _stop(self, sp: _Speaker) -> None:
        if sp.process is not None:
            await sp.process.stop()
            sp.process = None
        self._pid_file(sp.endpoint).unlink(missing_ok=True)

    # ------------------------------------------------------------ observe

    async def observe(self) -> dict[str, ObservedPeering]:
        """The state of every BGP peering of the last apply, keyed by connection name.

        Reads each speaker's neighbors once. Never raises for a dead or
        unreadable speaker: its peerings show CONNECTING (ERROR after repeated
        deaths) with the reason.
        """
        states: dict[str, StateResult | str] = {}

        async def read(key: str, sp: _Speaker) -> None:
            proc = sp.process
            if proc is None or not proc.running:
                if proc is not None:
                    self._reap(sp)
                states[key] = sp.last_exit or "the BGP speaker is not running"
                return
            try:
                states[key] = await proc.request("state")
            except SpeakerRefused as exc:
                states[key] = f"cannot read the BGP speaker's state: {exc}"
            except SpeakerGone:
                self._reap(sp)
                states[key] = sp.last_exit

        await asyncio.gather(*(read(k, sp) for k, sp in self._speakers.items()))
        out = {}
        for name, plan in self._plans.items():
            state, error, received = self._state(plan, states)
            prev = self._since.get(name)
            if prev is None or prev[0] != state:
                self._since[name] = (state, _now_ms())
            out[name] = ObservedPeering(name, state, error, self._since[name][1], self.name, received)
        return out

    def _state(self, plan: _Plan, states: Mapping[str, StateResult | str]
               ) -> tuple[PeeringState, str, tuple[str, ...]]:
        if plan.state is not None:
            return plan.state, plan.error, ()
        sp = self._speakers.get(plan.endpoint)
        got = states.get(plan.endpoint)
        if sp is None or got is None:
            return PeeringState.CONNECTING, "the BGP speaker is starting", ()
        if isinstance(got, str):
            if sp.process is None and sp.failures >= FAILURES_BEFORE_ERROR:
                return PeeringState.ERROR, f"{got} ({sp.failures} times in a row; retrying)", ()
            return PeeringState.CONNECTING, got, ()
        if plan.address in sp.refused:
            return PeeringState.ERROR, f"os-ken refused the neighbor: {sp.refused[plan.address]}", ()
        refused = "; ".join(f"cannot advertise {k}: {v}" for k, v in sorted(sp.refused.items()) if "/" in k)
        status = got.get("neighbors", {}).get(plan.address)
        if status is None:
            return PeeringState.CONNECTING, refused or "the neighbor is not configured yet", ()
        received = tuple(sorted(set(status.get("received", []))))
        if status.get("state") == "Established":
            return PeeringState.ESTABLISHED, refused, received
        last = status.get("last_error", "")
        neighbor = sp.neighbors.get(plan.address)
        if "bad peer AS" in last and neighbor is not None:
            # Say which AS is wrong, in terms of the endpoints the operator configured.
            last += (f" (the peer did not announce AS {neighbor.remote_as}, the remote endpoint's AS)"
                     if "sent" in last else f" (the peer does not expect our AS {sp.config.asn})")
        error = "; ".join(e for e in (last, refused) if e)
        if status.get("error_code") == OPEN_MESSAGE_ERROR:
            return PeeringState.ERROR, error, ()
        return PeeringState.CONNECTING, error, ()

    # ------------------------------------------------------------ close

    async def close(self) -> None:
        """Stop every speaker child (shutdown op, then kill after a timeout). Their sessions end with them."""
        speakers = list(self._speakers.values())
        self._speakers.clear()
        await asyncio.gather(*(self._stop(sp) for sp in speakers), return_exceptions=True)

