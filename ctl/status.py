"""isthmusctl's ``status``, ``coordinators`` and ``audit``: what the coordinators report of the sites and of
themselves."""

from __future__ import annotations

import argparse
import time
from argparse import Namespace
from collections.abc import Sequence

import grpc

from isthmus.core.wire import network as wire
from isthmus.ctl.client import WAIT_POLL_SECONDS, Command, Ctl, CtlError, all_pages, back_pages
from isthmus.ctl.flags import Parsers, Subparsers, bounded_int, seconds
from isthmus.ctl.render import (
    OVERRIDE_COLUMNS,
    PEERING_COLUMNS,
    describe_rpc_error,
    format_age,
    format_clock,
    format_journal,
    format_table,
    override_row,
    peering_name,
    peering_row,
)
from isthmus.v1 import api_pb2, types_pb2

STATUS_COLUMNS = ("SITE", "AGENT", "DESIRED-REV", "APPLIED-REV", "PEERINGS", "DRIVER", "COORDINATOR")
COORDINATOR_COLUMNS = ("ID", "ADDRESS", "LEADER", "AGENTS", "VERSION", "UP")
RECENT_EVENTS = 10  # journal entries `status SITE` shows


def _established(p: api_pb2.PeeringStatus) -> bool:
    return p.HasField("observed") and p.observed.state == types_pb2.PEERING_STATE_ESTABLISHED


def agent_state(st: api_pb2.SiteStatus, now: float) -> str:
    """The AGENT cell. A disconnected site's other cells are its agent's last report: say how old."""
    if not st.defined:
        return "undefined site"
    if st.external:
        return "external (no agent)"
    if st.connected:
        return "connected"
    if st.disconnected_since_unix_ms:
        return f"disconnected for {format_age(now - st.disconnected_since_unix_ms / 1000)}"
    if st.last_report_unix_ms:
        return f"disconnected, last report {format_age(now - st.last_report_unix_ms / 1000)} ago"
    return "disconnected"


def status_row(st: api_pb2.SiteStatus, now: float | None = None) -> list[str]:
    agent = agent_state(st, time.time() if now is None else now)
    desired = [p for p in st.peerings if p.HasField("desired")]
    peerings = f"{sum(1 for p in desired if _established(p))}/{len(desired)}"
    return [st.site, agent, str(st.desired_revision), str(st.applied_revision), peerings, st.driver,
            st.coordinator]


def coordinator_row(c: api_pb2.CoordinatorInfo, now: float) -> list[str]:
    up = format_age(now - c.started_unix_ms / 1000) if c.started_unix_ms else ""
    return [c.id, c.address, "yes" if c.leader else "", str(c.agents), c.version, up]


def not_established(statuses: Sequence[api_pb2.SiteStatus]) -> list[str]:
    """What keeps these sites from being established, one item each; empty when nothing does.

    A site is established when its agent applied its latest desired revision and every desired
    peering that is administratively up is observed ESTABLISHED. A peering under a local override
    is not required: one disabled at the site is down on purpose (like admin down), one added at
    the site is not the coordinator's to wait for.
    """
    missing = []
    for st in statuses:
        if not st.defined or st.external:
            continue
        if not st.connected and st.agent_version:  # what it shows is a last report
            missing.append(f"{st.site} (disconnected)")
            continue
        if st.applied_revision < st.desired_revision:
            missing.append(f"{st.site} (applied revision {st.applied_revision} < {st.desired_revision})")
        for p in sorted(st.peerings, key=peering_name):
            if not p.HasField("desired") or p.desired.admin_state == types_pb2.ADMIN_STATE_DOWN:
                continue
            if p.HasField("override"):
                continue
            if _established(p):
                continue
            observed = p.HasField("observed")
            state = wire.observed_from_pb(p.observed).state.value if observed else "unreported"
            missing.append(f"{st.site}/{p.desired.connection} ({state})")
    return missing


def _all_rows(ctl: Ctl, st: api_pb2.SiteStatus) -> api_pb2.SiteStatus:
    """``st`` with every peering row: a site with many (an answer holds about 1 MiB of them) names the next
    ones in next_page_token; they are read and added here."""
    while st.next_page_token:
        more = ctl.status().GetSiteStatus(api_pb2.GetSiteStatusRequest(site=st.site, page_token=st.next_page_token),
                                          timeout=ctl.timeout)
        st.peerings.extend(more.peerings)
        st.overrides.extend(more.overrides)
        st.next_page_token = more.next_page_token
    return st


