"""Status answers that fit: the peering rows of a site's status, each bounded, paged by their size.

A site's status has a row per peering, and each row holds the desired peering with both endpoints and
their properties: a site with many connections, or endpoints with large properties, would make an
answer over gRPC's 4 MiB limit, and then nobody could read any status. So:

- a row over ``ROW_BYTES`` is trimmed: the endpoint properties are left out first (``trimmed`` says
  so; GetEndpoint has them), then long texts and received prefixes are cut, and if even that is too
  large, only the names and states stay;
- texts the agent reports for the whole site (its journal, its version and host) are cut;
- an answer holds rows until ``PAGE_BYTES`` (core/wire/pieces.py) and names the next page in
  ``SiteStatus.next_page_token``; its ``overrides`` are those of its rows.

So a status answer stays under PAGE_BYTES + two rows + the site's cut header, whatever was written.
"""

from __future__ import annotations

from collections.abc import Iterator

from isthmus.coordinator.events import MAX_MESSAGE
from isthmus.core.wire import pieces
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import types_pb2 as pb

ROW_BYTES = 256 * 1024  # a peering row larger than this is trimmed
TEXT_CHARS = 1024  # a text field of a trimmed row or of the site's header: at most this many characters
PREFIX_BYTES = 16 * 1024  # received prefixes a trimmed row keeps


def cut(text: str, chars: int = TEXT_CHARS) -> str:
    return text if len(text) <= chars else text[:chars - 3] + "..."


def _endpoints(row: api.PeeringStatus) -> Iterator[pb.Endpoint]:
    if row.HasField("desired"):
        yield row.desired.local
        yield row.desired.remote
    if row.HasField("override") and row.override.HasField("peering"):
        yield row.override.peering.local
        yield row.override.peering.remote


def trim_row(row: api.PeeringStatus) -> api.PeeringStatus:
    """``row`` itself if it is at most ROW_BYTES; else trimmed (in place) until it is."""
    if row.ByteSize() <= ROW_BYTES:
        return row
    row.trimmed = True
    for ep in _endpoints(row):
        ep.ClearField("properties")
    if row.ByteSize() <= ROW_BYTES:
        return row
    if row.HasField("observed"):
        o = row.observed
        o.error = cut(o.error)
        kept, used = [], 0
        for prefix in o.received_prefixes:
            used += len(prefix) + 2
            if used > PREFIX_BYTES:
                break
            kept.append(prefix)
        del o.received_prefixes[:]
        o.received_prefixes.extend(kept)
    if row.HasField("override"):
        row.override.reason = cut(row.override.reason)
    if row.ByteSize() <= ROW_BYTES:
        return row
    return _bare(row)


def _bare(row: api.PeeringStatus) -> api.PeeringStatus:
    """Only which peering it is and its state: a row that stays far too large after trimming."""
    out = api.PeeringStatus(trimmed=True)
    if row.HasField("desired"):
        d = row.desired
        out.desired.CopyFrom(pb.DesiredPeering(connection=cut(d.connection), type=d.type, admin_state=d.admin_state,
                                               local=_bare_endpoint(d.local), remote=_bare_endpoint(d.remote)))
    if row.HasField("observed"):
        o = row.observed
        out.observed.CopyFrom(pb.ObservedPeering(connection=cut(o.connection), state=o.state, error=cut(o.error),
                                                 since_unix_ms=o.since_unix_ms, driver=cut(o.driver)))
    if row.HasField("override"):
        v = row.override
        out.override.CopyFrom(pb.Override(connection=cut(v.connection), kind=v.kind, reason=cut(v.reason),
                                          created_unix_ms=v.created_unix_ms, expires_unix_ms=v.expires_unix_ms))
    return out


def _bare_endpoint(ep: pb.Endpoint) -> pb.Endpoint:
    return pb.Endpoint(site=cut(ep.site), name=cut(ep.name), address=cut(ep.address), asn=ep.asn, role=ep.role)


def cut_header(status: api.SiteStatus) -> None:
    """Cut what the agent reported for the whole site: session texts and journal entries (like the event
    history does, to MAX_MESSAGE characters a message)."""
    for name in ("coordinator", "agent_version", "agent_host", "driver"):
        setattr(status, name, cut(getattr(status, name)))
    for entry in status.journal:
        entry.message = cut(entry.message, MAX_MESSAGE)
        entry.connection = cut(entry.connection)
        entry.kind = cut(entry.kind, 64)
        entry.level = cut(entry.level, 64)


def row_cost(row: api.PeeringStatus) -> int:
    """What a row adds to an answer: itself, and its override again in the answer's ``overrides``."""
    size: int = row.ByteSize()
    return size + (pieces.element_bytes(row.override.ByteSize()) if row.HasField("override") else 0)


def add_rows(status: api.SiteStatus, rows: Iterator[tuple[str, api.PeeringStatus]], budget: int) -> None:
    """Add rows (name, row: in name order, trimmed) to ``status`` until ``budget`` bytes of answer (at least
    one row); if any are left, ``next_page_token`` names where they start."""
    taken, more = pieces.fit(rows, lambda r: row_cost(r[1]), budget - status.ByteSize())
    for _, row in taken:
        status.peerings.append(row)
        if row.HasField("override"):
            status.overrides.append(row.override)
    if more and taken:
        status.next_page_token = pieces.page_token(taken[-1][0])
