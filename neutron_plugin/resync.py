"""Drift between Neutron's l2-gateways and isthmus', reported and repaired in both directions.

Neutron is the reference for what was made through it: an l2-gateway or connection Neutron has and
isthmus lacks (or holds differently) is made in isthmus again; one isthmus holds as made through Neutron
(owner ``neutron``) that Neutron no longer has is deleted from isthmus. What was made through isthmus'
own API (no owner) is never touched. neutron-server runs this at start (``[isthmus] resync_on_start``);
on demand, on a host with neutron.conf::

    python3 -m isthmus.neutron_plugin.resync --config-file /etc/neutron/neutron.conf [--dry-run]

It prints one line per difference and what was done, and exits 1 when a repair failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from isthmus.neutron_plugin.client import Coordinator, CoordinatorError
from isthmus.neutron_plugin.mapping import connection_request, gateway_request

SERVICE = "BorderGatewayService"
OWNER = "neutron"


@dataclasses.dataclass
class Drift:
    kind: str        # l2-gateway, l2-gateway-connection
    id: str
    problem: str     # missing in isthmus, differs, left in isthmus
    action: str = "" # created, updated, deleted, reported (dry run), failed: ...

    def line(self) -> str:
        return f"{self.kind} {self.id}: {self.problem}; {self.action}"


@dataclasses.dataclass
class Report:
    drifts: list[Drift] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> list[Drift]:
        return [d for d in self.drifts if d.action.startswith("failed")]

    def summary(self) -> str:
        if not self.drifts:
            return "no drift"
        return f"{len(self.drifts)} differences, {len(self.failed)} not repaired: " + "; ".join(
            d.line() for d in self.drifts[:10])


def _comparable_gateway(gw: dict[str, Any]) -> tuple[Any, ...]:
    devices = []
    for d in gw.get("devices", []):
        interfaces = tuple(sorted((i.get("name", ""), tuple(sorted(int(x) for x in i.get("segmentation_id", []))))
                                  for i in d.get("interfaces", [])))
        devices.append((d.get("device_id", ""), int(d.get("segmentation_id", 0) or 0), interfaces))
    return gw.get("name", ""), gw.get("project_id", ""), tuple(sorted(devices))


def run(neutron: Any, coordinator: Coordinator, *, repair: bool, context: Any = None) -> Report:
    """Compare ``neutron`` (networking-l2gw's plugin or DB mixin) with isthmus; repair unless a dry run."""
    from neutron_lib import context as n_context

    ctx = context or n_context.get_admin_context()
    report = Report()

    def act(drift: Drift, method: str, request: dict[str, Any]) -> None:
        report.drifts.append(drift)
        if not repair:
            drift.action = "reported (dry run)"
            return
        try:
            coordinator.call(SERVICE, method, request, on_behalf_of="neutron resync")
            drift.action = {"Create": "created", "Update": "updated", "Delete": "deleted"}[method[:6]]
        except CoordinatorError as exc:
            drift.action = f"failed: {exc}"

    n_gateways = {g["id"]: gateway_request(g) for g in neutron.get_l2_gateways(ctx)}
    n_conns = {c["id"]: connection_request(c) for c in neutron.get_l2_gateway_connections(ctx)}
    i_gateways = {g["id"]: g for g in coordinator.call_all(SERVICE, "ListL2Gateways", "l2_gateways")}
    i_conns = {c["id"]: c
               for c in coordinator.call_all(SERVICE, "ListL2GatewayConnections", "l2_gateway_connections")}

    # Deletions first (connections before their gateways), then creations (gateways before connections).
    for cid, conn in sorted(i_conns.items()):
        if conn.get("owner") == OWNER and cid not in n_conns:
            act(Drift("l2-gateway-connection", cid, "made through Neutron, which no longer has it"),
                "DeleteL2GatewayConnection", {"id": cid})
    for gid, gw in sorted(i_gateways.items()):
        if gw.get("owner") == OWNER and gid not in n_gateways:
            act(Drift("l2-gateway", gid, "made through Neutron, which no longer has it"),
                "DeleteL2Gateway", {"id": gid})
    for gid, gw in sorted(n_gateways.items()):
        if gid not in i_gateways:
            act(Drift("l2-gateway", gid, "missing in isthmus"), "CreateL2Gateway", {**gw, "owner": OWNER})
        elif _comparable_gateway(gw) != _comparable_gateway(i_gateways[gid]):
            version = i_gateways[gid].get("version", 0)
            act(Drift("l2-gateway", gid, "differs in isthmus"), "UpdateL2Gateway", {**gw, "version": version})
    for cid, conn in sorted(n_conns.items()):
        if cid not in i_conns:
            act(Drift("l2-gateway-connection", cid, "missing in isthmus"), "CreateL2GatewayConnection",
                {**conn, "owner": OWNER})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m isthmus.neutron_plugin.resync",
        description="Compare Neutron's l2-gateways and connections with isthmus' and repair the difference.")
    parser.add_argument("--config-file", action="append", default=[], metavar="PATH",
                        help="neutron.conf (and any other file neutron-server reads); repeatable")
    parser.add_argument("--dry-run", action="store_true", help="report the differences, change nothing")
    args = parser.parse_args(argv)

    from networking_l2gw.db.l2gateway.l2gateway_db import L2GatewayMixin
    from neutron.common import config as common_config

    from isthmus.neutron_plugin import config

    common_config.register_common_config_options()
    config.register()
    common_config.init([f"--config-file={path}" for path in args.config_file])
    report = run(L2GatewayMixin(), config.coordinator(), repair=not args.dry_run)
    for drift in report.drifts:
        print(drift.line())
    print(report.summary() if report.drifts else "no drift: Neutron and isthmus agree")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
