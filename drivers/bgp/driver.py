"""The bgp driver: BGP sessions from a site's local endpoints to their peers, spoken by os-ken speakers.

os-ken (and the eventlet it brings) never runs in the agent's asyncio/grpc.aio
process, and a speaker's life is not the agent's: each local endpoint that has
BGP peerings gets one speaker, ``python -m isthmus.drivers.bgp.speaker``,
started as a process of its own session (``isthmus.drivers.bgp.client.launch``)
that serves its protocol on ``STATE_DIR/speaker-SITE-ENDPOINT.sock``. An agent
that stops (SIGTERM), crashes or is replaced leaves every speaker, session and
route as it is; the next agent connects to each socket it finds, reads what the
speaker holds (``hello``: AS, router id, address, neighbors, prefixes) and
changes only what differs from the desired state, so a session whose
parameters did not change is never reset. A speaker's pid is in
``STATE_DIR/speaker-SITE-ENDPOINT.pid``, its log in ``...log`` (its lines are
also re-logged by the connected agent, prefixed with the endpoint and pid).

A speaker stops only on purpose: when its endpoint has no BGP peering left, when
its AS, router id or address changes (then it is replaced), or by
``python -m isthmus.drivers.bgp stop STATE_DIR``. Each of its sessions then gets
a NOTIFICATION Cease. A speaker that dies (kill -9, a crash) is started again
on the next apply (backoff 0.5 s doubling up to 30 s while it keeps dying)
with every desired neighbor and prefix.

What a peering asks for, and how it is realized:

- speaker: AS and router id of the local endpoint (an IPv6 endpoint needs an
  explicit router id), listening on the endpoint's address, port 179 (option
  ``listen_port``). One speaker per local endpoint, so endpoints with different
  AS numbers or router ids coexist. Two local endpoints with the same address
  cannot both listen on it: the peerings of the later one (by name) show ERROR.
- neighbor: ``remote.address`` / ``remote.asn`` (2- and 4-byte ASNs, IPv4 and
  IPv6), dialled from the local endpoint's address; address families from
  ``bgp.address_families`` (the IPv4/IPv6 unicast and EVPN capabilities); TCP
  MD5 password from ``bgp.password_ref`` (``file:/PATH`` or ``env:NAME``, read
  on the agent host at every apply and never logged; an unreadable secret is an
  ERROR of that peering naming the path or variable, and its neighbor is
  removed). Two peerings of one endpoint with the same neighbor address: the
  later one (by name) shows ERROR.
- route reflection: a peering whose ``bgp.reflector`` is the local site makes the
  neighbor a route-reflector client of the speaker (RFC 4456; os-ken's
  ``is_route_reflector_client``), so the routes of one client reach the others.
- hold time: ``bgp.hold_time`` as given, under the model's one rule
  (``HOLD_TIME_RULE``: 0, no keepalives, or 3..65535 s); the speaker adapts
  os-ken, which on its own refuses below 10 s and cannot do 0.
- prefixes: the local endpoint's property ``bgp.advertise`` (comma-separated),
  added and withdrawn one by one as the property changes.
- admin state DOWN: the neighbor is removed with a Cease (Administrative
  Shutdown); a deleted connection's neighbor gets Cease (Peer De-configured).
  The peering shows DOWN; the speaker stays while its endpoint has peerings,
  refusing the peer's connection attempts quietly.

An unchanged neighbor is never removed and re-added, so repeated applies (and
agent restarts) do not reset its session; any change of its parameters (AS,
hold time, password, families, route-reflector client) re-creates it, because os-ken can change none of
them in place.

Observed state: ESTABLISHED only while os-ken's FSM is Established, SINCE being
when the session came up (from the speaker, so an agent restart keeps it);
ERROR after an OPEN message error NOTIFICATION sent or received (bad peer AS,
bad BGP identifier, unacceptable hold time, ...), which retrying cannot fix;
otherwise CONNECTING, with why the session last went down (the NOTIFICATION,
hold timer expiry, or the lost connection) and SINCE when it did.
``received_prefixes`` are the prefixes in the neighbor's adj-RIB-in. The
speaker tells the driver of every session up/down and received-route change
as it happens, and the driver wakes the agent's reconcile loop at once. While
a speaker is being restarted its peerings show CONNECTING; after three quick
deaths in a row, ERROR with its last complaint.

Options (``--driver-opt bgp.KEY=VALUE``):
  listen_port        TCP port the speakers listen on (default 179); peers are still dialled on 179
  speaker_log_level  log level of the speakers: debug, info, warning, error (default info)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from isthmus.core.model import (
    ADVERTISE_PROPERTY,
    DEFAULT_GRACEFUL_RESTART,
    HOLD_TIME_RULE,
    INSTALL_PROPERTY,
    AdminState,
    ConnectionType,
    DesiredPeering,
    Endpoint,
    ObservedPeering,
    PeeringState,
    default_address_families,
    valid_hold_time,
)
from isthmus.drivers.base import Driver, DriverContext, DriverError
from isthmus.drivers.bgp.client import (
    SpeakerClient,
    SpeakerError,
    SpeakerGone,
    SpeakerPaths,
    SpeakerRefused,
    forget,
    launch,
)
from isthmus.drivers.bgp.protocol import (
    PROTOCOL_VERSION,
    CeaseReason,
    Event,
    HelloResult,
    KernelArgs,
    NeighborArgs,
    NeighborDelArgs,
    NeighborSettings,
    PolicyArgs,
    PrefixArgs,
    StateResult,
)
from isthmus.drivers.secrets import SecretError, read_secret

log = logging.getLogger(__name__)

BGP_PORT = 179
# Learned routes: a table and a route protocol number of isthmus's own (179, the BGP port, is not one of the
# kernel's RTPROT_* numbers nor of iproute2's rt_protos), and the policy rules that make the host use the table.
DEFAULT_ROUTE_TABLE = 179
DEFAULT_ROUTE_PROTOCOL = 179
DEFAULT_RULE_PRIORITY = 1790
MAIN_TABLE = 254
RESTART_DELAY = 0.5  # first restart; doubles while the speaker keeps dying
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 30.0  # a speaker that lived this long starts the backoff afresh
FAILURES_BEFORE_ERROR = 3
LOG_LEVELS = ("debug", "info", "warning", "error")
OPEN_MESSAGE_ERROR = 2  # BGP error code (RFC 4271 6.2): a configuration mismatch
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}


# ---------------------------------------------------------------- what a peering asks for


def _int_option(opts: dict[str, str], name: str, default: int, low: int, high: int,
                names: Mapping[str, int] | None = None, bad: set[int] | None = None) -> int:
    """Pop option ``name`` from ``opts``: a whole number in low..high (not in ``bad``) or one of ``names``.

    Raises DriverError(terminal=True) naming it.
    """
    text = opts.pop(name, str(default))
    value = (names or {}).get(text)
    if value is None:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
    if not low <= value <= high or value in (bad or set()):
        raise DriverError(f"bgp.{name}: {text!r} is not a number in {low}..{high}"
                          + (f" other than {', '.join(map(str, sorted(bad)))}" if bad else "")
                          + (f" or {', '.join(names)}" if names else ""), terminal=True)
    return value


def speaker_hold_time(hold_time: int) -> int:
    """The hold time to offer for the desired ``hold_time``: itself; raises ValueError outside HOLD_TIME_RULE."""
    if not valid_hold_time(hold_time):
        raise ValueError(f"hold time {hold_time} is not {HOLD_TIME_RULE}")
    return hold_time


@dataclass(frozen=True)
class SpeakerConfig:
    """What one speaker is started with: it changes only by replacing the speaker."""

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


def password_digest(salt: str, password: str | None) -> str:
    """How a speaker keyed by ``salt`` reports ``password`` (HMAC-SHA256); "" without one."""
    if not password:
        return ""
    return hmac.new(bytes.fromhex(salt), password.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class NeighborConfig:
    """One neighbor as configured in a speaker. The password is kept only as the speaker's digest of it."""

    address: str
    remote_as: int
    hold_time: int
    password_digest: str
    ipv4: bool
    ipv6: bool
    evpn: bool
    graceful_restart: int = 0  # seconds offered (RFC 4724), 0: not offered
    rr_client: bool = False  # the peer is our route-reflector client (the peering's bgp.reflector is our site)

    @classmethod
    def of(cls, peering: DesiredPeering, salt: str = "") -> tuple[NeighborConfig, str | None]:
        """The neighbor of ``peering`` and its password; the digest is keyed by ``salt`` (a speaker's; see
        ``keyed``). Raises SecretError or ValueError (hold time)."""
        bgp = peering.bgp
        hold = speaker_hold_time(bgp.hold_time if bgp is not None else 90)
        password = read_secret(bgp.password_ref) if bgp is not None and bgp.password_ref else None
        families = (bgp.address_families if bgp is not None else ()) or default_address_families(
            peering.remote.address)
        cfg = cls(str(ipaddress.ip_address(peering.remote.address)), peering.remote.asn, hold,
                  password_digest(salt, password),
                  "ipv4-unicast" in families, "ipv6-unicast" in families, "l2vpn-evpn" in families,
                  bgp.graceful_restart if bgp is not None else DEFAULT_GRACEFUL_RESTART,
                  bgp is not None and bgp.reflector == peering.local.site)
        return cfg, password

    @classmethod
    def held(cls, s: NeighborSettings) -> NeighborConfig:
        """The neighbor as a speaker reports holding it."""
        return cls(s["address"], s["remote_as"], s["hold_time"], s["password_digest"], s["ipv4"], s["ipv6"],
                   s["evpn"], int(s.get("graceful_restart", 0)), bool(s.get("rr_client", False)))

    def keyed(self, salt: str, password: str | None) -> NeighborConfig:
        """This neighbor with its password digest as the speaker keyed by ``salt`` reports it."""
        return dataclasses.replace(self, password_digest=password_digest(salt, password))

    def args(self, password: str | None, policy: Policy) -> NeighborArgs:
        return NeighborArgs(address=self.address, remote_as=self.remote_as, hold_time=self.hold_time,
                            password=password, ipv4=self.ipv4, ipv6=self.ipv6, evpn=self.evpn,
                            graceful_restart=self.graceful_restart, rr_client=self.rr_client,
                            import_prefixes=list(policy[0]), max_prefixes=policy[1])


