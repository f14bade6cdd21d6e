"""isthmusctl's ``logs`` and ``local logs``: the OpenStack services' log lines of one or several sites, read through
their agents (docs/multisite.md, "Logs and health")."""

from __future__ import annotations

import argparse
import collections
import heapq
import json
import sys
import threading
import time
from argparse import Namespace
from collections.abc import Iterable, Iterator
from typing import Any

from isthmus.core import logs as q
from isthmus.core.errors import InvalidArgument
from isthmus.core.flags import duration
from isthmus.ctl.client import Command, Ctl, CtlError
from isthmus.ctl.flags import Parsers, Subparsers, bounded_int
from isthmus.ctl.render import format_table, message_json
from isthmus.v1 import logs_pb2 as lpb
from isthmus.v1 import logs_pb2_grpc

FOLLOW_EVERY = 1.0  # seconds between pages of `local logs --follow` at the end of the logs


def query(args: Namespace, site: str = "", now: float | None = None) -> lpb.LogQuery:
    """The request of `logs` / `local logs` from its flags (pure, tested); refuses a pattern that could run away
    here already, as the agent would."""
    try:
        q.compile_grep(args.grep or "")
    except InvalidArgument as exc:
        raise CtlError(f"--{exc}") from exc
    since = 0
    if args.since:
        since = int(((now if now is not None else time.time()) - args.since) * 1000)
    return lpb.LogQuery(site=site, services=args.service or [], since_unix_ms=since, grep=args.grep or "",
                        level=args.level or "", limit=min(args.limit, q.MAX_PAGE) if args.limit else 0,
                        follow=args.follow)


def line_text(ln: lpb.LogLine) -> str:
    return f"{ln.site} {ln.service}: {ln.text}"


def _print(ctl: Ctl, lines: Iterable[lpb.LogLine]) -> None:
    for ln in lines:
        print(json.dumps(message_json(ln)) if ctl.output == "json" else line_text(ln), flush=True)


def _notes(site: str, page: lpb.LogPage) -> None:
    for note in page.notes:
        print(f"isthmusctl: {site}: {note}", file=sys.stderr)


def newest(pages: Iterable[lpb.LogPage], limit: int, site: str) -> tuple[list[lpb.LogLine], int]:
    """The newest ``limit`` lines of a site's pages (oldest first) and how many older ones were left out."""
    kept: collections.deque[lpb.LogLine] = collections.deque(maxlen=limit)
    total = 0
    for page in pages:
        _notes(site, page)
        total += len(page.lines)
        kept.extend(page.lines)
    return list(kept), total - len(kept)


def merged(per_site: list[list[lpb.LogLine]], limit: int) -> list[lpb.LogLine]:
    """Several sites' lines merged by time (each site's are in time order), the newest ``limit``."""
    lines = list(heapq.merge(*per_site, key=lambda ln: ln.time_unix_ms))
    return lines[-limit:] if limit else lines


def _sources(ctl: Ctl, sites: list[str], ask: Any) -> None:
    rows, replies = [], []
    for site in sites:
        reply = ask(site)
        replies.append(reply)
        for s in reply.sources:
            size = f"{s.size_bytes}" if s.kind == "file" else "-"
            rows.append([site, s.service, s.kind, s.location, "yes" if s.readable else f"no: {s.error}", size])
    if ctl.output == "json":
        ctl.print_json(replies)
    else:
        print(format_table(["SITE", "SERVICE", "KIND", "LOCATION", "READABLE", "BYTES"], rows))


def logs(ctl: Ctl, args: Namespace) -> None:
    stub = ctl.stub(logs_pb2_grpc.LogServiceStub)
    if args.list:
        _sources(ctl, args.site, lambda site: stub.ListLogSources(lpb.ListLogSourcesRequest(site=site),
                                                                 timeout=ctl.timeout))
        return
    requests = {site: query(args, site) for site in args.site}
    if args.follow:
        _follow(ctl, [stub.ReadLogs(req) for req in requests.values()])
        return
    per_site, left_out = [], 0
    for site, req in requests.items():
        lines, older = newest(stub.ReadLogs(req, timeout=max(ctl.timeout, 120)), args.limit, site)
        per_site.append(lines)
        left_out += older
    _print(ctl, merged(per_site, args.limit))
    if left_out:
        print(f"isthmusctl: {left_out} older matching lines left out (--limit {args.limit}; narrow --since or "
              "--grep)", file=sys.stderr)


