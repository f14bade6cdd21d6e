"""isthmusctl's ``apply``, ``diff``, ``plan`` and ``get``: the network's objects from and to declarative files.

``apply`` is not one etcd transaction (etcd takes at most 128 operations in one, and each object's write keeps
the API's own checks): it validates the whole file set first and writes nothing if any document is refused,
then writes object by object in dependency order, each write conditional on the version read. It is
idempotent and resumable: stopped midway, running it again does only what is left.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from argparse import Namespace
from typing import Any

from isthmus.core import topology as t
from isthmus.core.wire import network as wire
from isthmus.core.wire import topology as twire
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
from isthmus.v1 import api_pb2, topology_pb2, topology_pb2_grpc

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
    return state


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


def change_line(c: Change) -> str:
    sign = {"create": "+", "update": "~", "delete": "-"}[c.action]
    fields = f" ({', '.join(c.fields)})" if c.fields else ""
    return f"{sign} {c.kind.lower()} {c.name}{fields}"


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


def _write(ctl: Ctl, c: Change) -> None:
    """One change through the API; the version read guards each update."""
    o, timeout = c.obj, ctl.timeout
    if c.kind == "Site":
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
    pruned_policies = {c.name for c in todo if c.kind == "Policy" and c.action == "delete"}
    for c in todo:
        if c.action == "delete" and c.kind in ("Endpoint", "Site") and pruned_policies:
            _wait_policies_gone(ctl, pruned_policies)
            pruned_policies = set()
        try:
            _write(ctl, c)
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


GET_KINDS = {"sites": "Site", "endpoints": "Endpoint", "connections": "Connection", "policies": "Policy"}


def get(ctl: Ctl, args: Namespace) -> None:
    unknown = [k for k in args.kinds if k not in GET_KINDS]
    if unknown:
        raise CtlError(f"KIND: {unknown[0]!r} is not one of {', '.join(GET_KINDS)}")
    kinds = [GET_KINDS[k] for k in args.kinds] if args.kinds else list(ORDER)
    state = read_state(ctl)
    if ctl.output == "json":
        print(json.dumps([document_of(k, o) for k in ORDER if k in kinds for _, o in sorted(state.objects[k].items())],
                         indent=2))
        return
    sys.stdout.write(dump(state, kinds))


COMMANDS: dict[str, Command] = {"apply": apply, "diff": diff, "plan": plan, "get": get}

EPILOG = """file format: YAML documents, each {kind: Site|Endpoint|Connection|Policy, spec: {...}}, as get writes them
(see docs/topologies.md). Every document of every file is checked before anything is written.
"""


def add_parsers(groups: Subparsers, top: list[argparse.ArgumentParser]) -> None:
    for name, help_text in (
        ("apply", "make the stored sites, endpoints, connections and policies match the files (validated as a "
                  "whole first: nothing is written if any document is refused)"),
        ("diff", "show what apply would create, update and delete; writes nothing"),
        ("plan", "show the peering changes at each site that apply would make (policies expanded as the "
                 "coordinator expands them), and which BGP sessions and tunnels reset; writes nothing"),
    ):
        p = groups.add_parser(name, help=help_text, description=help_text, parents=top, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
        p.set_defaults(command=name)
        p.add_argument("-f", "--file", action="append", required=True, metavar="FILE|DIR",
                       help="a YAML file, or a directory of *.yaml, *.yml, *.json files (recursively); repeatable")
        p.add_argument("--prune", action="store_true",
                       help="also delete the stored objects the files do not name (a policy's connections are its "
                            "own: they go with the policy)")
    p = groups.add_parser("get", help="write the stored objects as documents that apply takes back (-o yaml, the "
                          "default, or -o json)", parents=top, allow_abbrev=False)
    p.set_defaults(command="get")
    p.add_argument("kinds", nargs="*", metavar="KIND",
                   help=f"what to write: {', '.join(GET_KINDS)} (default: all)")