Policy = tuple[tuple[str, ...], int]  # a neighbor's import rules (canonical texts) and max prefixes; in place


def policy_of(peering: DesiredPeering) -> Policy:
    bgp = peering.bgp
    return (bgp.import_prefixes, bgp.max_prefixes) if bgp is not None else ((), 0)


def held_policy(s: NeighborSettings) -> Policy:
    """A neighbor's policy as a speaker reports holding it."""
    return tuple(s.get("import_prefixes", [])), int(s.get("max_prefixes", 0))


def installs(local: Endpoint) -> bool:
    """Whether the speaker of ``local`` installs what it learns (its ``bgp.install`` property, default true)."""
    return local.properties.get(INSTALL_PROPERTY, "true") != "false"


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


# ---------------------------------------------------------------- the driver


@dataclass
class _Speaker:
    """The driver's view of one local endpoint's speaker: the connection to it and what it holds."""

    endpoint: str  # site/name
    config: SpeakerConfig
    paths: SpeakerPaths
    client: SpeakerClient | None = None
    salt: str = ""
    neighbors: dict[str, NeighborConfig] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    prefixes: set[str] = field(default_factory=set)
    kernel: KernelArgs | None = None
    refused: dict[str, str] = field(default_factory=dict)  # neighbor address or prefix -> os-ken's refusal
    failures: int = 0  # deaths in a row of speakers that lived less than STABLE_AFTER
    retry_at: float = 0.0  # monotonic time before which no new speaker is started
    started: float = 0.0  # monotonic time this driver started or adopted it
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
    neighbors: dict[str, tuple[NeighborConfig, str | None]] = field(default_factory=dict)  # address -> (cfg, pw)
    policies: dict[str, Policy] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # neighbor addresses held admin-down
    prefixes: set[str] = field(default_factory=set)
    install: bool = True


