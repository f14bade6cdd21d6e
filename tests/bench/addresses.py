"""Scenario 7, address index: the coordinator's IP/MAC index (coordinator/multisite/addresses.py) at 100,000 ports.

In this process, no etcd: N VM ports over R regions, one network per 100
ports with an IPv4 and an IPv6 subnet and a router whose gateway (and its
port) is on the region's external network, one floating IP (and its port)
per 10 ports. Half the ports are dual-stack. Each network is in one routing
domain spanning one network of every region; the tenants' IPv4 ranges are
reused across domains (16 /24s per region), as tenants do, so most IPv4
addresses are held by several ports without clashing. A few clashes are
planted and must be found exactly.

Agents' reports are validated (check_record) and applied as deltas of 500
records, the regions interleaved, the first delta of each a full resync.
References: validating the same records (what a report costs anyway), a
linear scan over every record for the same queries (no index; the answers
must agree), one grouping pass over every address for conflicts, and the
records themselves for memory (the index's own is measured with tracemalloc
over a second build).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import ipaddress
import random
import sys
import time
import tracemalloc
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from isthmus.coordinator.multisite.addresses import AddressDelta, AddressIndex, AddressRecord, check_record

from .context import Context
from .figures import Figure, ScenarioResult, latency_figures, median

NAME = "address_index"
TITLE = "Address index"
DELTA = 500  # records per delta
PORTS_PER_NETWORK = 100
FIP_EVERY = 10  # one floating IP per this many ports
REUSED_RANGES = 16  # distinct tenant /24s per region, reused by the networks of the other domains
LOOKUP_P99_GOAL_MS = 1.0
CIDR_P99_GOAL_MS = 10.0
CONFLICTS_RUNS = 5

Json = dict[str, Any]


def _v4(value: int) -> str:
    return ".".join(str((value >> s) & 255) for s in (24, 16, 8, 0))


def _mac(i: int) -> str:
    # Unique and spread like neutron's random fa:16:3e:xx:xx:xx (an odd multiplier permutes 24 bits).
    v = (i * 0x9E3779) & 0xFFFFFF
    return f"fa:16:3e:{v >> 16:02x}:{(v >> 8) & 255:02x}:{v & 255:02x}"


def workload(ports: int, regions: int) -> tuple[dict[str, list[Json]], dict[str, list[tuple[str, str]]], int]:
    """Every region's records as its agent reports them, the routing domains, and the number of planted clashes."""
    per_region = max(1, ports // regions)
    networks = max(1, -(-per_region // PORTS_PER_NETWORK))
    reports: dict[str, list[Json]] = {}
    domains: dict[str, list[tuple[str, str]]] = defaultdict(list)
    mac = 0
    fips_per_region = per_region // FIP_EVERY
    ext_block = 1 << (fips_per_region + 2 * networks + 2).bit_length()  # the region's external range
    ext_base = (198 << 24) | (18 << 16)  # 198.18.0.0/15, benchmarking addresses
    first_ports: list[Json] = []  # region 0, network 0: the originals the planted clashes copy
    first_fip = ""
    for r in range(regions):
        region = f"r{r:02d}"
        out: list[Json] = []
        ext = f"{region}-ext"
        ext_start = ext_base + r * ext_block
        ext_next = ext_start + 1
        out.append({"kind": "subnet", "id": f"{ext}-v4", "region": region, "project": "admin", "network": ext,
                    "cidr": f"{_v4(ext_start)}/{32 - ext_block.bit_length() + 1}"})
        n_ports = 0
        for k in range(networks):
            net = f"{region}-net{k:04d}"
            domains[f"tenant{k:04d}"].append((region, net))
            project = f"project{k:04d}"
            v4_base = (10 << 24) | ((k % REUSED_RANGES) << 16) | ((r % 256) << 8)
            v6 = f"2001:db8:{r:x}:{k:x}"
            out.append({"kind": "subnet", "id": f"{net}-v4", "region": region, "project": project, "network": net,
                        "cidr": f"{_v4(v4_base)}/24"})
            out.append({"kind": "subnet", "id": f"{net}-v6", "region": region, "project": project, "network": net,
                        "cidr": f"{v6}::/64"})
            gw_ip = _v4(ext_next)
            ext_next += 1
            out.append({"kind": "router_gateway", "id": f"{net}-router", "region": region, "project": project,
                        "network": ext, "ips": [gw_ip]})
            mac += 1
            out.append({"kind": "port", "id": f"{net}-router-gw", "region": region, "project": "", "network": ext,
                        "ips": [gw_ip], "mac": _mac(mac), "device": "network:router_gateway"})
            for h in range(min(PORTS_PER_NETWORK, per_region - n_ports)):
                n_ports += 1
                mac += 1
                ips = [_v4(v4_base + 2 + h)] + ([f"{v6}::{h + 2:x}"] if h % 2 == 0 else [])
                port = {"kind": "port", "id": f"{net}-vm{h:03d}", "region": region, "project": project,
                        "network": net, "ips": ips, "mac": _mac(mac), "device": f"vm-{region}-{k}-{h}",
                        "name": f"port-{h}"}
                out.append(port)
                if r == 0 and k == 0:
                    first_ports.append(port)
                if n_ports % FIP_EVERY == 0:
                    fip_ip = _v4(ext_next)
                    ext_next += 1
                    first_fip = first_fip or fip_ip
                    fip_id = f"{net}-fip{h:03d}"
                    out.append({"kind": "floating_ip", "id": fip_id, "region": region, "project": project,
                                "network": ext, "ips": [fip_ip], "device": port["id"]})
                    mac += 1
                    out.append({"kind": "port", "id": f"{fip_id}-port", "region": region, "project": project,
                                "network": ext, "ips": [fip_ip], "mac": _mac(mac), "device": "network:floatingip"})
        reports[region] = out
    # The planted clashes, all in tenant0000 (network 0 of every region) or the global domain.
    planted = 0
    for r in range(1, regions):
        if r < len(first_ports):
            region = f"r{r:02d}"
            reports[region].append({"kind": "port", "id": "planted-dup-ip", "region": region, "project": "x",
                                    "network": f"{region}-net0000", "ips": [first_ports[r]["ips"][0]]})
            planted += 1
    if regions > 1 and first_ports and first_fip:
        reports["r01"] += [
            {"kind": "port", "id": "planted-dup-mac", "region": "r01", "project": "x", "network": "r01-net0000",
             "mac": first_ports[0]["mac"]},
            {"kind": "floating_ip", "id": "planted-dup-fip", "region": "r01", "project": "x", "network": "r01-ext",
             "ips": [first_fip]},
            {"kind": "subnet", "id": "planted-overlap", "region": "r01", "project": "x", "network": "r01-net0000",
             "cidr": "10.0.0.128/25"},  # inside r00-net0000's 10.0.0.0/24
        ]
        planted += 3
    return reports, dict(domains), planted


def deltas_of(records: dict[str, list[AddressRecord]]) -> list[AddressDelta]:
    """Each region's records in deltas of DELTA, the first full, the regions taking turns as concurrent agents do."""
    per_region = {region: [AddressDelta(region, i + 1, tuple(recs[o:o + DELTA]), full=i == 0)
                           for i, o in enumerate(range(0, max(len(recs), 1), DELTA))]
                  for region, recs in records.items()}
    out: list[AddressDelta] = []
    for i in range(max(len(ds) for ds in per_region.values())):
        out += [ds[i] for ds in per_region.values() if i < len(ds)]
    return out


class Scan:
    """The reference for lookups: every record's addresses parsed to integers once, then a linear scan per query."""

    def __init__(self, records: list[AddressRecord]) -> None:
        self.rows = []
        for r in records:
            ips = tuple((a.version, int(a)) for a in map(ipaddress.ip_address, r.ips))
            net = ipaddress.ip_network(r.cidr) if r.cidr else None
            span = (net.version, int(net.network_address), int(net.broadcast_address)) if net else None
            self.rows.append((r, ips, span))

    def ip(self, query: str) -> set[tuple[str, str, str]]:
        q = ipaddress.ip_address(query)
        v, n = q.version, int(q)
        return {r.key for r, ips, span in self.rows
                if (v, n) in ips or (span is not None and span[0] == v and span[1] <= n <= span[2])}

    def mac(self, query: str) -> set[tuple[str, str, str]]:
        q = query.lower()
        return {r.key for r, _, _ in self.rows if r.mac == q}

    def cidr(self, query: str) -> set[tuple[str, str, str]]:
        q = ipaddress.ip_network(query)
        v, lo, hi = q.version, int(q.network_address), int(q.broadcast_address)
        return {r.key for r, ips, span in self.rows
                if any(iv == v and lo <= n <= hi for iv, n in ips)
                or (span is not None and span[0] == v and span[1] <= hi and lo <= span[2])}


def timed(fn: Callable[[str], Any], queries: list[str]) -> tuple[list[float], list[Any]]:
    seconds, answers = [], []
    for q in queries:
        t0 = time.perf_counter()
        answer = fn(q)
        seconds.append(time.perf_counter() - t0)
        answers.append(answer)
    return seconds, answers


def group_everything(records: list[AddressRecord]) -> int:
    """The reference for conflicts: one pass grouping every record by each address and MAC (no domains yet)."""
    by: dict[str, list[AddressRecord]] = defaultdict(list)
    for r in records:
        for ip in r.ips:
            by[ip].append(r)
        if r.mac:
            by[r.mac].append(r)
    return sum(len(v) > 1 for v in by.values())


def deep_size(records: list[AddressRecord]) -> int:
    """Bytes of the records and of every object they hold (each object once: interned names are shared)."""
    seen: set[int] = set()
    total = 0
    for rec in records:
        for obj in (rec, rec.ips, *rec.ips, rec.kind, rec.id, rec.region, rec.project, rec.network, rec.mac,
                    rec.cidr, rec.device, rec.name):
            if id(obj) not in seen:
                seen.add(id(obj))
                total += sys.getsizeof(obj)
    return total


async def build(deltas: list[AddressDelta]) -> tuple[AddressIndex, float]:
    """Apply every delta; the seconds spent in apply (the event loop gets a turn between deltas)."""
    ix = AddressIndex()
    spent = 0.0
    for d in deltas:
        t0 = time.perf_counter()
        ix.apply(d)
        spent += time.perf_counter() - t0
        await asyncio.sleep(0)
    return ix, spent


async def run(ctx: Context) -> ScenarioResult:
    s = ctx.sizes
    n_ports, n_regions, n_queries = s.address_ports, s.address_regions, s.address_queries
    reports, domains, planted = workload(n_ports, n_regions)
    n_records = sum(len(v) for v in reports.values())
    res = ScenarioResult(NAME, TITLE, {"ports": n_ports, "regions": n_regions, "records": n_records,
                                       "delta_records": DELTA, "queries_per_kind": n_queries})
    size = f"{n_ports:,} ports, {n_regions} regions"

    # Validation, the reference for the build rate; under tracemalloc a second time for the records' memory.
    t0 = time.perf_counter()
    records = {region: [check_record(d) for d in ds] for region, ds in reports.items()}
    check_s = time.perf_counter() - t0
    await asyncio.sleep(0)
    deltas = deltas_of(records)
    every = [r for recs in records.values() for r in recs]
    ctx.say(f"{NAME}: {n_records:,} records in {len(deltas):,} deltas; validated in {check_s:.2f}s")

    ix, build_s = await build(deltas)
    t0 = time.perf_counter()
    ix.set_domains(domains)
    domains_s = time.perf_counter() - t0
    stats = ix.stats()
    if len(ix) != n_records:
        raise RuntimeError(f"the index holds {len(ix)} records, {n_records} were reported")
    fig = Figure(size, f"build: records applied/s (deltas of {DELTA})", "1/s", n_records / build_s,
                 "check_record: the same records validated/s", n_records / check_s, better="higher")
    res.figures.append(fig)
    ctx.say(f"{NAME}: built in {build_s:.2f}s ({n_records / build_s:,.0f} records/s); {stats}")

    # Lookups: addresses, MACs and /24s that exist, in random order; MACs in upper case half the time.
    rng = random.Random(7)
    ports = [r for r in every if r.kind == "port" and r.ips and r.mac]
    subnets = [r for r in every if r.kind == "subnet" and r.cidr.endswith("/24")]
    picks = [rng.choice(ports) for _ in range(n_queries)]
    queries = {
        "IP": [rng.choice(p.ips) for p in picks],
        "MAC": [p.mac.upper() if i % 2 else p.mac for i, p in enumerate(picks)],
        "CIDR /24": [rng.choice(subnets).cidr for _ in range(n_queries)],
    }
    scan = Scan(every)
    scans: dict[str, Callable[[str], set[tuple[str, str, str]]]] = {"IP": scan.ip, "MAC": scan.mac,
                                                                   "CIDR /24": scan.cidr}
    n_ref = max(3, min(20, n_queries // 50))
    raw: dict[str, Any] = {}
    for what, qs in queries.items():
        ours, answers = timed(ix.lookup, qs)
        ref, ref_answers = timed(scans[what], qs[:n_ref])
        for q, got, want in zip(qs, answers, ref_answers, strict=False):
            if {r.key for r in got} != want:
                raise RuntimeError(f"lookup({q!r}) found {len(got)} records, the linear scan {len(want)}")
        goal = CIDR_P99_GOAL_MS if what.startswith("CIDR") else LOOKUP_P99_GOAL_MS
        res.figures += latency_figures(size, f"lookup by {what}", ours,
                                       f"linear scan over every record ({n_ref} queries)", ref, p99_goal_ms=goal)
        raw[f"lookup_{what}_ms"] = [round(x * 1000, 4) for x in ours]
        raw[f"scan_{what}_ms"] = [round(x * 1000, 4) for x in ref]
        raw[f"lookup_{what}_answers_mean"] = sum(len(x) for x in answers) / len(answers)
        ctx.say(f"{NAME}: {len(qs)} lookups by {what}: p99 {res.figures[-2].value:.3f} ms")
        await asyncio.sleep(0)

    # Conflicts: exactly the planted ones. The first call after the build looks at every shared address; later
    # calls only at those whose holders changed, here after a delta of DELTA changed ports each time.
    ref_s = []
    for _ in range(CONFLICTS_RUNS):
        t0 = time.perf_counter()
        group_everything(every)
        ref_s.append(time.perf_counter() - t0)
        await asyncio.sleep(0)
    t0 = time.perf_counter()
    found = ix.conflicts()
    first_s = time.perf_counter() - t0
    if len(found) != planted:
        raise RuntimeError(f"conflicts() found {len(found)} clashes, {planted} were planted: "
                           f"{[(c.kind, c.value, c.domain) for c in found][:20]}")
    region = min(records)
    churn = [r for r in records[region] if r.kind == "port" and r.ips][:DELTA]
    after_s = []
    for i in range(CONFLICTS_RUNS):
        changed = tuple(dataclasses.replace(r, name=f"renamed-{i}") for r in churn)
        if ix.apply(AddressDelta(region, ix.last_seq(region) + 1, changed)) != len(changed):
            raise RuntimeError("the churn delta did not change its records")
        t0 = time.perf_counter()
        again_found = ix.conflicts()
        after_s.append(time.perf_counter() - t0)
        if len(again_found) != planted:
            raise RuntimeError(f"conflicts() found {len(again_found)} clashes after a delta, {planted} planted")
        await asyncio.sleep(0)
    reference = "one pass grouping every record by address and MAC"
    res.figures += [
        Figure(size, "conflicts(), first call after the build", "ms", first_s * 1000, reference,
               median(ref_s) * 1000),
        Figure(size, f"conflicts() after a delta of {len(churn)} changed ports (median of {CONFLICTS_RUNS})", "ms",
               median(after_s) * 1000, reference, median(ref_s) * 1000),
    ]
    ctx.say(f"{NAME}: conflicts() {first_s * 1000:.1f} ms first, {median(after_s) * 1000:.1f} ms after a delta")

    # Memory: a second build under tracemalloc over the same records counts the index alone; the records are
    # measured object by object (tracemalloc over their creation would take most of the scenario's time).
    del ix, scan
    gc.collect()
    records_bytes = deep_size(every)
    again_deltas = deltas_of(records)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ix2, _ = await build(again_deltas)
        ix2.set_domains(domains)
        index_bytes = tracemalloc.get_traced_memory()[0] - before
        del ix2
    finally:
        tracemalloc.stop()
    res.figures.append(Figure(size, "index memory on top of the records", "MB", index_bytes / 2**20,
                              "the records themselves (AddressRecord, strings, tuples)", records_bytes / 2**20))
    ctx.say(f"{NAME}: index {index_bytes / 2**20:.1f} MB over records of {records_bytes / 2**20:.1f} MB")

    res.raw = {**raw, "conflicts_first_ms": round(first_s * 1000, 3),
               "conflicts_after_delta_ms": [round(x * 1000, 3) for x in after_s],
               "grouping_pass_ms": [round(x * 1000, 3) for x in ref_s], "build_s": round(build_s, 3),
               "check_s": round(check_s, 3), "set_domains_ms": round(domains_s * 1000, 3), "stats": stats,
               "planted_conflicts": planted, "index_bytes": index_bytes, "records_bytes": records_bytes}
    res.notes += [
        f"{n_records:,} records: {stats['port']:,} ports (VM ports, floating IP ports, router gateway ports), "
        f"{stats['floating_ip']:,} floating IPs, {stats['router_gateway']:,} router gateways, "
        f"{stats['subnet']:,} subnets; {stats['ips']:,} distinct IPs, {stats['macs']:,} MACs, "
        f"{len(domains):,} routing domains (set_domains took {domains_s * 1000:.1f} ms).",
        f"Index memory per record: {index_bytes / n_records:.0f} bytes (tracemalloc over a second build), on top of "
        f"{records_bytes / n_records:.0f} bytes of the record itself with its strings and tuple (sys.getsizeof of "
        "each object once).",
        "Most IPv4 addresses are held by several ports of different routing domains (the tenants' ranges are "
        "reused), so the first conflicts() after the build (or after the domains change) visits most IPv4 records; "
        "later calls visit only the shared addresses whose holders changed (here: a delta renaming "
        f"{len(churn)} ports of {region} before each call). Each call found exactly the {planted} planted clashes. "
        "A CIDR /24 query finds every port of every network reusing that range "
        f"({raw['lookup_CIDR /24_answers_mean']:.0f} records on average).",
        "The linear-scan reference runs on a few queries only and must give the same answers as the index.",
    ]
    return res
