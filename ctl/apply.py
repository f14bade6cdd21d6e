"""isthmusctl's ``apply``, ``diff``, ``plan`` and ``get``: the network's objects from and to declarative files.

``apply`` is not one etcd transaction (etcd takes at most 128 operations in one, and each object's write keeps
the API's own checks): it validates the whole file set first and writes nothing if any document is refused,
then writes object by object in dependency order, each write conditional on the version read. It is
idempotent and resumable: stopped midway, running it again does only what is left.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from argparse import Namespace
from typing import Any

from isthmus.core import border as b
from isthmus.core import topology as t
from isthmus.core.wire import border as border_wire
from isthmus.core.wire import network as wire
from isthmus.core.wire import topology as twire
from isthmus.ctl import border_docs as bd
from isthmus.ctl.client import Command, Ctl, CtlError, all_pages
from isthmus.ctl.documents import (
    ORDER,
    Change,
    Document,
    FileSetError,
    State,
    changes,
    check_set,
    document_of,
    dump,
    load,
)
from isthmus.ctl.documents import peering_plan as plan_peerings
from isthmus.ctl.flags import Subparsers
from isthmus.v1 import api_pb2, l2gw_pb2, topology_pb2, topology_pb2_grpc

PRUNE_WAIT = 60.0  # seconds apply waits for the leader to delete the connections of pruned policies


def read_state(ctl: Ctl) -> State:
    """Everything the files may name, as stored now (versions kept)."""
    state = State()
    for msg in all_pages(ctl.sites().ListSites, api_pb2.ListSitesRequest(), "sites", ctl.timeout):
        state.add("Site", wire.site_from_pb(msg))
    for msg in all_pages(ctl.endpoints().ListEndpoints, api_pb2.ListEndpointsRequest(), "endpoints", ctl.timeout):
        state.add("Endpoint", wire.endpoint_from_pb(msg))
    for msg in all_pages(ctl.connections().ListConnections, api_pb2.ListConnectionsRequest(), "connections",
                         ctl.timeout):
        state.add("Connection", wire.connection_from_pb(msg))
    policies = ctl.stub(topology_pb2_grpc.PolicyServiceStub).ListPolicies
    for msg in all_pages(policies, topology_pb2.ListPoliciesRequest(), "policies", ctl.timeout):
        state.add("Policy", twire.policy_from_pb(msg))
    _read_border(ctl, state)
    return state


def _read_border(ctl: Ctl, state: State) -> None:
    """The border objects, named as files name them; those Neutron made are kept apart (``State.foreign``)."""
    stub = ctl.border()
    devices = {d.id: d for d in map(border_wire.device_from_pb, all_pages(
        stub.ListGatewayDevices, l2gw_pb2.ListGatewayDevicesRequest(), "devices", ctl.timeout))}
    gateways = {g.id: g for g in map(border_wire.gateway_from_pb, all_pages(
        stub.ListL2Gateways, l2gw_pb2.ListL2GatewaysRequest(), "l2_gateways", ctl.timeout))}
    conns = list(map(border_wire.l2conn_from_pb, all_pages(
        stub.ListL2GatewayConnections, l2gw_pb2.ListL2GatewayConnectionsRequest(), "l2_gateway_connections",
        ctl.timeout)))
    for dev in devices.values():
        state.add(bd.DEVICE, bd.device_doc(dev))
    for gw in gateways.values():
        doc = bd.gateway_doc(gw, devices)
        if gw.owner:
            state.foreign[(bd.GATEWAY, bd.ident(bd.GATEWAY, doc))] = f"l2-gateway {gw.id} was made by {gw.owner}"
            for slot in doc.devices:
                state.foreign_uses[(bd.DEVICE, str(slot.device))] = f"l2-gateway {gw.id} (made by {gw.owner})"
        else:
            state.add(bd.GATEWAY, doc)
    for conn in conns:
        cdoc = bd.connection_doc(conn, gateways)
        if conn.owner:
            gateway = (bd.GATEWAY, bd.gateway_key(cdoc))
            state.foreign_uses[gateway] = f"l2-gateway-connection {conn.id} (made by {conn.owner})"
            state.foreign[(bd.L2CONN, bd.ident(bd.L2CONN, cdoc))] = (f"l2-gateway-connection {conn.id} was made by "
                                                                     f"{conn.owner}")
        else:
            state.add(bd.L2CONN, cdoc)


def checked(ctl: Ctl, args: Namespace) -> tuple[list[Document], State]:
    """The file set, validated as a whole against the stored state; CtlError listing every error."""
    try:
        docs = load(args.file)
    except FileSetError as exc:
        raise CtlError(str(exc)) from None
    stored = read_state(ctl)
    errors = check_set(docs, stored, args.prune)
    if errors:
        raise CtlError(str(FileSetError(errors)))
    return docs, stored


LABELS = {bd.DEVICE: "gateway-device", bd.GATEWAY: "l2-gateway", bd.L2CONN: "l2-gateway-connection"}


def change_line(c: Change) -> str:
    sign = {"create": "+", "update": "~", "delete": "-"}[c.action]
    fields = f" ({', '.join(c.fields)})" if c.fields else ""
    return f"{sign} {LABELS.get(c.kind, c.kind.lower())} {c.name}{fields}"


def _change_json(c: Change) -> dict[str, Any]:
    return {"action": c.action, "kind": c.kind, "name": c.name, "fields": list(c.fields)}


def diff(ctl: Ctl, args: Namespace) -> None:
    docs, stored = checked(ctl, args)
    todo = changes(docs, stored, args.prune)
    if ctl.output == "json":
        print(json.dumps([_change_json(c) for c in todo], indent=2))
        return
    for c in todo:
        print(change_line(c))
    print(f"{len(todo)} change(s)" if todo else "no changes")


def plan(ctl: Ctl, args: Namespace) -> None:
    docs, stored = checked(ctl, args)
    rows = plan_peerings(docs, stored, args.prune)
    border = sum(1 for c in changes(docs, stored, args.prune) if c.kind in bd.BORDER_KINDS)
    if border:
        # The tunnels of l2-gateway-connections are peerings too, but the planner's border rule is not run here.
        print(f"isthmusctl: {border} border gateway change(s) not in this plan: their tunnels are not predicted "
              "(see isthmusctl diff; after apply: isthmusctl l2-gateway-connection status)", file=sys.stderr)
    if ctl.output == "json":
        print(json.dumps([{"site": r.site, "connection": r.connection, "change": r.change, "fields": list(r.fields),
                           "reset": r.reset} for r in rows], indent=2))
        return
    print(format_plan(rows))


def format_plan(rows: list[t.PeeringChange]) -> str:
    """The peering changes per site, and which sessions or tunnels reset."""
    if not rows:
        return "no peering changes"
    lines, site = [], ""
    for r in rows:
        if r.site != site:
            site = r.site
            lines.append(f"site {site}:")
        if r.change == "added":
            lines.append(f"  + {r.connection}")
        elif r.change == "removed":
            lines.append(f"  - {r.connection} (session or tunnel ends)")
        else:
            effect = "session or tunnel resets" if r.reset else "in place, no reset"
            lines.append(f"  ~ {r.connection}: {', '.join(r.fields)} ({effect})")
    count = {k: sum(1 for r in rows if r.change == k) for k in ("added", "changed", "removed")}
    resets = sum(1 for r in rows if r.change == "changed" and r.reset)
    lines.append(f"{count['added']} added, {count['changed']} changed ({resets} reset), {count['removed']} removed "
                 f"at {len({r.site for r in rows})} site(s)")
    return "\n".join(lines)


def _write_border(ctl: Ctl, c: Change, ids: dict[tuple[str, str], str]) -> None:
    """One border change; ``ids`` maps (kind, name) to the coordinator's id, and learns the ids of creates."""
    o, timeout, stub = c.obj, ctl.timeout, ctl.border()
    if c.action == "delete":
        call = {bd.DEVICE: stub.DeleteGatewayDevice, bd.GATEWAY: stub.DeleteL2Gateway,
                bd.L2CONN: stub.DeleteL2GatewayConnection}[c.kind]
        call(l2gw_pb2.DeleteByIdRequest(id=o.id, version=o.version), timeout=timeout)
        return
    if c.kind == bd.DEVICE:
        msg = border_wire.device_to_pb(dataclasses.replace(bd.device_model(o, o.id), version=o.version))
        made = (stub.CreateGatewayDevice if c.action == "create" else stub.UpdateGatewayDevice)(msg, timeout=timeout)
    elif c.kind == bd.GATEWAY:
        model = bd.gateway_model(o, lambda ref: ids[(bd.DEVICE, str(ref))])
        call = stub.CreateL2Gateway if c.action == "create" else stub.UpdateL2Gateway
        made = call(border_wire.gateway_to_pb(model), timeout=timeout)
    else:  # an l2-gateway-connection is only created: every field of it names it or is fixed
        conn = b.L2GatewayConnection("", ids[(bd.GATEWAY, bd.gateway_key(o))], o.network_id, o.segmentation_id,
                                     o.project_id)
        made = stub.CreateL2GatewayConnection(border_wire.l2conn_to_pb(conn), timeout=timeout)
    ids[(c.kind, c.name)] = made.id


