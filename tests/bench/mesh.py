"""Scenario 4, full mesh: every pair of N sites connected, from empty until every agent applied every peering.

N agents are connected to an empty configuration; the harness then creates
the N(N-1)/2 connections through the API with concurrent clients and waits
until every agent holds and has applied its N-1 peerings. Memory is the
coordinator's peak RSS (VmHWM) over its RSS before the mesh.

The reference is etcd alone storing the same data: as many transactions,
each writing the four keys a connection create writes (the connection, its
pair index key and two endpoint reference keys, with values of the same
size), with the same number of concurrent clients, on a second, fresh etcd
started for it; its memory per connection is that etcd's peak RSS over its
RSS before.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from isthmus.coordinator.etcd import EmbeddedEtcd
from isthmus.coordinator.registry import encode
from isthmus.core import model as m

from .cluster import RawEtcd, quiesce
from .context import Context
from .figures import CpuMeter, Figure, ScenarioResult, proc_status
from .fleet import Fleet
from .workload import Api, ApiPool, RunTiming, build_sites, connection_keys, raw_txn, run_clients, spread_pairs

NAME = "mesh"
RATIO_GOAL = 3.0
STATUS_QUIET = 5.5  # seconds etcd's revision stands still: longer than the coordinator's status pacing (5 s)
TITLE = "Full mesh"


def _mb(kb: int) -> float:
    return kb / 1024


async def run(ctx: Context) -> ScenarioResult:
    s = ctx.sizes
    n = s.mesh_sites
    total = n * (n - 1) // 2
    res = ScenarioResult(NAME, TITLE, {"sites": n, "connections": total, "clients": s.mesh_clients})
    async with ctx.cluster(NAME) as cluster:
        pool = ApiPool(cluster, s.mesh_clients)
        fleet = Fleet(cluster.address, ctx.agent_dir(NAME))
        create: asyncio.Task[RunTiming] | None = None
        try:
            sites = await build_sites(pool, "m", n)
            agents = await fleet.add(sites)
            await fleet.wait(agents, lambda a: a.synced, timeout=60 + n, what="synced")
            pairs = spread_pairs(n)
            names = [f"{sites[i]}--{sites[j]}" for i, j in pairs]

            # The reference, on an etcd of its own so that its memory is that of the same data alone.
            ref_etcd = EmbeddedEtcd(cluster.work / "etcd-reference")
            endpoint = ref_etcd.start()
            try:
                raw = [RawEtcd(cluster, endpoint) for _ in range(s.mesh_clients)]
                sample = encode(m.Connection(names[0], m.EndpointRef(sites[0], "gw"), m.EndpointRef(sites[1], "gw"),
                                             m.ConnectionType.BGP, bgp=m.BgpParams(address_families=("ipv4-unicast",))))
                assert ref_etcd.proc is not None
                ref_pid = ref_etcd.proc.pid
                ref_before = proc_status(ref_pid).get("VmRSS", 0)
                ref_db_before = await raw[0].db_size()
                writes = [partial(raw_txn, raw, connection_keys("/bench/", name, sites[i], sites[j], sample))
                          for (i, j), name in zip(pairs, names, strict=True)]
                meter = CpuMeter({"load": 0, "etcd (reference)": ref_pid}).start()
                ref_timing = await run_clients(s.mesh_clients, writes)
                res.cpu_seconds["etcd reference"] = meter.stop()
                ref_peak = proc_status(ref_pid).get("VmHWM", 0)
                ref_db = await raw[0].db_size()
            finally:
                await ref_etcd.astop()
            ctx.say(f"{NAME}: reference: {total} 4-put transactions in {ref_timing.seconds:.1f}s")

            etcd = RawEtcd(cluster)
            before = proc_status(cluster.coordinator_pid)
            etcd_before = proc_status(cluster.etcd_pid)
            await quiesce(etcd, STATUS_QUIET)
            db_before = await etcd.db_size()
            rev_before = await etcd.revision()
            ctx.say(f"{NAME}: creating {total} connections among {n} sites with {s.mesh_clients} clients")
            pids = {"load": 0, "coordinator": cluster.coordinator_pid, "etcd": cluster.etcd_pid}
            meter = CpuMeter(pids).start()
            t0 = time.perf_counter()
            create = asyncio.create_task(pool.run([
                partial(Api.create_connection, name=name, a=(sites[i], "gw"), b=(sites[j], "gw"))
                for (i, j), name in zip(pairs, names, strict=True)]))
            t_api = await _progress(ctx, create, fleet, n)
            done = await fleet.wait(
                agents, lambda a: len(a.reconciler.desired.peerings) == n - 1
                and a.reconciler.applied_revision >= a.reconciler.desired.revision,
                timeout=120 + total * 0.05, what=f"holding and applying {n - 1} peerings")
            elapsed = done - t0
            res.cpu_seconds["isthmus mesh"] = meter.stop()
            after = proc_status(cluster.coordinator_pid)
            etcd_after = proc_status(cluster.etcd_pid)
            # The status write-backs of convergence belong to the mesh: the database is measured after them.
            await quiesce(etcd, STATUS_QUIET)
            db_after = await etcd.db_size()
            written = await etcd.written("/isthmus/v1/", rev_before + 1, await etcd.revision())
            status_keys = await etcd.count("/isthmus/v1/status/")
        finally:
            if create is not None:
                create.cancel()
            await fleet.stop()
    size = f"{n} sites, {total} connections"
    res.figures.append(Figure(size, "empty -> every peering applied on every agent", "s", elapsed,
                              f"{total} raw etcd txns of the same 4 keys, same clients", ref_timing.seconds,
                              target=f"ratio <= {RATIO_GOAL:g}", met=elapsed <= RATIO_GOAL * ref_timing.seconds))
    res.figures.append(Figure(size, "time per connection", "ms", elapsed / total * 1000,
                              "raw etcd txn per connection", ref_timing.seconds / total * 1000))
    coord_peak = after.get("VmHWM", 0)
    per_conn = (coord_peak - before.get("VmRSS", 0)) / total
    ref_per_conn = (ref_peak - ref_before) / total
    res.figures.append(Figure(size, "coordinator memory per connection (peak RSS growth)", "kB", per_conn,
                              "etcd memory per connection, same keys (peak RSS growth)", ref_per_conn))
    res.figures.append(Figure(size, "coordinator peak RSS (VmHWM)", "MB", _mb(coord_peak),
                              "reference etcd peak RSS (VmHWM)", _mb(ref_peak)))
    growth, ref_growth = (db_after - db_before) / total / 1024, (ref_db - ref_db_before) / total / 1024
    res.figures.append(Figure(size, "etcd database growth per connection", "kB", growth,
                              "the same keys written directly", ref_growth, target=f"ratio <= {RATIO_GOAL:g}",
                              met=growth <= RATIO_GOAL * ref_growth,
                              positive=False))  # bbolt grows in steps: 0 at tiny sizes
    res.figures.append(Figure(size, "etcd database size after the mesh", "MB", db_after / 1e6,
                              "the reference's etcd after the same keys", ref_db / 1e6, positive=False))
    res.raw = {
        "api_phase_s": t_api - t0, "tail_after_last_create_s": done - t_api, "elapsed_s": elapsed,
        "reference_s": ref_timing.seconds,
        "coordinator_kb": {"rss_before": before.get("VmRSS", 0), "rss_after": after.get("VmRSS", 0),
                           "hwm_after": coord_peak},
        "etcd_kb": {"rss_before": etcd_before.get("VmRSS", 0), "rss_after": etcd_after.get("VmRSS", 0),
                    "hwm_after": etcd_after.get("VmHWM", 0)},
        "reference_etcd_kb": {"rss_before": ref_before, "hwm_after": ref_peak},
        "etcd_db_bytes": {"before": db_before, "after": db_after, "reference_before": ref_db_before,
                          "reference_after": ref_db},
        "status_keys": status_keys,
        "written_by_kind": written,  # {kind: [puts, bytes of keys and values]} over the mesh and its status traffic
    }
    res.notes.append(f"The API phase (all creates answered) took {t_api - t0:.1f} s; the agents finished "
                     f"{done - t_api:.1f} s after the last create. etcd's database grew from {db_before / 1e6:.1f} "
                     f"to {db_after / 1e6:.1f} MB (the reference's: {ref_db / 1e6:.1f} MB), measured once the "
                     "status write-backs of convergence are done (etcd's revision still for "
                     f"{STATUS_QUIET} s).")
    if written:
        shown = sorted(written.items(), key=lambda kv: -kv[1][1])
        res.notes.append("Written to etcd over the mesh, by kind of key (puts, MB of keys and values): " + ", ".join(
            f"{kind} {puts:,} / {size / 1e6:.2f}" for kind, (puts, size) in shown) + ".")
    return res


async def _progress(ctx: Context, create: asyncio.Task[RunTiming], fleet: Fleet, n: int) -> float:
    """Wait for the create task, saying every 10 s how far the agents are; returns perf_counter at its end."""
    while True:
        done, _ = await asyncio.wait([create], timeout=10)
        if done:
            create.result()
            return time.perf_counter()
        held = sum(len(a.reconciler.desired.peerings) for a in fleet.agents.values())
        ctx.say(f"{NAME}: agents hold {held // 2} of {n * (n - 1) // 2} connections' peerings")
