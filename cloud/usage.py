"""A project's quota usage and limits in one region (Nova, Neutron), and the region's capacity: what
isthmus's views and global quotas read and set."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from openstack import exceptions as os_exceptions
from openstack.connection import Connection

from isthmus.cloud.neutron import NEUTRON_PAGE_SIZE, list_items
from isthmus.cloud.session import SpecError, calls, field_text, has_service, region_name, request

log = logging.getLogger(__name__)

NOVA_QUOTA_RESOURCES = ("instances", "cores", "ram", "key_pairs", "server_groups")
NEUTRON_QUOTA_RESOURCES = ("networks", "subnets", "ports", "floatingips", "security_groups", "security_group_rules",
                           "routers")
NETWORK_OBJECTS = ("networks", "subnets", "ports", "routers", "floatingips", "security_groups")  # capacity counts
# No microversion header means 2.1 too; said anyway because os-hypervisors/detail loses vcpus, memory_mb, ... at 2.88.
NOVA_MICROVERSION = "2.1"

# Neutron's quota API names resources in the singular (and counts routers and floating IPs only with its L3 plugin).
_NEUTRON_QUOTA_NAMES = {"networks": "network", "subnets": "subnet", "ports": "port", "floatingips": "floatingip",
                        "security_groups": "security_group", "security_group_rules": "security_group_rule",
                        "routers": "router"}
# Nova's quota-set detail says 0 in use for key pairs whatever exists: they belong to users, and Nova counts them
# only when one is created (nova/quota.py, DbQuotaDriver._get_usages).
_NOVA_UNCOUNTED = frozenset({"key_pairs"})
_L3_COLLECTIONS = frozenset({"routers", "floatingips"})  # absent (404) from a Neutron without its L3 plugin


def _project_path(project_id: str) -> str:
    if not project_id or not isinstance(project_id, str):
        raise SpecError(f"project id {project_id!r}: must be a non-empty string")
    return urllib.parse.quote(project_id, safe="")


def project_usage(conn: Connection, project_id: str, resources: Iterable[str]) -> dict[str, tuple[int, int]]:
    """What project ``project_id`` uses in this region, and its limits: resource -> (in use, limit), -1 unlimited.

    ``resources``: names of NOVA_QUOTA_RESOURCES (Nova's quota sets with usage, os-quota-sets/{project}/detail)
    and NEUTRON_QUOTA_RESOURCES (Neutron's quotas/{project}/details, the quota_details extension). In use is
    what the service counts plus what it has reserved (being created right now). Left out, without an error:
    unknown names; resources of a service the region's catalog lacks; resources the service does not count:
    Nova's key_pairs (its quota-set detail always says 0 in use: key pairs belong to users), Neutron's routers
    and floatingips without its L3 plugin, all Neutron resources without quota_details.

    Nova counts instances, cores and ram from its cells' databases, not from compute nodes: a region without
    compute nodes (or cells beyond cell0) says 0 in use, correctly, with the limits it enforces.

    Raises SpecError for a project Nova does not know (Nova checks ids with Keystone, HTTP 400; Neutron takes
    any id and gives the default limits) or credentials that are refused; CloudError when a service fails or
    cannot be reached.
    """
    wanted = set(resources)
    nova = [r for r in NOVA_QUOTA_RESOURCES if r in wanted and r not in _NOVA_UNCOUNTED]
    neutron = [r for r in NEUTRON_QUOTA_RESOURCES if r in wanted]
    path = _project_path(project_id)
    usage: dict[str, tuple[int, int]] = {}
    with calls(conn, f"quota usage of project {project_id}"):
        if nova and has_service(conn, "compute"):
            quota_set = request(conn, "compute", "GET", f"/os-quota-sets/{path}/detail",
                                microversion=NOVA_MICROVERSION).get("quota_set") or {}
            for name in nova:
                entry = quota_set.get(name)
                if isinstance(entry, dict) and "limit" in entry:
                    usage[name] = (int(entry.get("in_use") or 0) + int(entry.get("reserved") or 0),
                                   int(entry["limit"]))
        if neutron and has_service(conn, "network"):
            try:
                quota = request(conn, "network", "GET", f"/quotas/{path}/details").get("quota") or {}
            except os_exceptions.NotFoundException:  # no quota_details: a quota driver that does not count
                quota = {}
            for name in neutron:
                entry = quota.get(_NEUTRON_QUOTA_NAMES[name])
                if isinstance(entry, dict) and "limit" in entry:
                    usage[name] = (int(entry.get("used") or 0) + int(entry.get("reserved") or 0),
                                   int(entry["limit"]))
    return usage


def _check_limits(limits: Mapping[str, int]) -> None:
    known = (*NOVA_QUOTA_RESOURCES, *NEUTRON_QUOTA_RESOURCES)
    for name, value in limits.items():
        if name not in known:
            raise SpecError(f"quota resource {name!r}: not one of {', '.join(known)}")
        if not isinstance(value, int) or isinstance(value, bool) or value < -1:
            raise SpecError(f"quota limit {name}={value!r}: must be an integer >= -1 (-1: unlimited)")


def set_project_limits(conn: Connection, project_id: str, limits: Mapping[str, int]) -> dict[str, int]:
    """Give project ``project_id`` these quota limits in this region (-1: unlimited); what changed, name -> limit.

    Each service (NOVA_QUOTA_RESOURCES to Nova, NEUTRON_QUOTA_RESOURCES to Neutron) is read first and written
    only with the limits that differ, in one request: limits already in force cost one read and no write.
    Skipped (and not in the answer): resources of a service the catalog lacks, and resources the service has
    no quota for (Neutron's routers and floatingips without its L3 plugin).

    A limit below what is in use is set, and the region then refuses new resources of that kind (isthmus
    cuts a region's limit when a global hard limit is lowered). Neutron takes such a limit as it is (it checks
    only when asked to, with ``check_limit`` of its quota-check-limit extension) and refuses the next create
    with 409 "Quota exceeded". Nova refuses it (400 "must be greater than or equal to already used and
    reserved") unless the update says ``force``, which this one always does; Nova then refuses the next
    create with 403 "Quota exceeded". ``key_pairs`` is a per-user limit: the project's value applies to each
    of its users.

    Raises SpecError for an unknown resource name, a limit that is not an integer >= -1, or a project Nova
    does not know; CloudError when a service fails or cannot be reached (what was written before stays: a
    second call completes it).
    """
    _check_limits(limits)
    path = _project_path(project_id)
    changed: dict[str, int] = {}
    with calls(conn, f"quota limits of project {project_id}"):
        nova = {k: v for k, v in limits.items() if k in NOVA_QUOTA_RESOURCES}
        if nova and has_service(conn, "compute"):
            current = request(conn, "compute", "GET", f"/os-quota-sets/{path}",
                              microversion=NOVA_MICROVERSION).get("quota_set") or {}
            diff = {k: v for k, v in nova.items() if k in current and int(current[k]) != v}
            if diff:
                request(conn, "compute", "PUT", f"/os-quota-sets/{path}", json={"quota_set": {**diff, "force": True}},
                        microversion=NOVA_MICROVERSION)
                changed.update(diff)
        neutron = {k: v for k, v in limits.items() if k in NEUTRON_QUOTA_RESOURCES}
        if neutron and has_service(conn, "network"):
            current = request(conn, "network", "GET", f"/quotas/{path}").get("quota") or {}
            diff = {k: v for k, v in neutron.items()
                    if _NEUTRON_QUOTA_NAMES[k] in current and int(current[_NEUTRON_QUOTA_NAMES[k]]) != v}
            if diff:
                request(conn, "network", "PUT", f"/quotas/{path}",
                        json={"quota": {_NEUTRON_QUOTA_NAMES[k]: v for k, v in diff.items()}})
                changed.update(diff)
    if changed:
        log.info("%s: quota limits of project %s set: %s", region_name(conn), project_id,
                 ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    return changed


def _hypervisor_capacity(conn: Connection) -> dict[str, Any] | None:
    """Nova's hypervisors summed, as os-hypervisors/statistics did; None when there are none (or Nova refuses:
    the policy is admin only)."""
    try:
        hypervisors = request(conn, "compute", "GET", "/os-hypervisors/detail",
                              microversion=NOVA_MICROVERSION).get("hypervisors") or []
    except os_exceptions.ForbiddenException:
        return None
    if not hypervisors:
        return None

    def total(key: str) -> int:
        return sum(int(h.get(key) or 0) for h in hypervisors)

    return {"source": "hypervisors", "vcpus": total("vcpus"), "vcpus_used": total("vcpus_used"),
            "ram_mb": total("memory_mb"), "ram_mb_used": total("memory_mb_used"), "instances": total("running_vms")}


def _placement_capacity(conn: Connection) -> dict[str, Any] | None:
    """Placement's VCPU and MEMORY_MB inventories and allocations summed; None when no resource provider has
    them (or Placement refuses: admin only)."""
    try:
        providers = request(conn, "placement", "GET", "/resource_providers").get("resource_providers") or []
    except os_exceptions.ForbiddenException:
        return None
    totals = dict.fromkeys(("vcpus", "vcpus_used", "ram_mb", "ram_mb_used"), 0)
    consumers: set[str] = set()
    known = False
    for provider in providers:
        uuid = urllib.parse.quote(field_text(provider, "uuid"), safe="")
        inventories = request(conn, "placement", "GET", f"/resource_providers/{uuid}/inventories") \
            .get("inventories") or {}
        if "VCPU" not in inventories and "MEMORY_MB" not in inventories:
            continue  # not a compute node (a sharing storage pool, a nested device, ...)
        known = True
        totals["vcpus"] += int((inventories.get("VCPU") or {}).get("total") or 0)
        totals["ram_mb"] += int((inventories.get("MEMORY_MB") or {}).get("total") or 0)
        allocations = request(conn, "placement", "GET", f"/resource_providers/{uuid}/allocations") \
            .get("allocations") or {}
        for consumer, allocation in allocations.items():
            resources = allocation.get("resources") or {}
            totals["vcpus_used"] += int(resources.get("VCPU") or 0)
            totals["ram_mb_used"] += int(resources.get("MEMORY_MB") or 0)
            if resources.get("VCPU") or resources.get("MEMORY_MB"):
                consumers.add(consumer)
    if not known:
        return None
    return {"source": "placement", **totals, "instances": len(consumers)}


def capacity(conn: Connection, *, page_size: int = NEUTRON_PAGE_SIZE) -> dict[str, Any]:
    """The region's compute capacity and use, and how many network objects it holds (every project's).

    ``{"compute_known": bool, "source": "hypervisors" | "placement" | "unknown", "vcpus": n, "vcpus_used": n,
    "ram_mb": n, "ram_mb_used": n, "instances": n, "network_objects": {"networks": n, "subnets": n, "ports": n,
    "routers": n, "floatingips": n, "security_groups": n}}``.

    Compute: Nova's hypervisors summed (os-hypervisors/detail) when it has any; else Placement's compute
    resource providers when the catalog has Placement (vcpus and ram_mb: the inventories' totals, overcommit
    not applied, so used may exceed them as with hypervisors; instances: the consumers holding VCPU or
    MEMORY_MB, a migration in progress included); else compute_known False, source "unknown" and zeros (a
    Nova without compute nodes lists no hypervisors). A 403 (not admin) counts as not knowing.

    Network objects are counted by listing ids only (``fields=id``), ``page_size`` per request; a collection
    this Neutron lacks (routers and floating IPs without its L3 plugin) and a region without Neutron count 0.

    Raises CloudError when a service fails or cannot be reached; SpecError when the credentials are refused.
    """
    result: dict[str, Any] = {"compute_known": False, "source": "unknown", "vcpus": 0, "vcpus_used": 0,
                              "ram_mb": 0, "ram_mb_used": 0, "instances": 0}
    counts = dict.fromkeys(NETWORK_OBJECTS, 0)
    with calls(conn, "capacity"):
        compute = _hypervisor_capacity(conn) if has_service(conn, "compute") else None
        if compute is None and has_service(conn, "placement"):
            compute = _placement_capacity(conn)
        if compute is not None:
            result.update(compute, compute_known=True)
        if has_service(conn, "network"):
            for name in NETWORK_OBJECTS:
                counts[name] = sum(1 for _ in list_items(conn, name, (), page_size,
                                                         optional=name in _L3_COLLECTIONS))
    result["network_objects"] = counts
    return result
