"""isthmusctl's global views: ``quota``, ``capacity``, ``address``, ``routing-domain`` (see docs/multisite.md)."""

from __future__ import annotations

import argparse
import time
from argparse import Namespace
from typing import Any

import grpc

from isthmus.ctl.client import Command, Ctl, all_pages
from isthmus.ctl.flags import Parsers, Subparsers, add_version
from isthmus.ctl.render import format_table
from isthmus.v1 import views_pb2 as vpb
from isthmus.v1 import views_pb2_grpc

RESOURCES = ("instances", "cores", "ram", "server_groups", "networks", "subnets", "ports", "floatingips",
             "security_groups", "security_group_rules", "routers")


def network_ref(text: str) -> vpb.NetworkRef:
    region, sep, network = text.partition(":")
    if not sep or not region or not network:
        raise argparse.ArgumentTypeError(f"{text!r}: expected REGION:NETWORK_ID")
    return vpb.NetworkRef(region=region, network=network)


def _stub(ctl: Ctl) -> Any:
    return ctl.stub(views_pb2_grpc.GlobalViewServiceStub)


def _limit(n: int) -> str:
    return "-" if n < 0 else str(n)


def _age(unix_ms: int, now: float) -> str:
    if not unix_ms:
        return "-"
    age = max(0.0, now - unix_ms / 1000)
    return f"{age:.0f}s ago" if age < 120 else f"{age / 60:.0f}m ago"


def format_quota(pq: vpb.ProjectQuota, now: float) -> str:
    rows = []
    for rq in pq.resources:
        flag = " SOFT LIMIT REACHED" if rq.soft_exceeded else ""
        rows.append([rq.resource, "(all)", _limit(rq.hard), _limit(rq.soft), str(rq.total), "-", "-",
                     _limit(rq.headroom) + flag])
        for reg in rq.regions:
            if not reg.known:
                rows.append(["", reg.region, "", "", "?", "?", "?", "not reported" + (" (stale)" if reg.stale else "")])
                continue
            state = "stale: keeps its limit" if reg.stale else reg.reason
            rows.append(["", reg.region, "", "", str(reg.usage), _limit(reg.limit), _limit(reg.setting),
                         f"{state} (report changed {_age(reg.updated_unix_ms, now)})"])
    header = ["RESOURCE", "REGION", "HARD", "SOFT", "USAGE", "LIMIT", "SETTING", "HEADROOM / NOTE"]
    return f"project {pq.project}\n" + format_table(header, rows)


