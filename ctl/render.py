"""isthmusctl's text output: tables, 'key: value' lines, ages and times, errors on one line, and the peering,
override and journal rows that the coordinator's ``status SITE`` and the agent's ``local`` commands share."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from isthmus.core import model as m
from isthmus.core.edge import ANSWERED_BY_KEY
from isthmus.core.wire import network as wire
from isthmus.v1 import admin_pb2, api_pb2, types_pb2


def format_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; an empty cell shows as '-' so every row has every column."""
    cells = [list(columns)] + [[str(c) or "-" for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def format_fields(pairs: Sequence[tuple[str, str]]) -> str:
    """'key: value' lines with the values aligned."""
    width = max((len(k) for k, _ in pairs), default=0) + 1
    return "\n".join(f"{k + ':':<{width}} {v}".rstrip() for k, v in pairs)


def format_age(age_seconds: float) -> str:
    """An age in its largest whole unit: '5s', '3m', '2h', '4d' (clock skew shows as '0s')."""
    s = max(0, int(age_seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def format_clock(unix_ms: int) -> str:
    """A Unix time in milliseconds as local 'YYYY-MM-DD HH:MM:SS'."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_ms / 1000))


def format_expiry(expires_ms: int, now: float) -> str:
    """When an override ends: 'in 5m', 'never' (0: until removed), or 'expired' (not yet purged)."""
    if not expires_ms:
        return "never"
    left = math.ceil(expires_ms / 1000 - now)  # rounded up: a TTL of 15m just set shows 'in 15m'
    return f"in {format_age(left)}" if left > 0 else "expired"


def one_line(text: str) -> str:
    return " ".join(text.split())


def pairs(values: dict[str, str]) -> str:
    """K=V,K=V sorted by key, as --label, --property and --management take them."""
    return ",".join(f"{k}={v}" for k, v in sorted(values.items()))


def message_json(msg: Message) -> dict[str, Any]:
    data: dict[str, Any] = MessageToDict(msg, preserving_proto_field_name=True)
    return data


def answered_by_server(exc: grpc.RpcError) -> bool:
    """The error is a server's answer (marked by isthmus's gRPC edge), not gRPC failing to reach one."""
    trailing = getattr(exc, "trailing_metadata", None)
    try:
        metadata = trailing() if callable(trailing) else None
    except Exception:  # noqa: BLE001 (a call that never reached a server may have none)
        metadata = None
    return any(key == ANSWERED_BY_KEY for key, _ in metadata or ())


def describe_rpc_error(exc: grpc.RpcError, unavailable_hint: str = "") -> str:
    """'<CODE>: <details>' on one line, with a hint where the code alone does not say what to do.

    The hint about reaching the server is left out when a server answered UNAVAILABLE itself (etcd, say)."""
    code = exc.code()
    text = f"{code.name}: {' '.join((exc.details() or '').split())}"
    if code == grpc.StatusCode.UNAVAILABLE and unavailable_hint and not answered_by_server(exc):
        text += f" ({unavailable_hint})"
    elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
        text += " (no answer in time; see --timeout)"
    return text


# ---------------------------------------------------------------- peerings, overrides, journals


PEERING_COLUMNS = ("CONNECTION", "TYPE", "LOCAL", "REMOTE", "ADMIN", "DESIRED", "LOCAL-OVERRIDE", "OBSERVED",
                   "RECEIVED", "ERROR", "SINCE")
OVERRIDE_COLUMNS = ("CONNECTION", "KIND", "DETAIL", "REASON", "CREATED", "EXPIRES")
JOURNAL_COLUMNS = ("TIME", "KIND", "CONNECTION", "MESSAGE")


def peering_name(p: api_pb2.PeeringStatus | admin_pb2.LocalPeering) -> str:
    return p.desired.connection or p.observed.connection or p.override.connection


def override_text(o: m.Override, now: float) -> str:
    """The LOCAL-OVERRIDE cell: 'disabled (until enabled)', 'added locally (expires in 5m)', ..."""
    what = "disabled" if o.kind == m.OverrideKind.DISABLE else "added locally"
    if not o.expires_ms:
        return f"{what} (until enabled)" if o.kind == m.OverrideKind.DISABLE else what
    left = format_expiry(o.expires_ms, now)
    return f"{what} (expired)" if left == "expired" else f"{what} (expires {left})"


def peering_row(p: api_pb2.PeeringStatus | admin_pb2.LocalPeering, now: float) -> list[str]:
    """One row of PEERING_COLUMNS; now is the current Unix time in seconds, for SINCE and expiries."""
    desired = wire.peering_from_pb(p.desired) if p.HasField("desired") else None
    observed = wire.observed_from_pb(p.observed) if p.HasField("observed") else None
    override = wire.override_from_pb(p.override) if p.HasField("override") else None
    added = override.peering if override is not None else None
    # The coordinator reports a peering added at a site without desired: show what the site realizes.
    shown = desired if desired is not None else added
    intent = ["", "", "", "", "no"]
    if shown is not None:
        local, remote = shown.local, shown.remote
        # A peering added at the site has no remote site: the agent names its ends with placeholders.
        where = "" if shown == added else f"{remote.site}/{remote.name} "
        intent = [shown.type.value, f"{local.address} AS {local.asn}", f"{where}{remote.address} AS {remote.asn}",
                  shown.admin_state.value, "yes" if desired is not None else "no"]
    local_override = ""
    if override is not None:
        local_override = override_text(override, now)
        if added is not None and desired is not None and desired != added:
            local_override += ", replacing the coordinator's"  # the coordinator desires the same name
    seen = ["", "", "", ""]
    if observed is not None:
        since = format_age(now - observed.since_ms / 1000) if observed.since_ms else ""
        # Only BGP receives prefixes: a VXLAN tunnel's count would always be a misleading 0.
        bgp = shown is None or shown.type == m.ConnectionType.BGP
        received = str(len(observed.received_prefixes)) if bgp else ""
        seen = [observed.state.value, received, one_line(observed.error), since]
    name = desired.connection if desired else observed.connection if observed else p.override.connection
    return [name, *intent, local_override, *seen]


def override_row(msg: types_pb2.Override, now: float) -> list[str]:
    """One row of OVERRIDE_COLUMNS; now is the current Unix time in seconds."""
    o = wire.override_from_pb(msg)
    detail = ""
    if o.peering is not None:
        p = o.peering
        via = f"VNI {p.vxlan.vni}" if p.vxlan is not None else f"AS {p.remote.asn}"
        detail = f"{p.type.value} to {p.remote.address} {via}"
    created = f"{format_age(now - o.created_ms / 1000)} ago" if o.created_ms else ""
    return [o.connection, o.kind.value, detail, one_line(o.reason), created, format_expiry(o.expires_ms, now)]


def journal_row(e: types_pb2.JournalEntry) -> list[str]:
    """One row of JOURNAL_COLUMNS: local time, kind, connection, and the message on one line."""
    return [format_clock(e.time_unix_ms), e.kind, e.connection, one_line(e.message)]


def format_journal(entries: Iterable[types_pb2.JournalEntry]) -> str:
    """TIME  KIND  CONNECTION  MESSAGE, one line per entry, oldest first."""
    return format_table(JOURNAL_COLUMNS, [journal_row(e) for e in entries])
