"""The global views model: global quota limits and the limits granted to each region, the quota and capacity
views across regions, routing domains, and the usage and address reports agents send.

It holds no protobuf: ``isthmus.core.wire.views`` converts at the edge. Usage and capacity reports are kept in
the field-for-field JSON form that etcd also stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

# project -> resource -> {"in_use": n, "limit": n, "recent": x, "grant": n}: one region's usage report
UsageReport: TypeAlias = dict[str, dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class QuotaLimit:
    """A global limit of one project and resource across regions (-1: none)."""

    project: str
    resource: str
    hard: int
    soft: int
    version: int = 0


@dataclass(frozen=True)
class QuotaTarget:
    """What a region is told for one project and resource: the limit to apply now (-2: report usage only)."""

    project: str
    resource: str
    limit: int
    grant: int  # the grant's sequence number: the region reports which grant is in force


@dataclass
class RegionUsage:
    """One region's line of the quota view of a project and resource."""

    region: str
    known: bool  # the region reported this resource
    usage: int = 0
    limit: int = 0
    target: int = 0
    setting: int = 0
    reason: str = ""
    stale: bool = False
    updated_unix_ms: int = 0


@dataclass
class ResourceQuota:
    resource: str
    hard: int
    soft: int
    total: int
    headroom: int
    soft_exceeded: bool
    regions: list[RegionUsage] = field(default_factory=list)


@dataclass
class ProjectQuota:
    project: str
    resources: list[ResourceQuota] = field(default_factory=list)


_CAPACITY_COUNTS = ("vcpus", "vcpus_used", "ram_mb", "ram_mb_used", "instances")


@dataclass
class RegionCapacity:
    region: str = ""
    compute_known: bool = False
    vcpus: int = 0
    vcpus_used: int = 0
    ram_mb: int = 0
    ram_mb_used: int = 0
    instances: int = 0
    network_objects: dict[str, int] = field(default_factory=dict)
    stale: bool = False
    updated_unix_ms: int = 0
    source: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RegionCapacity:
        """The stored form: the report's JSON (64-bit numbers as strings), fields it does not know ignored."""
        out = cls(region=str(d.get("region", "")), compute_known=bool(d.get("compute_known", False)),
                  network_objects={str(k): int(v) for k, v in dict(d.get("network_objects", {})).items()},
                  stale=bool(d.get("stale", False)), updated_unix_ms=int(d.get("updated_unix_ms", 0)),
                  source=str(d.get("source", "")))
        for name in _CAPACITY_COUNTS:
            setattr(out, name, int(d.get(name, 0)))
        return out


@dataclass
class Capacity:
    regions: list[RegionCapacity]
    total: RegionCapacity


@dataclass(frozen=True)
class NetworkRef:
    region: str
    network: str


@dataclass
class RoutingDomain:
    """Networks of several regions that reach each other: their addresses must not clash."""

    name: str
    networks: list[NetworkRef] = field(default_factory=list)
    description: str = ""
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        """The stored form (the contract's JSON form, empty fields left out; the version is etcd's)."""
        d: dict[str, Any] = {"name": self.name} if self.name else {}
        if self.networks:
            d["networks"] = [{k: v for k, v in (("region", n.region), ("network", n.network)) if v}
                             for n in self.networks]
        if self.description:
            d["description"] = self.description
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], version: int = 0) -> RoutingDomain:
        return cls(name=str(d.get("name", "")),
                   networks=[NetworkRef(str(n.get("region", "")), str(n.get("network", "")))
                             for n in d.get("networks", [])],
                   description=str(d.get("description", "")), version=version)


@dataclass(frozen=True)
class AddressReport:
    """One part of a delta of a region's addresses as its agent sent it, records not yet checked.

    ``upserts`` are the records' JSON forms; ``removes`` (kind, id); ``full``: the region holds exactly the
    upserts of every part of this delta; ``more``: another part of the same ``seq`` follows.
    """

    seq: int
    full: bool = False
    more: bool = False
    upserts: tuple[dict[str, Any], ...] = ()
    removes: tuple[tuple[str, str], ...] = ()
