"""isthmusctl's ``local``: this host's agent, asked on its admin socket with no coordinator involved (its
state, and the local overrides that hold a peering down or add one while the site is cut off)."""

from __future__ import annotations

import argparse
import time
from argparse import Namespace

from isthmus.core import model as m
from isthmus.core.flags import duration
from isthmus.core.wire import network as wire
from isthmus.ctl import health, logs
from isthmus.ctl.client import DEFAULT_ADMIN_SOCKET, ENV_ADMIN_SOCKET, Command, Ctl
from isthmus.ctl.flags import Parsers, Subparsers, add_peering_params, bgp_params, bounded_int, uint32, vxlan_params
from isthmus.ctl.render import (
    OVERRIDE_COLUMNS,
    PEERING_COLUMNS,
    format_age,
    format_fields,
    format_journal,
    one_line,
    override_row,
    peering_name,
    peering_row,
)
from isthmus.v1 import admin_pb2

# ---------------------------------------------------------------- requests from flags (pure, tested)


def local_peering(args: Namespace) -> m.DesiredPeering:
    """The peering of `local add`; sites and endpoint names are left empty for the agent to fill in."""
    local = m.Endpoint(site="", name="", address=args.local_address, asn=args.local_asn,
                       role=m.EndpointRole.LOCAL, router_id=args.router_id or "")
    remote = m.Endpoint(site="", name="", address=args.remote_address, asn=args.remote_asn,
                        role=m.EndpointRole.REMOTE)
    return m.DesiredPeering(connection=args.name, type=m.ConnectionType(args.type), local=local, remote=remote,
                            bgp=bgp_params(None, args), vxlan=vxlan_params(None, args))


def add_local_peering_request(args: Namespace) -> admin_pb2.AddLocalPeeringRequest:
    return admin_pb2.AddLocalPeeringRequest(peering=wire.peering_to_pb(local_peering(args)),
                                            ttl_seconds=args.ttl or 0, reason=args.reason or "")


def disable_peering_request(args: Namespace) -> admin_pb2.DisablePeeringRequest:
    return admin_pb2.DisablePeeringRequest(connection=args.connection, ttl_seconds=args.ttl or 0,
                                           reason=args.reason or "")


# ---------------------------------------------------------------- commands


