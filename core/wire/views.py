"""The wire form of the global views contract (views.proto): protobuf <-> the views model.

Usage and capacity reports become the field-for-field JSON form that etcd stores; address records travel as
the JSON form of the coordinator's address index (``AddressRecord.to_json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from isthmus.core import views as v
from isthmus.v1 import views_pb2 as vpb


def quota_limit_from_pb(msg: vpb.QuotaLimit) -> v.QuotaLimit:
    return v.QuotaLimit(project=msg.project, resource=msg.resource, hard=msg.hard, soft=msg.soft,
                        version=msg.version)


def quota_limit_to_pb(limit: v.QuotaLimit) -> vpb.QuotaLimit:
    return vpb.QuotaLimit(project=limit.project, resource=limit.resource, hard=limit.hard, soft=limit.soft,
                          version=limit.version)


def quota_target_to_pb(target: v.QuotaTarget) -> vpb.QuotaTarget:
    return vpb.QuotaTarget(project=target.project, resource=target.resource, limit=target.limit,
                           grant=target.grant)


def project_quota_to_pb(quota: v.ProjectQuota) -> vpb.ProjectQuota:
    out = vpb.ProjectQuota(project=quota.project)
    for rq in quota.resources:
        out.resources.append(vpb.ResourceQuota(
            resource=rq.resource, hard=rq.hard, soft=rq.soft, total=rq.total, headroom=rq.headroom,
            soft_exceeded=rq.soft_exceeded,
            regions=[vpb.RegionUsage(region=u.region, known=u.known, usage=u.usage, limit=u.limit, target=u.target,
                                     setting=u.setting, reason=u.reason, stale=u.stale,
                                     updated_unix_ms=u.updated_unix_ms) for u in rq.regions]))
    return out


def region_capacity_to_pb(cap: v.RegionCapacity) -> vpb.RegionCapacity:
    return vpb.RegionCapacity(region=cap.region, compute_known=cap.compute_known, vcpus=cap.vcpus,
                              vcpus_used=cap.vcpus_used, ram_mb=cap.ram_mb, ram_mb_used=cap.ram_mb_used,
                              instances=cap.instances, network_objects=cap.network_objects, stale=cap.stale,
                              updated_unix_ms=cap.updated_unix_ms, source=cap.source)


def capacity_to_pb(capacity: v.Capacity) -> vpb.Capacity:
    return vpb.Capacity(regions=[region_capacity_to_pb(c) for c in capacity.regions],
                        total=region_capacity_to_pb(capacity.total))


def capacity_from_pb(cap: vpb.RegionCapacity) -> dict[str, Any]:
    """A region's capacity report in its stored form, without what the coordinator sets (time, staleness)."""
    body: dict[str, Any] = json_format.MessageToDict(cap, preserving_proto_field_name=True)
    body.pop("updated_unix_ms", None)
    body.pop("stale", None)
    return body


def usage_from_pb(report: vpb.UsageReport) -> v.UsageReport:
    return {p.project: {res: {"in_use": e.in_use, "limit": e.limit, "recent": e.recent, "grant": e.grant}
                        for res, e in p.resources.items()} for p in report.projects}


def address_report_from_pb(delta: vpb.AddressDelta) -> v.AddressReport:
    return v.AddressReport(
        seq=delta.seq, full=delta.full, more=delta.more,
        upserts=tuple(json_format.MessageToDict(rec, preserving_proto_field_name=True) for rec in delta.upserts),
        removes=tuple((k.kind, k.id) for k in delta.removes))


def address_record_to_pb(record: Mapping[str, Any]) -> vpb.AddressRecord:
    """From an address record's JSON form (``AddressRecord.to_json``)."""
    return vpb.AddressRecord(kind=record["kind"], id=record["id"], region=record["region"],
                             project=record.get("project", ""), network=record["network"],
                             ips=list(record.get("ips", ())), mac=record.get("mac", ""), cidr=record.get("cidr", ""),
                             device=record.get("device", ""), name=record.get("name", ""),
                             network_name=record.get("network_name", ""))


def address_conflict_to_pb(conflict: Mapping[str, Any]) -> vpb.AddressConflict:
    """From a conflict's JSON form (``Conflict.to_json``)."""
    return vpb.AddressConflict(kind=conflict["kind"], value=conflict["value"], domain=conflict["domain"],
                               records=[address_record_to_pb(r) for r in conflict["records"]])


def routing_domain_from_pb(msg: vpb.RoutingDomain) -> v.RoutingDomain:
    return v.RoutingDomain(name=msg.name, networks=[v.NetworkRef(n.region, n.network) for n in msg.networks],
                           description=msg.description, version=msg.version)


def routing_domain_to_pb(domain: v.RoutingDomain) -> vpb.RoutingDomain:
    return vpb.RoutingDomain(name=domain.name,
                             networks=[vpb.NetworkRef(region=n.region, network=n.network) for n in domain.networks],
                             description=domain.description, version=domain.version)