class BgpDriver(Driver):
    """Realizes BGP peerings with one os-ken speaker per local endpoint, each a process of its own.

    ``context.options``: ``listen_port`` (default 179), ``speaker_log_level``
    (default info). See the module docstring for what is realized and how.
    """

    name = "bgp"
    handles = frozenset({ConnectionType.BGP})

    def __init__(self, context: DriverContext) -> None:
        """``context``: the site, the state directory (sockets, pid files, logs), the options.

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
        self.route_table = _int_option(opts, "route_table", DEFAULT_ROUTE_TABLE, 1, 2**32 - 1,
                                       {"main": MAIN_TABLE}, bad={253, 255})
        self.route_protocol = _int_option(opts, "route_protocol", DEFAULT_ROUTE_PROTOCOL, 5, 255)
        self.rule_priority = _int_option(opts, "route_rule_priority", DEFAULT_RULE_PRIORITY, 1, 32764)
        if opts:
            raise DriverError(f"bgp: unknown option(s) {', '.join(sorted(opts))}; known: listen_port, "
                              "speaker_log_level, route_table, route_protocol, route_rule_priority", terminal=True)
        self._speakers: dict[str, _Speaker] = {}
        self._plans: dict[str, _Plan] = {}
        self._since: dict[str, tuple[PeeringState, int]] = {}
        self._adopted = False
        self._watchers: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ apply

    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        """Make the speakers match ``peerings`` (BGP peerings keyed by connection name).

        The first call adopts the speakers a previous agent left running. Starts,
        replaces (changed AS, router id or address; a dead speaker after its
        backoff) and stops speakers, adds and removes neighbors and prefixes.
        Problems of one peering or one endpoint show in ``observe``; raises
        DriverError only if the state directory cannot be created.
        """
        try:
            self.context.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise DriverError(f"cannot create the bgp state directory {self.context.state_dir}: {exc}") from None
        if not self._adopted:
            await self._adopt()
            self._adopted = True
        plans, wanted = self._plan(peerings)
        self._plans = plans
        for key in [k for k in self._speakers if k not in wanted]:
            sp = self._speakers.pop(key)
            log.info("site %s: stopping the BGP speaker of %s (no peerings left)", self.context.site, key)
            await self._stop(sp, "deconfigured")
        await asyncio.gather(*(self._sync(key, want) for key, want in sorted(wanted.items())))
        for name in [n for n in self._since if n not in plans]:
            del self._since[name]

    async def _adopt(self) -> None:
        """Connect to every speaker that answers in the state directory (left by a previous agent)."""
        for sock in sorted(self.context.state_dir.glob("speaker-*.sock")):
            try:
                client = await SpeakerClient.connect("?", SpeakerPaths(sock, sock.with_suffix(".pid"),
                                                                       sock.with_suffix(".log")), self._on_event)
            except SpeakerGone as exc:
                log.info("site %s: %s; removing the stale socket", self.context.site, exc)
                sock.unlink(missing_ok=True)
                continue
            hello = client.hello
            assert hello is not None
            key = hello["endpoint"]
            paths = SpeakerPaths.of(self.context.state_dir, key)
            client.label, client.paths = key, paths
            if hello.get("protocol") != PROTOCOL_VERSION or key in self._speakers or paths.socket != sock:
                log.warning("site %s: the BGP speaker of %s (pid %d) speaks protocol %s, not %d (or is a "
                            "duplicate); replacing it, which resets its sessions", self.context.site, key,
                            client.pid, hello.get("protocol"), PROTOCOL_VERSION)
                await client.stop()
                continue
            config = SpeakerConfig(hello["asn"], hello["router_id"], hello["address"], hello["port"])
            sp = _Speaker(key, config, paths, client, hello["salt"], started=time.monotonic())
            self._held(sp, hello)
            self._speakers[key] = sp
            self._watch(sp, client)
            log.info("site %s: adopted the BGP speaker of %s (pid %d, AS %d, %d neighbors, %d prefixes, running "
                     "for %.0f s)", self.context.site, key, client.pid, config.asn, len(sp.neighbors),
                     len(sp.prefixes), (_now_ms() - hello["started_ms"]) / 1000)

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
            want.install = want.install and installs(local)
            try:
                address = str(ipaddress.ip_address(peering.remote.address))
            except ValueError:
                address = peering.remote.address
            if peering.admin_state == AdminState.DOWN:
                want.down.add(address)
                plans[name] = _Plan(PeeringState.DOWN)
                continue
            other = users.setdefault((key, address), name)
            if other != name:
                plans[name] = _Plan(PeeringState.ERROR, f"neighbor {address} of {key} is already used by "
                                    f"connection {other}; one session per neighbor address")
                continue
            try:
                want.neighbors[address] = NeighborConfig.of(peering)
                want.policies[address] = policy_of(peering)
            except (SecretError, ValueError) as exc:
                plans[name] = _Plan(PeeringState.ERROR, str(exc))
                continue
            plans[name] = _Plan(endpoint=key, address=address)
        # A speaker runs while its endpoint has any peering (DOWN ones too: it then refuses their peers quietly).
        return plans, wanted

    async def _sync(self, key: str, want: _Wanted) -> None:
        sp = self._speakers.get(key)
        if sp is not None and sp.config != want.config:
            changes = ", ".join(f"{what} {old} -> {new}" for what, old, new in (
                ("AS", sp.config.asn, want.config.asn), ("router id", sp.config.router_id, want.config.router_id),
                ("address", sp.config.address, want.config.address), ("port", sp.config.port, want.config.port),
            ) if old != new)
            log.info("site %s: replacing the BGP speaker of %s: %s", self.context.site, key, changes)
            await self._stop(sp, "deconfigured")
            sp = None
        if sp is None:
            sp = self._speakers[key] = _Speaker(key, want.config, SpeakerPaths.of(self.context.state_dir, key))
        if sp.client is not None and not sp.client.running:
            self._reap(sp)
        if sp.client is None:
            if time.monotonic() < sp.retry_at:
                return
            try:
                await self._start(sp)
            except SpeakerGone as exc:
                self._failed(sp, str(exc), lived=0.0)
                return
        client = sp.client
        assert client is not None
        wanted = {a: (cfg.keyed(sp.salt, pw), pw) for a, (cfg, pw) in want.neighbors.items()}
        try:
            for address in [a for a, cfg in sp.neighbors.items() if a not in wanted or wanted[a][0] != cfg]:
                reason: CeaseReason = "shutdown" if address in want.down else "deconfigured"
                with contextlib.suppress(SpeakerRefused):  # already gone is fine
                    await client.request("neighbor_del", NeighborDelArgs(address=address, reason=reason))
                del sp.neighbors[address]
                log.info("site %s: %s: removed BGP neighbor %s (%s)", self.context.site, key, address,
                         "admin down" if reason == "shutdown" else "no longer desired as it was")
            for address, (cfg, password) in sorted(wanted.items()):
                if address in sp.neighbors:
                    continue
                try:
                    await client.request("neighbor_add", cfg.args(password, want.policies[address]))
                except SpeakerRefused as exc:
                    if sp.refused.get(address) != str(exc):
                        log.warning("site %s: %s: os-ken refused neighbor %s: %s", self.context.site, key,
                                    address, exc)
                    sp.refused[address] = str(exc)
                    continue
                sp.refused.pop(address, None)
                sp.neighbors[address] = cfg
                sp.policies[address] = want.policies[address]
                log.info("site %s: %s: added BGP neighbor %s (AS %d, hold time %d%s)", self.context.site, key,
                         address, cfg.remote_as, cfg.hold_time, ", MD5" if password else "")
            for address, policy in sorted(want.policies.items()):
                if address in sp.neighbors and sp.policies.get(address) != policy:
                    await client.request("neighbor_policy", PolicyArgs(address=address, import_prefixes=list(policy[0]),
                                                                       max_prefixes=policy[1]))
                    sp.policies[address] = policy
                    log.info("site %s: %s: import policy of %s: %s, max prefixes %s", self.context.site, key,
                             address, "; ".join(policy[0]) or "all but the default route", policy[1] or "none")
            kernel = KernelArgs(install=want.install, table=self.route_table, protocol=self.route_protocol,
                                rule_priority=self.rule_priority)
            if sp.kernel != kernel:
                await client.request("kernel", kernel)
                sp.kernel = kernel
            for prefix in sorted(sp.prefixes - want.prefixes):
                with contextlib.suppress(SpeakerRefused):
                    await client.request("prefix_del", PrefixArgs(prefix=prefix))
                sp.prefixes.discard(prefix)
                sp.refused.pop(prefix, None)
                log.info("site %s: %s: withdrew %s", self.context.site, key, prefix)
            for prefix in sorted(want.prefixes - sp.prefixes):
                try:
                    await client.request("prefix_add", PrefixArgs(prefix=prefix))
                except SpeakerRefused as exc:
                    sp.refused[prefix] = str(exc)
                    continue
                sp.refused.pop(prefix, None)
                sp.prefixes.add(prefix)
                log.info("site %s: %s: advertising %s", self.context.site, key, prefix)
            for stale in [k for k in sp.refused if k not in wanted and k not in want.prefixes]:
                del sp.refused[stale]
        except SpeakerGone:
            self._reap(sp)

    async def _start(self, sp: _Speaker) -> None:
        """Connect to ``sp``'s speaker if one answers on its socket, else launch one. Raises SpeakerGone."""
        try:
            client = await SpeakerClient.connect(sp.endpoint, sp.paths, self._on_event)
        except SpeakerGone:
            c = sp.config
            await launch(sp.endpoint, sp.paths, c.asn, c.router_id, c.address, c.port, self.log_level)
            client = await SpeakerClient.connect(sp.endpoint, sp.paths, self._on_event)
            how = "started"
        else:
            how = "found running"
        hello = client.hello
        assert hello is not None
        held = SpeakerConfig(hello["asn"], hello["router_id"], hello["address"], hello["port"])
        if held != sp.config or hello.get("protocol") != PROTOCOL_VERSION:
            await client.stop()
            raise SpeakerGone(f"the BGP speaker found on {sp.paths.socket} served {held}; replaced")
        sp.client, sp.salt, sp.started = client, hello["salt"], time.monotonic()
        self._held(sp, hello)
        sp.refused.clear()
        self._watch(sp, client)
        log.info("site %s: BGP speaker of %s %s (pid %d, AS %d, router id %s, listening on %s port %d)",
                 self.context.site, sp.endpoint, how, client.pid, sp.config.asn, sp.config.router_id,
                 sp.config.address, sp.config.port)

    @staticmethod
    def _held(sp: _Speaker, hello: HelloResult) -> None:
        sp.neighbors = {s["address"]: NeighborConfig.held(s) for s in hello["neighbors"]}
        sp.policies = {s["address"]: held_policy(s) for s in hello["neighbors"]}
        sp.prefixes = set(hello["prefixes"])
        sp.kernel = hello.get("kernel")

    def _watch(self, sp: _Speaker, client: SpeakerClient) -> None:
        async def watch() -> None:
            await client.closed.wait()
            if not client.stopping:
                log.warning("site %s: %s", self.context.site,
                            client.exit_text().replace("the BGP speaker", f"the BGP speaker of {sp.endpoint}", 1))
                self.wake()

        task = asyncio.create_task(watch(), name=f"bgp-watch-{sp.endpoint}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    def _on_event(self, client: SpeakerClient, ev: Event) -> None:
        kind = ev.get("event")
        if kind == "log":
            log.log(_LEVELS.get(ev.get("level", "INFO"), logging.INFO), "bgp speaker %s[%d]: %s", client.label,
                    client.pid, ev.get("message", ""))
            return
        if kind in ("peer_up", "peer_down", "routes", "notification"):
            self.wake()  # level-based: the agent's next pass reads the speaker's state

    def _reap(self, sp: _Speaker) -> None:
        """Record the death of ``sp``'s speaker and when to start the next one."""
        client = sp.client
        assert client is not None
        sp.client = None
        forget(sp.paths, client.pid)
        self._failed(sp, client.exit_text(), lived=time.monotonic() - sp.started)

    def _failed(self, sp: _Speaker, text: str, lived: float) -> None:
        sp.failures = 1 if lived >= STABLE_AFTER else sp.failures + 1
        delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (sp.failures - 1))
        sp.retry_at = time.monotonic() + delay
        sp.last_exit = text
        log.warning("site %s: BGP speaker of %s is down (%s); starting a new one in %.1f s",
                    self.context.site, sp.endpoint, text, delay)

    async def _stop(self, sp: _Speaker, reason: CeaseReason) -> None:
        """Stop ``sp``'s speaker on purpose: each neighbor first gets a Cease with ``reason``."""
        client = sp.client
        sp.client = None
        if client is None:
            return
        for address in list(sp.neighbors):
            with contextlib.suppress(SpeakerError):
                await client.request("neighbor_del", NeighborDelArgs(address=address, reason=reason))
        await client.stop()

    # ------------------------------------------------------------ observe

    async def observe(self) -> dict[str, ObservedPeering]:
        """The state of every BGP peering of the last apply, keyed by connection name.

        Reads each speaker's neighbors once. Never raises for a dead or
        unreadable speaker: its peerings show CONNECTING (ERROR after repeated
        deaths) with the reason.
        """
        states: dict[str, StateResult | str] = {}

        async def read(key: str, sp: _Speaker) -> None:
            client = sp.client
            if client is None or not client.running:
                if client is not None:
                    self._reap(sp)
                states[key] = sp.last_exit or "the BGP speaker is not running"
                return
            try:
                states[key] = await client.request("state")
            except SpeakerRefused as exc:
                states[key] = f"cannot read the BGP speaker's state: {exc}"
            except SpeakerGone:
                self._reap(sp)
                states[key] = sp.last_exit

        await asyncio.gather(*(read(k, sp) for k, sp in self._speakers.items()))
        out = {}
        for name, plan in self._plans.items():
            state, error, received, since = self._state(plan, states)
            prev = self._since.get(name)
            if since:
                self._since[name] = (state, since)
            elif prev is None or prev[0] != state:
                self._since[name] = (state, _now_ms())
            out[name] = ObservedPeering(name, state, error, self._since[name][1], self.name, received)
        return out

    def _state(self, plan: _Plan, states: Mapping[str, StateResult | str]
               ) -> tuple[PeeringState, str, tuple[str, ...], int]:
        """(state, error, received prefixes, since in ms or 0 when the speaker does not know)."""
        if plan.state is not None:
            return plan.state, plan.error, (), 0
        sp = self._speakers.get(plan.endpoint)
        got = states.get(plan.endpoint)
        if sp is None or got is None:
            return PeeringState.CONNECTING, "the BGP speaker is starting", (), 0
        if isinstance(got, str):
            if sp.client is None and sp.failures >= FAILURES_BEFORE_ERROR:
                return PeeringState.ERROR, f"{got} ({sp.failures} times in a row; retrying)", (), 0
            return PeeringState.CONNECTING, got, (), 0
        if plan.address in sp.refused:
            return PeeringState.ERROR, f"os-ken refused the neighbor: {sp.refused[plan.address]}", (), 0
        refused = "; ".join(f"cannot advertise {k}: {v}" for k, v in sorted(sp.refused.items()) if "/" in k)
        status = got.get("neighbors", {}).get(plan.address)
        if status is None:
            return PeeringState.CONNECTING, refused or "the neighbor is not configured yet", (), 0
        since = int(status.get("since_ms", 0))
        received = tuple(sorted(set(status.get("received", []))))
        over = status.get("over_max", "")
        if over:
            return PeeringState.ERROR, over, (), 0
        if status.get("state") == "Established":
            notes = [refused] if refused else []
            if status.get("refused"):
                notes.append(f"{status['refused']} routes refused by the import policy")
            if got.get("kernel_error"):
                notes.append(f"cannot install the learned routes: {got['kernel_error']}")
            if got.get("foreign"):
                notes.append(f"not installed, a route isthmus did not make is there: {', '.join(got['foreign'])}")
            return PeeringState.ESTABLISHED, "; ".join(notes), received, since
        last = status.get("last_error", "")
        neighbor = sp.neighbors.get(plan.address)
        if "bad peer AS" in last and neighbor is not None:
            # Say which AS is wrong, in terms of the endpoints the operator configured.
            last += (f" (the peer did not announce AS {neighbor.remote_as}, the remote endpoint's AS)"
                     if "sent" in last else f" (the peer does not expect our AS {sp.config.asn})")
        down = status.get("down_reason", "")
        if down:
            last = f"session went down: {down}" + (f"; {last}" if last and last not in down else "")
        error = "; ".join(e for e in (last, refused) if e)
        if status.get("error_code") == OPEN_MESSAGE_ERROR:
            return PeeringState.ERROR, error, (), 0
        return PeeringState.CONNECTING, error, (), since

    # ------------------------------------------------------------ close

    async def close(self) -> None:
        """Hang up on every speaker. They, their sessions and their routes go on; the next agent adopts them."""
        clients = [sp.client for sp in self._speakers.values() if sp.client is not None]
        self._speakers.clear()
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        for task in list(self._watchers):
            task.cancel()
