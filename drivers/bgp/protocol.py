"""The protocol between the bgp driver and its speaker (``isthmus.drivers.bgp.speaker``): the message types.

JSON lines on the speaker's unix socket (``STATE_DIR/bgp/speaker-SITE-ENDPOINT.sock``).
A client (the agent's driver, or ``python -m isthmus.drivers.bgp stop``) writes
Requests; the speaker writes one Response per Request (same id) on that
connection, and unsolicited Events to every connected client. The speaker
module's docstring describes each op.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

# Bumped when a message changes meaning: an agent that meets a speaker of another version replaces it
# (its sessions reset), so the upgrade notes say when a release does that.
PROTOCOL_VERSION = 2

Op = Literal["hello", "neighbor_add", "neighbor_del", "neighbor_policy", "prefix_add", "prefix_del", "kernel", "state",
             "shutdown"]
# The Cease a removed neighbor is sent: RFC 4486 subcode 3 (Peer De-configured) or 2 (Administrative Shutdown).
CeaseReason = Literal["deconfigured", "shutdown"]


class Request(TypedDict):
    id: int
    op: Op
    args: dict[str, Any]  # NeighborArgs, NeighborDelArgs, PrefixArgs, or {} for hello, state and shutdown


class Response(TypedDict):
    id: int
    ok: bool
    result: NotRequired[Any]  # HelloResult for hello, StateResult for state, else null
    error: NotRequired[str]  # when not ok: what os-ken refused, in its words


class NeighborArgs(TypedDict):
    """Args of ``neighbor_add``. ``password`` travels only here; the speaker never logs or echoes it."""

    address: str
    remote_as: int
    hold_time: int  # 0 (no keepalives) or 3..65535 (RFC 4271)
    password: str | None
    ipv4: bool
    ipv6: bool
    evpn: bool
    import_prefixes: list[str]  # the import policy's rules (core.model.ImportRule texts); []: all but the default
    max_prefixes: int  # 0: no limit
    graceful_restart: int  # restart time offered (RFC 4724), 0: the capability is not offered
    rr_client: bool  # the neighbor is a route-reflector client of this speaker (RFC 4456)


class NeighborSettings(TypedDict):
    """A neighbor as the speaker holds it (``hello``): NeighborArgs without the password, with its digest."""

    address: str
    remote_as: int
    hold_time: int
    password_digest: str  # HMAC-SHA256 of the password keyed by the hello's salt; "" without a password
    ipv4: bool
    ipv6: bool
    evpn: bool
    import_prefixes: list[str]
    max_prefixes: int
    graceful_restart: int
    rr_client: bool


class PolicyArgs(TypedDict):
    """Args of ``neighbor_policy``: a neighbor's import policy, changed in place (no session reset)."""

    address: str
    import_prefixes: list[str]
    max_prefixes: int


class KernelArgs(TypedDict):
    """Args of ``kernel`` (and in ``hello``): whether and where the best learned paths are installed."""

    install: bool
    table: int  # routing table (254: main; any other gets two policy rules at rule_priority and +1)
    protocol: int  # route protocol number that marks isthmus's routes
    rule_priority: int


class NeighborDelArgs(TypedDict):
    """Args of ``neighbor_del``: the Cease subcode the peer is sent if its session is up."""

    address: str
    reason: CeaseReason


class PrefixArgs(TypedDict):
    """Args of ``prefix_add`` and ``prefix_del``."""

    prefix: str


class HelloResult(TypedDict):
    """Result of ``hello``: who the speaker is and what it holds, so that a new agent adopts it as it is."""

    protocol: int  # PROTOCOL_VERSION of the speaker
    pid: int
    endpoint: str  # SITE/ENDPOINT it serves
    asn: int
    router_id: str
    address: str  # listen address
    port: int  # listen port
    started_ms: int  # wall clock, when it started
    salt: str  # hex key of its password digests
    neighbors: list[NeighborSettings]
    prefixes: list[str]  # advertised
    kernel: KernelArgs


class NeighborStatus(TypedDict):
    state: str  # os-ken's FSM state: Idle, Connect, Active, OpenSent, OpenConfirm, Established
    since_ms: int  # wall clock: when the session came up (Established) or last went down; 0 never up
    uptime: float  # seconds since Established, -1 when not
    last_error: str  # "NOTIFICATION sent|received: TEXT" since the neighbor was added or last came up, else ""
    error_code: int  # BGP error code of last_error, 0 when none
    down_reason: str  # why the session last went down ("" while up or never up)
    flaps: int  # times the session went down since the neighbor was added
    looped: int  # routes ignored because our AS was in their AS path (RFC 4271 9.1.2), since added
    received: list[str]  # prefixes in the neighbor's adj-RIB-in that its import policy accepts
    refused: int  # prefixes in its adj-RIB-in that the import policy refused
    over_max: str  # why the session was closed for exceeding max_prefixes ("" if it was not)


class StateResult(TypedDict):
    """Result of ``state``: every neighbor by address, and the speaker's counters."""

    neighbors: dict[str, NeighborStatus]
    refused_connections: int  # connections from addresses that are not (or no longer) neighbors
    installed: int  # learned routes in the kernel's table
    kernel_error: str  # why the last attempt to install them failed ("" when it did not)
    foreign: list[str]  # learned prefixes not installed because a route isthmus did not install is there


class Event(TypedDict):
    """Unsolicited, to every client: ``log``, ``peer_up``, ``peer_down``, ``notification``, ``routes``."""

    event: Literal["log", "peer_up", "peer_down", "notification", "routes"]
    level: NotRequired[str]  # log: DEBUG, INFO, WARNING, ERROR
    message: NotRequired[str]  # log
    address: NotRequired[str]  # peer_up, peer_down, notification, routes
    remote_as: NotRequired[int]  # peer_up, peer_down
    reason: NotRequired[str]  # peer_down: why; notification: its text
    direction: NotRequired[Literal["sent", "received"]]  # notification
    code: NotRequired[int]  # notification
    subcode: NotRequired[int]  # notification
