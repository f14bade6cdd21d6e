"""isthmusctl's ``watch``: the coordinator's changes as they happen, one line each."""

from __future__ import annotations

import argparse
from argparse import Namespace

from isthmus.ctl.client import Command, Ctl, follow
from isthmus.ctl.flags import Parsers, Subparsers, int64
from isthmus.v1 import api_pb2


def event_line(event: api_pb2.WatchEvent) -> str:
    """REV TYPE KIND NAME of one watch event, in columns matching WATCH_HEADER."""
    kind = event.WhichOneof("object") or ""
    if kind == "endpoint":
        name = f"{event.endpoint.site}/{event.endpoint.name}"
    elif kind == "status":
        name = event.status.site
    else:
        name = getattr(event, kind).name if kind else ""
    return f"{event.revision:<8} {api_pb2.EventType.Name(event.type).lower():<7} {kind:<11} {name}"


WATCH_HEADER = f"{'REV':<8} {'TYPE':<7} {'KIND':<11} NAME"


def watch(ctl: Ctl, args: Namespace) -> None:
    request = api_pb2.WatchRequest(
        kinds=args.kind or [], site=args.site or "", start_revision=args.from_revision or 0
    )
    follow(ctl, ctl.status().Watch(request), WATCH_HEADER, event_line, "--from-revision")


COMMANDS: dict[str, Command] = {
    "watch": watch,
}


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top)
    p = cli.command(groups, "watch", "print changes as they happen, one line each, until Ctrl-C")
    p.add_argument("--kind", action="append", choices=("site", "endpoint", "connection", "status"),
                   help="only this kind of object, repeatable (default: all)")
    p.add_argument("--site", metavar="S", help="only objects of site S (connections: either end)")
    p.add_argument("--from-revision", type=int64, metavar="N", help="first replay changes since revision N")
