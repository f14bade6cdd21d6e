"""The protocol between the bgp driver and its speaker child (``isthmus.drivers.bgp.speaker``): the message types.

JSON lines. The driver writes Requests on the child's stdin; the child writes
one Response per Request (same id) and unsolicited Events on its stdout. The
speaker module's docstring describes each op.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

Op = Literal["neighbor_add", "neighbor_del", "prefix_add", "prefix_del", "state", "shutdown"]


class Request(TypedDict):
    id: int
    op: Op
    args: dict[str, Any]  # NeighborArgs, AddressArgs, PrefixArgs, or {} for state and shutdown


class Response(TypedDict):
    id: int
    ok: bool
    result: NotRequired[Any]  # StateResult for state, else null
    error: NotRequired[str]  # when not ok: what os-ken refused, in its words


class NeighborArgs(TypedDict):
    """Args of ``neighbor_add``. ``password`` travels only here; the child never logs or echoes it."""

    address: str
    remote_as: int
    hold_time: int  # >= 10 (os-ken's minimum)
    password: str | None
    ipv4: bool
    ipv6: bool
    evpn: bool


class AddressArgs(TypedDict):
    """Args of ``neighbor_del``."""

    address: str


class PrefixArgs(TypedDict):
    """Args of ``prefix_add`` and ``prefix_del``."""

    prefix: str


class NeighborStatus(TypedDict):
    state: str  # os-ken's FSM state: Idle, Connect, Active, OpenSent, OpenConfirm, Established
    uptime: float  # seconds since Established, -1 when not
    last_error: str  # "NOTIFICATION sent|received: TEXT" since the neighbor was added or last came up, else ""
    error_code: int  # BGP error code of last_error, 0 when none
    received: list[str]  # prefixes in the neighbor's adj-RIB-in


class StateResult(TypedDict):
    """Result of ``state``: every neighbor by address."""

    neighbors: dict[str, NeighborStatus]


class Event(TypedDict):
    """Unsolicited: ``ready`` (once, when listening), ``peer_up``, ``peer_down``, ``notification``."""

    event: Literal["ready", "peer_up", "peer_down", "notification"]
    pid: NotRequired[int]  # ready
    address: NotRequired[str]  # peer_up, peer_down, notification
    remote_as: NotRequired[int]  # peer_up, peer_down
    direction: NotRequired[Literal["sent", "received"]]  # notification
    code: NotRequired[int]  # notification
    subcode: NotRequired[int]  # notification
    reason: NotRequired[str]  # notification
