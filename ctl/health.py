"""isthmusctl's ``health`` and ``local health``: each region's OpenStack endpoints, compute services and network
agents as their agents last checked them, problems first (docs/multisite.md, "Logs and health")."""

from __future__ import annotations

import argparse
import time
from argparse import Namespace

from isthmus.ctl.client import Command, Ctl
from isthmus.ctl.flags import Parsers, Subparsers, seconds
from isthmus.ctl.render import format_age, format_table, one_line
from isthmus.v1 import logs_pb2 as lpb
from isthmus.v1 import logs_pb2_grpc

COLUMNS = ["SITE", "REGION", "SERVICE", "KIND", "NAME", "STATE", "LATENCY", "SINCE", "DETAIL"]
RANK = {"DOWN": 0, "UNKNOWN": 1, "DISABLED": 2, "UP": 3}


def rows(regions: list[lpb.RegionHealth], now: float) -> list[list[str]]:
    """One row per region and item, problems first: the rows of a stale region, then DOWN, UNKNOWN, DISABLED, UP."""
    out = []
    for h in regions:
        stale = f" (stale: checked {format_age(now - h.report.checked_unix_ms / 1000)} ago)" if h.stale else ""
        for i in h.report.items:
            latency = f"{i.latency_seconds * 1000:.0f}ms" if i.kind == "endpoint" and i.state == "UP" else "-"
            since = format_age(now - i.since_unix_ms / 1000) if i.since_unix_ms else "-"
            out.append((0 if h.stale else 1, RANK.get(i.state, 1), [
                h.site, h.report.region, i.service, i.kind, i.name, i.state + stale, latency, since,
                one_line(i.detail) or "-"]))
    out.sort(key=lambda r: (r[0], r[1], r[2][0], r[2][2], r[2][4]))
    return [r[2] for r in out]


def _show(ctl: Ctl, reply: lpb.GetHealthResponse) -> None:
    if ctl.output == "json":
        ctl.print_json(list(reply.regions))
    else:
        print(format_table(COLUMNS, rows(list(reply.regions), time.time())), flush=True)


def health(ctl: Ctl, args: Namespace) -> None:
    stub = ctl.stub(logs_pb2_grpc.HealthServiceStub)
    while True:
        _show(ctl, stub.GetHealth(lpb.GetHealthRequest(site=args.site or ""), timeout=ctl.timeout))
        if not args.watch:
            return
        time.sleep(args.watch)
        print()


def local_health(ctl: Ctl, args: Namespace) -> None:
    report = ctl.admin().GetHealth(lpb.GetHealthRequest(), timeout=ctl.timeout)
    _show(ctl, lpb.GetHealthResponse(regions=[lpb.RegionHealth(site="(local)", report=report)]))


COMMANDS: dict[str, Command] = {"health": health, "local health": local_health}


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top)
    p = cli.command(groups, "health", "each region's OpenStack endpoints, compute services and network agents, "
                    "problems first")
    p.add_argument("--site", metavar="SITE", help="only this site's region")
    p.add_argument("--watch", type=seconds, nargs="?", const=5.0, metavar="SECONDS",
                   help="print again every SECONDS (default 5) until Ctrl-C")


def add_local_parsers(local: Subparsers, on_socket: Parsers) -> None:
    on_socket.command(local, "local health", "the region's health as this host's agent last checked it")