def _follow(ctl: Ctl, calls: list[Any]) -> None:
    """Each site's stream printed as its pages come (sites interleave by arrival), until Ctrl-C."""
    lock = threading.Lock()
    errors: list[BaseException] = []

    def pump(call: Any) -> None:
        try:
            for page in call:
                with lock:
                    _notes(page.lines[0].site if page.lines else "?", page)
                    _print(ctl, page.lines)
        except BaseException as exc:  # noqa: BLE001 (handed to the main thread)
            if not getattr(call, "cancelled", lambda: False)():
                errors.append(exc)

    threads = [threading.Thread(target=pump, args=(c,), daemon=True) for c in calls]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads) and not errors:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for c in calls:
            c.cancel()
    if errors:
        raise errors[0]


def local_pages(ctl: Ctl, req: lpb.LogQuery) -> Iterator[lpb.LogPage]:
    """The agent's pages one after another (its admin socket answers one page a call); with follow, on at the end."""
    admin = ctl.admin()
    while True:
        page = admin.ReadLogs(req, timeout=max(ctl.timeout, 60))
        yield page
        req.cursor = page.cursor
        if page.more:
            continue
        if not req.follow:
            return
        time.sleep(FOLLOW_EVERY)


def local_logs(ctl: Ctl, args: Namespace) -> None:
    if args.list:
        _sources(ctl, ["(local)"], lambda _: ctl.admin().ListLogSources(lpb.ListLogSourcesRequest(),
                                                                        timeout=ctl.timeout))
        return
    req = query(args)
    if args.follow:
        try:
            for page in local_pages(ctl, req):
                _notes("local", page)
                _print(ctl, page.lines)
        except KeyboardInterrupt:
            pass
        return
    lines, older = newest(local_pages(ctl, req), args.limit, "local")
    _print(ctl, lines)
    if older:
        print(f"isthmusctl: {older} older matching lines left out (--limit {args.limit})", file=sys.stderr)


COMMANDS: dict[str, Command] = {"logs": logs, "local logs": local_logs}

EPILOG = """Lines are read on the site's host when asked for, never stored; secrets (passwords,
tokens, keys: what oslo.log masks, and the agent's --redact patterns) are masked
there, and --grep runs on the masked line. Reading needs the operator role and is
audited. A --grep that could run away (a backreference, a lookaround, a repeat
inside a repeat, an alternation inside a repeat, more than 3 unbounded repeats,
over 256 characters) is refused.

examples:
  isthmusctl logs --site region-two --list
  isthmusctl logs --site region-two --service neutron-server --grep 'req-[0-9a-f-]+' --since 15m
  isthmusctl logs --site region-one --site region-two --level error --since 1h
  isthmusctl logs --site region-two --service nova-api --follow
"""


def _add_query_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--service", action="append", metavar="NAME",
                   help="a log source of the site, repeatable (default: all; --list names them)")
    p.add_argument("--since", type=duration, metavar="DURATION",
                   help="lines of the last DURATION: seconds, or 30s, 15m, 2h, 1d (default 1h)")
    p.add_argument("--grep", metavar="REGEX", help="only lines this regular expression matches (Python syntax)")
    p.add_argument("--level", choices=list(q.LEVELS), help="only lines of this level or above")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument("--limit", type=bounded_int(1_000_000), default=1000, metavar="N",
                   help="print the newest N matching lines (default 1000)")
    p.add_argument("--list", action="store_true", help="list the site's log sources instead")


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top, {"logs": EPILOG})
    p = cli.command(groups, "logs", "the OpenStack services' log lines of sites, read through their agents")
    p.add_argument("--site", action="append", required=True, metavar="SITE",
                   help="a site, repeatable: several sites' lines merge by time")
    _add_query_flags(p)


def add_local_parsers(local: Subparsers, on_socket: Parsers) -> None:
    p = on_socket.command(local, "local logs", "this host's OpenStack log lines, read by the agent (no coordinator)")
    _add_query_flags(p)