def _write(ctl: Ctl, c: Change, ids: dict[tuple[str, str], str]) -> None:
    """One change through the API; the version read guards each update."""
    o, timeout = c.obj, ctl.timeout
    if c.kind in bd.BORDER_KINDS:
        _write_border(ctl, c, ids)
    elif c.kind == "Site":
        stub = ctl.sites()
        if c.action == "create":
            stub.CreateSite(wire.site_to_pb(o), timeout=timeout)
        elif c.action == "update":
            stub.UpdateSite(wire.site_to_pb(o), timeout=timeout)
        else:
            stub.DeleteSite(api_pb2.DeleteSiteRequest(name=o.name, version=o.version), timeout=timeout)
    elif c.kind == "Endpoint":
        stub = ctl.endpoints()
        if c.action == "create":
            stub.CreateEndpoint(wire.endpoint_to_pb(o), timeout=timeout)
        elif c.action == "update":
            stub.UpdateEndpoint(wire.endpoint_to_pb(o), timeout=timeout)
        else:
            stub.DeleteEndpoint(api_pb2.DeleteEndpointRequest(site=o.site, name=o.name, version=o.version),
                                timeout=timeout)
    elif c.kind == "Connection":
        stub = ctl.connections()
        if c.action == "create":
            stub.CreateConnection(wire.connection_to_pb(o), timeout=timeout)
        elif c.action == "update":
            stub.UpdateConnection(wire.connection_to_pb(o), timeout=timeout)
        else:
            stub.DeleteConnection(api_pb2.DeleteConnectionRequest(name=o.name, version=o.version), timeout=timeout)
    else:
        stub = ctl.stub(topology_pb2_grpc.PolicyServiceStub)
        if c.action == "create":
            stub.CreatePolicy(twire.policy_to_pb(o), timeout=timeout)
        elif c.action == "update":
            stub.UpdatePolicy(twire.policy_to_pb(o), timeout=timeout)
        else:
            stub.DeletePolicy(topology_pb2.DeletePolicyRequest(name=o.name, version=o.version), timeout=timeout)