def local_status(ctl: Ctl, args: Namespace) -> None:
    st = ctl.admin().Status(admin_pb2.AgentStatusRequest(), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(st)
        return
    print(format_fields(agent_status_fields(st, time.time())))


def agent_status_fields(st: admin_pb2.AgentStatus, now: float) -> list[tuple[str, str]]:
    """The lines of `local status`; now is the current Unix time in seconds."""
    started = f"{format_age(now - st.started_unix_ms / 1000)} ago" if st.started_unix_ms else ""
    down = st.partitioned and st.link_down_since_unix_ms
    down_since = f"{format_age(now - st.link_down_since_unix_ms / 1000)} ago" if down else ""
    return [
        ("site", st.site), ("connected", "yes" if st.connected else "no"), ("coordinator", st.coordinator),
        ("partitioned", "yes" if st.partitioned else "no"), ("link-down-since", down_since),
        ("desired-revision", str(st.desired_revision)), ("applied-revision", str(st.applied_revision)),
        ("overrides", str(st.overrides)),
        ("driver", st.driver), ("agent-version", st.agent_version), ("started", started),
        ("last-error", one_line(st.last_error)),
        ("sync", (f"region {st.sync_region}, stream {'up' if st.sync_connected else 'down'}; "
                  + (", ".join(f"{n} {state}" for state, n in sorted(st.sync_states.items())) or "nothing to do"))
         if st.sync_enabled else "off (no --os-cloud)"),
    ]


def all_local_peerings(ctl: Ctl) -> list[admin_pb2.LocalPeering]:
    """Every row of ListPeerings, following its pages (a large desired state takes several); read again
    from the start if the desired revision moved meanwhile, so that the rows are of one revision."""
    for _ in range(3):
        reply = ctl.admin().ListPeerings(admin_pb2.ListPeeringsRequest(), timeout=ctl.timeout)
        rows, revision = list(reply.peerings), reply.revision
        while reply.next_page_token:
            reply = ctl.admin().ListPeerings(admin_pb2.ListPeeringsRequest(page_token=reply.next_page_token),
                                             timeout=ctl.timeout)
            rows += reply.peerings
        if reply.revision == revision:
            break
    return rows


def local_peerings(ctl: Ctl, args: Namespace) -> None:
    peerings = sorted(all_local_peerings(ctl), key=peering_name)
    now = time.time()
    ctl.show(peerings, PEERING_COLUMNS, lambda p: peering_row(p, now))


def local_resync(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().Resync(admin_pb2.ResyncRequest(), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
    else:
        print(f"resynced: applied revision {reply.applied_revision}, peerings: {reply.peerings}")


def local_disable(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().DisablePeering(disable_peering_request(args), timeout=ctl.timeout)
    now = time.time()
    ctl.show_one(reply, OVERRIDE_COLUMNS, lambda o: override_row(o, now))


def local_enable(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().EnablePeering(admin_pb2.EnablePeeringRequest(connection=args.connection),
                                      timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
    else:
        print(f"enabled {reply.removed.connection}: the local disable override is removed")


def local_add(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().AddLocalPeering(add_local_peering_request(args), timeout=ctl.timeout)
    now = time.time()
    ctl.show_one(reply, OVERRIDE_COLUMNS, lambda o: override_row(o, now))


def local_overrides(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().ListOverrides(admin_pb2.ListOverridesRequest(), timeout=ctl.timeout)
    now = time.time()
    items = sorted(reply.overrides, key=lambda o: o.connection)
    ctl.show(items, OVERRIDE_COLUMNS, lambda o: override_row(o, now))


def local_remove_override(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().RemoveOverride(admin_pb2.RemoveOverrideRequest(connection=args.connection),
                                       timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
    else:
        kind = wire.override_from_pb(reply.removed).kind.value
        print(f"removed the local {kind} override of {reply.removed.connection}")


def local_journal(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.admin().Journal(admin_pb2.JournalRequest(limit=args.limit), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply.entries)
    else:
        print(format_journal(reply.entries))


COMMANDS: dict[str, Command] = {
    "local status": local_status,
    "local peerings": local_peerings,
    "local resync": local_resync,
    "local disable": local_disable,
    "local enable": local_enable,
    "local add": local_add,
    "local overrides": local_overrides,
    "local remove-override": local_remove_override,
    "local journal": local_journal,
}


# ---------------------------------------------------------------- command line

EPILOGS = {
    "local disable": """The peering stays down at this site, whatever the coordinator wants, until
'local enable' or the --ttl runs out. The override is kept across agent restarts.

examples:
  isthmusctl local disable one-two --ttl 2h --reason "replacing the uplink optics"
  isthmusctl local disable one-two
""",
    "local add": """For a new remote endpoint that must be reached while the site is cut off from the
coordinator. The peering is realized at this site only and kept (across agent
restarts too) until 'local remove-override' or the --ttl runs out; the
coordinator never removes it.

examples:
  isthmusctl local add dc-backup --type bgp --local-address 192.0.2.1 --local-asn 64512 \\
      --remote-address 198.51.100.9 --remote-asn 64999 --ttl 1d --reason "dc link while partitioned"
  isthmusctl local add l2-backup --type vxlan --local-address 192.0.2.1 --local-asn 64512 \\
      --remote-address 198.51.100.9 --remote-asn 64999 --vni 5001
""",
}


def _add_override_flags(p: argparse.ArgumentParser, until: str) -> None:
    p.add_argument("--ttl", type=duration, metavar="DURATION",
                   help=f"remove the override after this long: seconds, or 30s, 15m, 2h, 1d "
                   f"(0 or absent: until {until})")
    p.add_argument("--reason", metavar="TEXT", help="why, for the overrides list and the journal")


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    socket = argparse.ArgumentParser(add_help=False)
    socket.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"agent admin socket (default ${ENV_ADMIN_SOCKET}, else {DEFAULT_ADMIN_SOCKET})")
    on_socket = Parsers([*top, socket], EPILOGS)
    local = on_socket.group(groups, "local", "ask this host's agent on its admin socket (no coordinator used)")
    on_socket.command(local, "local status", "show the agent's coordinator session (or since when it is cut off), "
                      "revisions and overrides")
    on_socket.command(local, "local peerings", "list the agent's desired and observed peerings")
    on_socket.command(local, "local resync", "re-observe and re-apply the desired state now")
    p = on_socket.command(local, "local disable", "hold a desired peering down at this site (a local override)")
    p.add_argument("connection", metavar="CONNECTION", help="the peering's connection name")
    _add_override_flags(p, "'local enable'")
    p = on_socket.command(local, "local enable", "end a local disable: the coordinator's admin state applies again")
    p.add_argument("connection", metavar="CONNECTION", help="the peering's connection name")
    p = on_socket.command(local, "local add", "add a peering at this site only, for a new remote endpoint "
                          "reached while the site is cut off from the coordinator (a local override)")
    p.add_argument("name", metavar="NAME", help="the new peering's name: a DNS label no desired peering has")
    p.add_argument("--type", required=True, choices=[t.value for t in m.ConnectionType],
                   help="bgp: a BGP session; vxlan: a VXLAN tunnel")
    p.add_argument("--local-address", required=True, metavar="IP", help="this site's address for the peering")
    p.add_argument("--local-asn", required=True, type=uint32, metavar="N", help="this site's BGP AS number")
    p.add_argument("--router-id", metavar="A.B.C.D", help="BGP router id (default: the local IPv4 address)")
    p.add_argument("--remote-address", required=True, metavar="IP", help="the remote endpoint's address")
    p.add_argument("--remote-asn", required=True, type=uint32, metavar="N",
                   help="the remote endpoint's BGP AS number")
    add_peering_params(p)
    _add_override_flags(p, "'local remove-override'")
    on_socket.command(local, "local overrides", "list the local overrides in force at this site")
    p = on_socket.command(local, "local remove-override", "remove a local override (disable or add) now")
    p.add_argument("connection", metavar="CONNECTION", help="the connection name the override applies to")
    p = on_socket.command(local, "local journal", "show the agent's recent events, oldest first")
    p.add_argument("--limit", type=bounded_int(2**31 - 1), default=50, metavar="N",
                   help="the last N events (default 50; 0: all the agent keeps)")
    logs.add_local_parsers(local, on_socket)
    health.add_local_parsers(local, on_socket)
