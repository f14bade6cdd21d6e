"""Netlink for the drivers: the one module that imports pyroute2 (the vxlan driver's devices, the bgp speaker's routes).

``IPRoute`` and ``NetlinkError`` are pyroute2's, for drivers that configure
links themselves; ``RouteTable`` keeps the routes isthmus installs in a routing
table of its own. Netlink calls block: use each object from one thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

__all__ = ["IPRoute", "NetlinkError", "RouteTable", "SyncResult"]

MAIN_TABLE = 254
FAMILIES = (socket.AF_INET, socket.AF_INET6)


@dataclass
class SyncResult:
    """What one ``RouteTable.sync`` did."""

    added: int = 0
    replaced: int = 0
    removed: int = 0
    foreign: tuple[str, ...] = ()  # wanted prefixes left alone: a route isthmus did not install is there


class RouteTable:
    """The routes isthmus installs: in table ``table`` with route protocol ``proto``, each via one gateway.

    Only routes of ``table`` whose protocol is ``proto`` and whose gateway is one
    of the caller's are ever replaced or removed; any other route is left alone,
    even for a prefix the caller wants (that prefix is then reported foreign).
    With a table other than main, ``ensure_rules`` adds the two policy rules that
    make the host use it: main without its default route first (so a learned
    route never overrides a more specific route of the host's own), then the table.
    """

    def __init__(self, table: int, proto: int, rule_priority: int) -> None:
        self.table, self.proto, self.rule_priority = table, proto, rule_priority
        self._ipr: Any = IPRoute()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ipr.close()

    def ensure_rules(self) -> None:
        """Add the policy rules for ``table`` that are missing (none for the main table). Raises NetlinkError."""
        if self.table == MAIN_TABLE:
            return
        for family in FAMILIES:
            have = {(r.get_attr("FRA_PRIORITY"), r.get_attr("FRA_TABLE") or r["table"])
                    for r in self._ipr.get_rules(family=family)}
            if (self.rule_priority, MAIN_TABLE) not in have:
                self._ipr.rule("add", table=MAIN_TABLE, priority=self.rule_priority, FRA_SUPPRESS_PREFIXLEN=0,
                               family=family)
            if (self.rule_priority + 1, self.table) not in have:
                self._ipr.rule("add", table=self.table, priority=self.rule_priority + 1, family=family)

    def ours(self) -> set[str]:
        """The prefixes of the table's routes that carry isthmus's protocol number."""
        return {prefix for prefix, (_gw, proto) in self.installed().items() if proto == self.proto}

    def installed(self) -> dict[str, tuple[str, int]]:
        """Every unicast route of the table: prefix -> (gateway or "", protocol)."""
        out: dict[str, tuple[str, int]] = {}
        for family in FAMILIES:
            for r in self._ipr.get_routes(table=self.table, family=family):
                if r["type"] != 1:  # RTN_UNICAST
                    continue
                dst = r.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                prefix = str(ipaddress.ip_network(f"{dst}/{r['dst_len']}", strict=False))
                out[prefix] = (r.get_attr("RTA_GATEWAY") or "", r["proto"])
        return out

    def sync(self, want: Mapping[str, str], gateways: set[str], keep: Collection[str] = ()) -> SyncResult:
        """Make the table hold ``want`` (prefix -> gateway) as far as isthmus owns it.

        ``gateways``: the caller's next hops; an isthmus route via any other
        (another speaker's) is neither replaced nor removed. Routes for the
        prefixes in ``keep`` are not removed now. Raises NetlinkError.
        """
        result = SyncResult()
        have = self.installed()
        foreign = []
        for prefix, gateway in sorted(want.items()):
            cur = have.get(prefix)
            if cur is not None and (cur[1] != self.proto or cur[0] not in gateways):
                foreign.append(prefix)
                continue
            if cur is not None and cur[0] == gateway:
                continue
            family = socket.AF_INET6 if ":" in prefix else socket.AF_INET
            self._ipr.route("replace", dst=prefix, gateway=gateway, table=self.table, proto=self.proto,
                            family=family)
            if cur is None:
                result.added += 1
            else:
                result.replaced += 1
        for prefix, (gateway, proto) in sorted(have.items()):
            if proto == self.proto and gateway in gateways and prefix not in want and prefix not in keep:
                family = socket.AF_INET6 if ":" in prefix else socket.AF_INET
                with contextlib.suppress(NetlinkError):  # already gone
                    self._ipr.route("del", dst=prefix, gateway=gateway, table=self.table, proto=self.proto,
                                    family=family)
                result.removed += 1
        result.foreign = tuple(foreign)
        return result