def _wait_policies_gone(ctl: Ctl, names: set[str]) -> None:
    """Wait until the leader deleted the connections of the pruned policies, which hold their endpoints."""
    deadline = time.monotonic() + PRUNE_WAIT
    while True:
        left = [c for c in read_state(ctl).owned if c.policy in names]
        if not left:
            return
        if time.monotonic() > deadline:
            raise CtlError(f"the leader has not yet deleted {len(left)} connection(s) of the pruned policies "
                           f"{', '.join(sorted(names))}; run apply again later to finish")
        time.sleep(0.5)


def apply(ctl: Ctl, args: Namespace) -> None:
    docs, stored = checked(ctl, args)
    todo = changes(docs, stored, args.prune)
    done = 0
    ids = {(k, name): o.id for k in bd.BORDER_KINDS for name, o in stored.objects[k].items()}
    pruned_policies = {c.name for c in todo if c.kind == "Policy" and c.action == "delete"}
    for c in todo:
        if c.action == "delete" and c.kind in ("Endpoint", "Site") and pruned_policies:
            _wait_policies_gone(ctl, pruned_policies)
            pruned_policies = set()
        try:
            _write(ctl, c, ids)
        except Exception as exc:
            print(f"isthmusctl: {change_line(c)}: failed after {done} of {len(todo)} change(s); the changes "
                  "before it are written, running apply again does the rest", file=sys.stderr)
            raise exc
        done += 1
        if ctl.output != "json":
            print(change_line(c))
    if ctl.output == "json":
        print(json.dumps([_change_json(c) for c in todo], indent=2))
    else:
        print(f"applied {done} change(s)" if done else "no changes")