def quota_show(ctl: Ctl, args: Namespace) -> None:
    pq = _stub(ctl).GetQuota(vpb.GetQuotaRequest(project=args.project), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(pq)
    else:
        print(format_quota(pq, time.time()))


def quota_set(ctl: Ctl, args: Namespace) -> None:
    soft = args.soft if args.soft is not None else -1
    made = _stub(ctl).SetQuota(vpb.QuotaLimit(project=args.project, resource=args.resource, hard=args.hard,
                                              soft=soft, version=args.version or 0), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(made)
    else:
        print(f"project {made.project}: {made.resource} hard {_limit(made.hard)}, soft {_limit(made.soft)} across all "
              "regions")


def _kept(before: vpb.ProjectQuota, resources: set[str]) -> str:
    """The per-region limits the regions keep for ``resources`` (as last reported)."""
    kept = [f"{reg.region} {rq.resource} {_limit(reg.limit)}" for rq in before.resources if rq.resource in resources
            for reg in rq.regions if reg.known]
    return ", ".join(kept) or "none reported"


def quota_unset(ctl: Ctl, args: Namespace) -> None:
    stub = _stub(ctl)
    try:
        before = stub.GetQuota(vpb.GetQuotaRequest(project=args.project), timeout=ctl.timeout)
    except grpc.RpcError:
        before = vpb.ProjectQuota(project=args.project)  # the unset below says what is wrong
    reply = stub.UnsetQuota(vpb.UnsetQuotaRequest(project=args.project, resource=args.resource or ""),
                            timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
        return
    gone = {rq.resource for rq in before.resources if not args.resource or rq.resource == args.resource}
    left = [f"{rq.resource} hard {_limit(rq.hard)}" for rq in before.resources if rq.resource not in gone]
    print(f"removed {reply.removed} global {'limit' if reply.removed == 1 else 'limits'} of project {args.project}"
          + (f" ({', '.join(sorted(gone))})" if gone else "") + "; isthmus no longer changes these limits in the "
          f"regions, which keep the ones last applied: {_kept(before, gone)} (change them with the OpenStack "
          "tools)")
    print(f"global limits left for project {args.project}: {', '.join(left) or 'none'}")


def quota_list(ctl: Ctl, args: Namespace) -> None:
    limits = all_pages(_stub(ctl).ListQuotas, vpb.ListQuotasRequest(), "limits", ctl.timeout)
    if not limits and ctl.output != "json":
        print("no global quota limits (set one with: isthmusctl quota set PROJECT RESOURCE --hard N)")
        return
    ctl.show(limits, ["PROJECT", "RESOURCE", "HARD", "SOFT", "VERSION"],
             lambda x: [x.project, x.resource, _limit(x.hard), _limit(x.soft), str(x.version)])


def _capacity_row(c: vpb.RegionCapacity) -> list[str]:
    if c.compute_known:
        compute = [f"{c.vcpus_used}/{c.vcpus}", f"{c.ram_mb_used}/{c.ram_mb}", str(c.instances)]
    else:
        compute = ["unknown"] * 3
    nets = ", ".join(f"{k} {v}" for k, v in sorted(c.network_objects.items())) or "-"
    return [c.region + (" (stale)" if c.stale else ""), *compute, c.source or "-", nets]


def capacity(ctl: Ctl, args: Namespace) -> None:
    cap = _stub(ctl).GetCapacity(vpb.GetCapacityRequest(), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(cap)
        return
    rows = [_capacity_row(c) for c in cap.regions] + [_capacity_row(cap.total)]
    print(format_table(["REGION", "VCPUS USED/TOTAL", "RAM MB USED/TOTAL", "INSTANCES", "SOURCE", "NETWORK OBJECTS"],
                       rows))


SHORT_ID = 8  # characters of an OpenStack id a table shows without --long


def _short(value: str, long: bool) -> str:
    return value if long else value[:SHORT_ID]


def _record_row(r: vpb.AddressRecord, long: bool = False) -> list[str]:
    """A table row: ids shortened (unless ``long``), the network's name where Neutron has one."""
    what = ", ".join([*r.ips, *([r.mac] if r.mac else []), *([r.cidr] if r.cidr else [])])
    network = r.network if long else (r.network_name or _short(r.network, long))
    return [r.region, r.kind, _short(r.id, long), _short(r.project, long) or "-", network or "-", what,
            _short(r.device, long) if r.device and ":" not in r.device else (r.device or "-"), r.name or "-"]


RECORD_COLUMNS = ["REGION", "KIND", "ID", "PROJECT", "NETWORK", "ADDRESSES", "DEVICE", "NAME"]


def address_lookup(ctl: Ctl, args: Namespace) -> None:
    records = all_pages(_stub(ctl).ListAddresses, vpb.ListAddressesRequest(query=args.query), "records", ctl.timeout)
    ctl.show(records, RECORD_COLUMNS, lambda r: _record_row(r, args.long))


def address_conflicts(ctl: Ctl, args: Namespace) -> None:
    conflicts = all_pages(_stub(ctl).ListAddressConflicts, vpb.ListAddressConflictsRequest(), "conflicts",
                          ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(conflicts)
        return
    if not conflicts:
        print("no conflicts")
        return
    rows = []
    for c in conflicts:
        for i, r in enumerate(c.records):
            rows.append([c.kind if i == 0 else "-", c.value if i == 0 else "-", c.domain if i == 0 else "-",
                         *_record_row(r, args.long)[:5]])
    print(format_table(["CONFLICT", "VALUE", "DOMAIN", "REGION", "KIND", "ID", "PROJECT", "NETWORK"], rows))


def _domain_row(d: vpb.RoutingDomain) -> list[str]:
    return [d.name, " ".join(f"{n.region}:{n.network}" for n in d.networks), d.description or "-"]


DOMAIN_COLUMNS = ["NAME", "NETWORKS", "DESCRIPTION"]


def domain_create(ctl: Ctl, args: Namespace) -> None:
    made = _stub(ctl).CreateRoutingDomain(vpb.RoutingDomain(name=args.name, networks=args.network,
                                                            description=args.description or ""), timeout=ctl.timeout)
    ctl.show_one(made, DOMAIN_COLUMNS, _domain_row)


def domain_update(ctl: Ctl, args: Namespace) -> None:
    stub = _stub(ctl)
    current = stub.GetRoutingDomain(vpb.GetRoutingDomainRequest(name=args.name), timeout=ctl.timeout)
    networks = list(current.networks)
    for ref in args.add_network or []:
        if all((n.region, n.network) != (ref.region, ref.network) for n in networks):
            networks.append(ref)
    drop = {(n.region, n.network) for n in args.remove_network or []}
    networks = [n for n in networks if (n.region, n.network) not in drop]
    made = stub.UpdateRoutingDomain(vpb.RoutingDomain(
        name=args.name, networks=networks, version=args.version or current.version,
        description=args.description if args.description is not None else current.description), timeout=ctl.timeout)
    ctl.show_one(made, DOMAIN_COLUMNS, _domain_row)


def domain_list(ctl: Ctl, args: Namespace) -> None:
    domains = all_pages(_stub(ctl).ListRoutingDomains, vpb.ListRoutingDomainsRequest(), "domains", ctl.timeout)
    ctl.show(domains, DOMAIN_COLUMNS, _domain_row)


def domain_show(ctl: Ctl, args: Namespace) -> None:
    ctl.show_one(_stub(ctl).GetRoutingDomain(vpb.GetRoutingDomainRequest(name=args.name), timeout=ctl.timeout),
                 DOMAIN_COLUMNS, _domain_row)


def domain_delete(ctl: Ctl, args: Namespace) -> None:
    reply = _stub(ctl).DeleteRoutingDomain(vpb.DeleteRoutingDomainRequest(name=args.name, version=args.version or 0),
                                           timeout=ctl.timeout)
    ctl.show_deleted(f"routing domain {args.name}", reply)


COMMANDS: dict[str, Command] = {
    "quota show": quota_show,
    "quota set": quota_set,
    "quota unset": quota_unset,
    "quota list": quota_list,
    "capacity": capacity,
    "address lookup": address_lookup,
    "address conflicts": address_conflicts,
    "routing-domain create": domain_create,
    "routing-domain update": domain_update,
    "routing-domain list": domain_list,
    "routing-domain show": domain_show,
    "routing-domain delete": domain_delete,
}

EPILOGS = {
    "quota set": """The hard limit holds across all regions together: isthmus sets each region's own
quota so that the regions' limits never add up to more than it, sharing the
headroom by recent use with a floor (docs/multisite.md). Crossing the soft
limit raises an event (isthmusctl events --kind quota.soft-limit).

examples:
  isthmusctl quota set PROJECT_ID instances --hard 100 --soft 80
  isthmusctl quota set PROJECT_ID security_groups --hard 50
""",
    "address lookup": """QUERY is an IP address (the records that hold it and the subnets that contain it),
a MAC address, or a CIDR (every record with an address in it, and the subnets
that overlap it). IPv4 and IPv6.

examples:
  isthmusctl address lookup 10.0.0.12
  isthmusctl address lookup fa:16:3e:00:11:22
  isthmusctl address lookup 2001:db8:5::/64
""",
    "routing-domain create": """Networks in one routing domain can reach each other across regions: the same IP,
the same MAC or overlapping subnets among them are conflicts (isthmusctl
address conflicts). Networks joined by an l2-gateway-connection are one domain
without this; floating and router gateway IPs are always one global domain.

examples:
  isthmusctl routing-domain create corp --network region-one:NET_ID_1 --network region-two:NET_ID_2
""",
}


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top, EPILOGS)
    quota = cli.group(groups, "quota", "global quotas: hard and soft limits across all regions")
    cli.command(quota, "quota show", "per resource: the global limits, usage per region, total, headroom"
                ).add_argument("project", metavar="PROJECT", help="the project id")
    p = cli.command(quota, "quota set", "set a project's global hard (and soft) limit for a resource")
    p.add_argument("project", metavar="PROJECT", help="the project id")
    p.add_argument("resource", choices=RESOURCES, metavar="RESOURCE", help=", ".join(RESOURCES))
    p.add_argument("--hard", type=int, required=True, metavar="N", help="global hard limit (-1: none)")
    p.add_argument("--soft", type=int, metavar="N", help="global soft limit: an event when crossed")
    add_version(p)
    p = cli.command(quota, "quota unset", "remove a project's global limits (one resource, or all)")
    p.add_argument("project", metavar="PROJECT", help="the project id")
    p.add_argument("resource", nargs="?", choices=RESOURCES, metavar="RESOURCE", help="only this resource")
    cli.command(quota, "quota list", "list every global limit")
    cli.command(groups, "capacity", "capacity and usage per region and in total")
    address = cli.group(groups, "address", "the global IP / MAC address view")
    p = cli.command(address, "address lookup", "which region, project, network and port hold an IP, MAC or CIDR")
    p.add_argument("query", metavar="QUERY", help="an IP, a MAC or a CIDR")
    p.add_argument("--long", action="store_true", help="full ids (tables shorten them to 8 characters and show "
                   "network names)")
    p = cli.command(address, "address conflicts",
                    "duplicate IPs and MACs and overlapping subnets that can reach each other")
    p.add_argument("--long", action="store_true", help="full ids (tables shorten them to 8 characters and show "
                   "network names)")
    rd = cli.group(groups, "routing-domain", "networks of several regions that reach each other")
    p = cli.command(rd, "routing-domain create", "create a routing domain")
    p.add_argument("name", metavar="NAME", help="a DNS label, unique")
    p.add_argument("--network", action="append", required=True, type=network_ref, metavar="REGION:NETWORK_ID",
                   help="a network of a region, repeatable")
    p.add_argument("--description", metavar="TEXT", help="free text")
    p = cli.command(rd, "routing-domain update", "add or remove networks (read, modify, write)")
    p.add_argument("name", metavar="NAME", help="the domain's name")
    p.add_argument("--add-network", action="append", type=network_ref, metavar="REGION:NETWORK_ID",
                   help="add a network, repeatable")
    p.add_argument("--remove-network", action="append", type=network_ref, metavar="REGION:NETWORK_ID",
                   help="remove a network, repeatable")
    p.add_argument("--description", metavar="TEXT", help="replace the description")
    add_version(p)
    cli.command(rd, "routing-domain list", "list routing domains")
    cli.command(rd, "routing-domain show", "show one routing domain").add_argument("name", metavar="NAME",
                                                                                help="the domain's name")
    p = cli.command(rd, "routing-domain delete", "delete a routing domain")
    p.add_argument("name", metavar="NAME", help="the domain's name")
    add_version(p)
