"""isthmusctl's ``policy``: topology policies (full mesh, hub and spoke, route reflectors) in the coordinator."""

from __future__ import annotations

import argparse
from argparse import Namespace

from isthmus.core import model as m
from isthmus.core import topology as t
from isthmus.core.wire import topology as twire
from isthmus.ctl.client import Command, Ctl, CtlError, all_pages
from isthmus.ctl.flags import Parsers, Subparsers, add_pairs, add_peering_params, add_version, bgp_params
from isthmus.ctl.network import CONNECTION_COLUMNS, _params_text, connection_row
from isthmus.ctl.render import format_fields, format_table, pairs
from isthmus.v1 import topology_pb2 as tpb
from isthmus.v1 import topology_pb2_grpc as tgrpc


def vni_pool(text: str) -> tuple[int, int]:
    """``FIRST-LAST`` (or one VNI)."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not FIRST-LAST") from None
    if not 1 <= low <= high <= m.MAX_VNI:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range in 1..{m.MAX_VNI}")
    return low, high


def new_policy(args: Namespace) -> t.Policy:
    """The policy the flags of ``policy create`` describe (pure, tested)."""
    if args.vni is not None:
        raise CtlError("--vni: a policy gives each VXLAN connection its own VNI: use --vni-pool FIRST-LAST")
    types = tuple(m.ConnectionType(x) for x in (args.type or ["bgp"]))
    vxlan = None
    if args.vni_pool is not None:
        vxlan = t.VxlanPool(args.vni_pool[0], args.vni_pool[1], args.udp_port or m.DEFAULT_VXLAN_PORT,
                            args.mtu or m.DEFAULT_VXLAN_MTU)
    return t.Policy(
        name=args.name, kind=t.PolicyKind(args.kind), endpoint=args.endpoint, sites=tuple(args.site or ()),
        selector=dict(args.selector or ()), hubs=tuple(args.hub or ()), reflectors=tuple(args.reflector or ()),
        types=types, bgp=bgp_params(None, args) if m.ConnectionType.BGP in types else None, vxlan=vxlan,
        admin_state=m.AdminState(args.admin_state or "up"), description=args.description or "")


POLICY_COLUMNS = ("NAME", "KIND", "ENDPOINT", "SITES", "SELECTOR", "CENTRES", "TYPES", "PARAMS", "VERSION")


def policy_row(msg: tpb.TopologyPolicy) -> list[str]:
    p = twire.policy_from_pb(msg)
    params = _params_text(p.bgp, None)
    if p.vxlan is not None:
        params += (", " if params else "") + f"vni {p.vxlan.vni_first}-{p.vxlan.vni_last}"
    return [p.name, p.kind.value, p.endpoint, ",".join(p.sites), pairs(p.selector), ",".join(p.hubs + p.reflectors),
            ",".join(x.value for x in p.types), params, str(p.version)]


def policy_create(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.stub(tgrpc.PolicyServiceStub).CreatePolicy(twire.policy_to_pb(new_policy(args)), timeout=ctl.timeout)
    ctl.show_one(reply, POLICY_COLUMNS, policy_row)


def policy_list(ctl: Ctl, args: Namespace) -> None:
    policies = all_pages(ctl.stub(tgrpc.PolicyServiceStub).ListPolicies, tpb.ListPoliciesRequest(), "policies",
                         ctl.timeout)
    ctl.show(policies, POLICY_COLUMNS, policy_row)


def policy_show(ctl: Ctl, args: Namespace) -> None:
    status = ctl.stub(tgrpc.PolicyServiceStub).GetPolicyStatus(tpb.GetPolicyRequest(name=args.name),
                                                               timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(status)
        return
    print(format_table(POLICY_COLUMNS, [policy_row(status.policy)]))
    print()
    print(format_fields([("members", ", ".join(status.members) or "none"),
                         ("connections", str(len(status.expected))),
                         ("pending", ", ".join(status.pending) or "none (every connection is stored)")]))
    for note in status.notes:
        print(f"note: {note}")
    if status.expected:
        print()
        print(format_table(CONNECTION_COLUMNS, [connection_row(c) for c in status.expected]))


def policy_delete(ctl: Ctl, args: Namespace) -> None:
    reply = ctl.stub(tgrpc.PolicyServiceStub).DeletePolicy(
        tpb.DeletePolicyRequest(name=args.name, version=args.version or 0), timeout=ctl.timeout)
    if ctl.output == "json":
        ctl.print_json(reply)
    else:
        print(f"deleted topology policy {args.name} at revision {reply.revision}; the leader now deletes the "
              "connections it made")


COMMANDS: dict[str, Command] = {
    "policy create": policy_create,
    "policy list": policy_list,
    "policy show": policy_show,
    "policy delete": policy_delete,
}

EPILOGS = {
    "policy create": """examples:
  isthmusctl policy create core --kind full-mesh --endpoint gw --selector tier=core --hold-time 30
  isthmusctl policy create edge --kind hub-and-spoke --endpoint gw --hub hub-a --hub hub-b --selector role=edge
  isthmusctl policy create ibgp --kind route-reflector --endpoint gw --reflector rr1 --selector as=64512
  isthmusctl policy create l2 --kind full-mesh --endpoint vtep --site a --site b --type vxlan --vni-pool 5000-5999
""",
}


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    cli = Parsers(top, EPILOGS)
    group = cli.group(groups, "policy", "topology policies: groups of sites joined by full mesh, hub and spoke or "
                      "route reflectors, expanded into connections by the coordinator")
    p = cli.command(group, "policy create", "create a topology policy")
    p.add_argument("name", metavar="NAME", help="policy name: a DNS label, unique")
    p.add_argument("--kind", required=True, choices=[k.value for k in t.PolicyKind],
                   help="full-mesh: every member with every other; hub-and-spoke: the hubs with each other and "
                   "every other member with every hub; route-reflector: the reflectors with each other and every "
                   "other member a client of every reflector (BGP)")
    p.add_argument("--endpoint", required=True, metavar="EP",
                   help="the endpoint of each member site that the connections join")
    p.add_argument("--site", action="append", metavar="S", help="a member site, repeatable")
    add_pairs(p, "--selector", "members by label: every site with all of these labels, repeatable")
    p.add_argument("--hub", action="append", metavar="S", help="hub-and-spoke: a hub site, repeatable")
    p.add_argument("--reflector", action="append", metavar="S", help="route-reflector: a reflector site, repeatable")
    p.add_argument("--type", action="append", choices=[x.value for x in m.ConnectionType],
                   help="connection type, repeatable (default bgp)")
    add_peering_params(p)
    p.add_argument("--vni-pool", type=vni_pool, metavar="FIRST-LAST", help="VXLAN: the VNIs the tunnels take")
    p.add_argument("--admin-state", choices=[a.value for a in m.AdminState], help="up (default) or down")
    p.add_argument("--description", metavar="TEXT", help="free text, copied to each connection")
    cli.command(group, "policy list", "list topology policies")
    p = cli.command(group, "policy show", "show a policy, its members, the connections it makes and the pairs it "
                    "skips (and why)")
    p.add_argument("name", metavar="NAME", help="policy name")
    p = cli.command(group, "policy delete", "delete a policy: the leader deletes the connections it made, only those")
    p.add_argument("name", metavar="NAME", help="policy name")
    add_version(p)