GET_KINDS = {"sites": "Site", "endpoints": "Endpoint", "connections": "Connection", "policies": "Policy",
             "gateway-devices": bd.DEVICE, "l2-gateways": bd.GATEWAY, "l2-gateway-connections": bd.L2CONN}


def get(ctl: Ctl, args: Namespace) -> None:
    unknown = [k for k in args.kinds if k not in GET_KINDS]
    if unknown:
        raise CtlError(f"KIND: {unknown[0]!r} is not one of {', '.join(GET_KINDS)}")
    kinds = [GET_KINDS[k] for k in args.kinds] if args.kinds else list(ORDER)
    state = read_state(ctl)
    for (kind, name), ids in sorted(state.twins.items()):
        print(f"isthmusctl: {LABELS[kind]} {name}: the coordinator holds {len(ids)} of these ({', '.join(ids)}); "
              "only the last is written", file=sys.stderr)
    if ctl.output == "json":
        print(json.dumps([document_of(k, o) for k in ORDER if k in kinds for _, o in sorted(state.objects[k].items())],
                         indent=2))
        return
    sys.stdout.write(dump(state, kinds))


COMMANDS: dict[str, Command] = {"apply": apply, "diff": diff, "plan": plan, "get": get}

EPILOG = """file format: YAML documents, each {kind: Site|Endpoint|Connection|Policy|GatewayDevice|L2Gateway|
L2GatewayConnection, spec: {...}}, as get writes them (see docs/topologies.md). Border objects are named, not
given by id: a gateway device by site and name, an l2-gateway by project_id and name (its devices as
{site, name}), an l2-gateway-connection by project_id, l2_gateway (the gateway's name) and network_id.
Every document of every file is checked before anything is written.
"""


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    for name, help_text in (
        ("apply", "make the stored sites, endpoints, connections, policies and border gateways (gateway devices, "
                  "l2-gateways, l2-gateway-connections) match the files (validated as a whole first: nothing is "
                  "written if any document is refused)"),
        ("diff", "show what apply would create, update and delete; writes nothing"),
        ("plan", "show the peering changes at each site that apply would make (policies expanded as the "
                 "coordinator expands them), and which BGP sessions and tunnels reset; the tunnels of border "
                 "gateway changes are not predicted (a note on stderr counts those changes); writes nothing"),
    ):
        p = groups.add_parser(name, help=help_text, description=help_text, parents=top, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        p.set_defaults(command=name)
        p.add_argument("-f", "--file", action="append", required=True, metavar="FILE|DIR",
                       help="a YAML file, or a directory of *.yaml, *.yml, *.json files (recursively); repeatable")
        p.add_argument("--prune", action="store_true",
                       help="also delete the stored objects the files do not name (a policy's connections are its "
                            "own: they go with the policy; border objects Neutron made are left to Neutron)")
    p = groups.add_parser("get", help="write the stored objects as documents that apply takes back (-o yaml, the "
                          "default, or -o json)", parents=top, allow_abbrev=False)
    p.set_defaults(command="get")
    p.add_argument("kinds", nargs="*", metavar="KIND",
                   help=f"what to write: {', '.join(GET_KINDS)} (default: all)")