def _read_status(ctl: Ctl, site: str | None) -> list[api_pb2.SiteStatus]:
    if site:
        return [_all_rows(ctl, ctl.status().GetSiteStatus(api_pb2.GetSiteStatusRequest(site=site),
                                                          timeout=ctl.timeout))]
    sites = all_pages(ctl.status().ListSiteStatus, api_pb2.ListSiteStatusRequest(), "sites", ctl.timeout)
    return [_all_rows(ctl, st) for st in sites]


def _wait_established(ctl: Ctl, site: str | None, wait_timeout: float) -> list[api_pb2.SiteStatus]:
    deadline = time.monotonic() + wait_timeout
    while True:
        try:
            statuses = _read_status(ctl, site)
            missing = not_established(statuses)
        except grpc.RpcError as exc:
            # A coordinator that is still starting is worth waiting for; any other error is final.
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            missing = [describe_rpc_error(exc, ctl.unavailable_hint)]
        if not missing:
            return statuses
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise CtlError(f"not established after {wait_timeout:g}s: {', '.join(missing[:5])}{more}")
        time.sleep(min(WAIT_POLL_SECONDS, remaining))


def status(ctl: Ctl, args: Namespace) -> None:
    if args.wait_established:
        statuses = _wait_established(ctl, args.site, args.wait_timeout)
    else:
        statuses = _read_status(ctl, args.site)
    if ctl.output == "json":
        ctl.print_json(statuses[0] if args.site else statuses)
        return
    print(format_table(STATUS_COLUMNS, [status_row(st) for st in statuses]))
    if args.site:
        print("\n" + site_details(statuses[0], time.time()))


def site_details(st: api_pb2.SiteStatus, now: float) -> str:
    """What `status SITE` shows below the site's row: peerings, then local overrides and recent events if any."""
    peerings = sorted(st.peerings, key=peering_name)
    parts = [format_table(PEERING_COLUMNS, [peering_row(p, now) for p in peerings])]
    if not st.connected and st.agent_version:
        seen = f"reported at {format_clock(st.last_report_unix_ms)}" if st.last_report_unix_ms else "reported"
        since = (f"; disconnected since {format_clock(st.disconnected_since_unix_ms)}"
                 if st.disconnected_since_unix_ms else "")
        parts.insert(0, f"{st.site} has no agent connected: OBSERVED is what its agent last {seen}{since}")
    if st.overrides:
        overrides = sorted(st.overrides, key=lambda o: o.connection)
        parts.append(f"local overrides at {st.site}:\n"
                     + format_table(OVERRIDE_COLUMNS, [override_row(o, now) for o in overrides]))
    if st.journal:
        parts.append(f"recent events at {st.site} (from its agent):\n" + format_journal(st.journal[-RECENT_EVENTS:]))
    return "\n\n".join(parts)


def coordinators(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.status().ListCoordinators(api_pb2.ListCoordinatorsRequest(), timeout=ctl.timeout)
    now = time.time()
    ctl.show(sorted(reply.coordinators, key=lambda c: c.id), COORDINATOR_COLUMNS,
             lambda c: coordinator_row(c, now))


AUDIT_COLUMNS = ("TIME", "WHO", "ROLE", "METHOD", "ALLOWED", "DETAIL")


def audit_row(e: api_pb2.AuditEvent) -> list[str]:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.time_unix_ms / 1000))
    return [when, e.who, e.role or "-", e.method.rsplit("/", 1)[-1], "yes" if e.allowed else "REFUSED",
            e.detail + (f" (for {e.on_behalf_of})" if e.on_behalf_of else "")
            + (f" ({e.count} times since {time.strftime('%H:%M:%S', time.localtime(e.first_unix_ms / 1000))})"
               if e.count > 1 else "") or "-"]


def audit(ctl: Ctl, args: Namespace) -> None:
    found = back_pages(ctl.status().ListAuditEvents, api_pb2.ListAuditEventsRequest(limit=args.limit), "events",
                       ctl.timeout)
    ctl.show(found, AUDIT_COLUMNS, audit_row)


COMMANDS: dict[str, Command] = {
    "status": status,
    "coordinators": coordinators,
    "audit": audit,
}


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top)
    p = cli.command(groups, "status", "show what each site's agent has applied and observed")
    p.add_argument("site", nargs="?", metavar="SITE", help="only this site, with a row per peering")
    p.add_argument("--wait-established", action="store_true",
                   help="first wait until every desired peering that is up is applied and established")
    p.add_argument("--wait-timeout", type=seconds, default=60.0, metavar="S",
                   help="stop waiting after S seconds and exit 1 (default 60)")

    cli.command(groups, "coordinators", "list the running coordinators, their leader and their agents")
    p = cli.command(groups, "audit", "show the audit history: writes and refused calls, who and when")
    p.add_argument("--limit", type=bounded_int(10_000), default=100, metavar="N",
                   help="the last N events (default 100)")
