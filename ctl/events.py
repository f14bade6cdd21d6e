"""isthmusctl's ``events``: the sites' central event history (see docs/operations.md, "Central events")."""

from __future__ import annotations

import argparse
import time
from argparse import Namespace
from datetime import datetime
from typing import Any

from isthmus.core.flags import duration
from isthmus.ctl.client import Command, Ctl, back_pages, follow
from isthmus.ctl.flags import Parsers, Subparsers, bounded_int, int64
from isthmus.ctl.render import format_clock
from isthmus.v1 import events_pb2 as epb
from isthmus.v1 import events_pb2_grpc

COLUMNS = ("TIME", "SITE", "SEQ", "KIND", "MESSAGE")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def since_ms(text: str, now: float | None = None) -> int:
    """--since: a duration ago (90, 30s, 15m, 2h, 7d) or an ISO 8601 time (without a zone: local time)."""
    try:
        return int(((time.time() if now is None else now) - duration(text)) * 1000)
    except argparse.ArgumentTypeError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration ago like 15m, 2h, 7d or an ISO time like "
                                         f"2024-05-01T12:00:00, got {text!r}") from None
    if when.tzinfo is None:
        when = when.astimezone()
    return int(when.timestamp() * 1000)


def message_text(e: epb.Event) -> str:
    """The MESSAGE cell: the level when above info, the connection, the message, on one line."""
    level = f"{e.level.upper()}: " if e.level and e.level != "info" else ""
    connection = f"{e.connection}: " if e.connection else ""
    return level + connection + " ".join(e.message.split())


def event_row(e: epb.Event) -> list[str]:
    return [format_clock(e.time_unix_ms), e.site, str(e.seq), e.kind, message_text(e)]


FOLLOW_HEADER = f"{'TIME':<19}  {'SITE':<16}  {'SEQ':>8}  {'KIND':<9}  MESSAGE"


def follow_line(e: epb.Event) -> str:
    """One event as it arrives, in the columns of FOLLOW_HEADER (a table's widths are not known in advance)."""
    time_, site, seq, kind, text = event_row(e)
    return f"{time_:<19}  {site:<16}  {seq:>8}  {kind:<9}  {text}"


def _filters(args: Namespace) -> dict[str, Any]:
    return {"site": args.site or "", "since_unix_ms": args.since or 0, "kind": args.kind or "",
            "level": args.level or ""}


def events(ctl: Ctl, args: Namespace) -> None:
    stub = ctl.stub(events_pb2_grpc.EventServiceStub)
    if not args.follow:
        found = back_pages(stub.ListEvents, epb.ListEventsRequest(limit=args.limit or 0, **_filters(args)), "events",
                           ctl.timeout)
        ctl.show(found, COLUMNS, event_row)
        return
    request = epb.WatchEventsRequest(limit=args.limit or 0, start_revision=args.from_revision or 0,
                                     **_filters(args))
    follow(ctl, stub.WatchEvents(request), FOLLOW_HEADER, follow_line, "--follow --from-revision")


COMMANDS: dict[str, Command] = {
    "events": events,
}

EPILOGS = {
    "events": """Events are what the sites' agents recorded (link, desired, peering, override, agent, sync,
quota, error), kept centrally for --event-retention (default 7d), at most --event-max-per-site
(default 10000) per site. A site cut off from the coordinators delivers its events when it
reconnects, in order; events its journal no longer held show as one 'gap' event.

examples:
  isthmusctl events --site region-one --since 2h
  isthmusctl events --kind peering --level warning --since 2024-05-01T08:00
  isthmusctl events --follow                      # new events from now on
  isthmusctl events --site region-one --since 15m --follow -o json
""",
}


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top, EPILOGS)
    p = cli.command(groups, "events", "show the sites' event history (from their agents' journals), or follow it")
    p.add_argument("--site", metavar="S", help="only the events of site S")
    p.add_argument("--since", type=since_ms, metavar="T",
                   help="only events since T: a duration ago (15m, 2h, 7d) or an ISO time (local unless it has a "
                   "zone)")
    p.add_argument("--kind", metavar="K", help="only events of kind K (link, desired, peering, override, agent, "
                   "sync, quota, error, gap)")
    p.add_argument("--level", choices=("info", "warning", "error"), help="only events of this level or above")
    p.add_argument("--limit", type=bounded_int(MAX_LIMIT), metavar="N",
                   help=f"the newest N events (default {DEFAULT_LIMIT}); with --follow: first the newest N stored "
                   "(default: none unless --since)")
    p.add_argument("--follow", action="store_true", help="then print new events as they are stored, until Ctrl-C "
                   "(-o json: one object per line)")
    p.add_argument("--from-revision", type=int64, metavar="N", help="with --follow: resume after a broken stream "
                   "(events stored at revision N and later, no history)")
