"""Scenario 8, policy expansion: a hub-and-spoke of N sites with two hubs created by one ``isthmusctl apply``.

N sites with one endpoint each exist and their N agents are connected and synced; the harness then runs
``isthmusctl apply -f`` of a file holding one hub-and-spoke policy over all of them (the first two sites the
hubs) and waits until every agent holds and has applied its peerings (a spoke 2, a hub N-1). The leader
writes the 2N-3 connections one transaction each, in one sequence.

The reference is etcd alone storing the same data the way the leader does: as many transactions, one after
the other from one client, each writing the four keys a connection create writes (the connection, its pair
index key and two endpoint reference keys), on a second, fresh etcd.
"""

from __future__ import annotations

import asyncio
import sys
import time
from functools import partial
from pathlib import Path

from isthmus.coordinator.etcd import EmbeddedEtcd
from isthmus.coordinator.registry import encode
from isthmus.core import model as m

from .cluster import RawEtcd
from .context import Context
from .figures import CpuMeter, Figure, ScenarioResult
from .fleet import Fleet
from .workload import ApiPool, build_sites, connection_keys, raw_txn, run_clients

NAME = "policy"
TITLE = "Policy expansion"
CLIENTS = 16  # API clients building the sites (not measured)

POLICY = """kind: Policy
spec:
  name: star
  kind: hub-and-spoke
  endpoint: gw
  hubs: [{hubs}]
  sites: [{sites}]
  bgp: {{hold_time: 30}}
"""


async def _apply(address: str, path: Path) -> None:
    ctl = Path(sys.executable).with_name("isthmusctl")
    proc = await asyncio.create_subprocess_exec(str(ctl), "--coordinator", address, "apply", "-f", str(path),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"isthmusctl apply failed ({proc.returncode}): {err.decode()[-2000:]}")


def _want(sites: list[str], site: str) -> int:
    return len(sites) - 1 if site in sites[:2] else 2


async def run(ctx: Context) -> ScenarioResult:
    n = ctx.sizes.policy_sites
    total = 2 * n - 3
    res = ScenarioResult(NAME, TITLE, {"sites": n, "hubs": 2, "connections": total})
    async with ctx.cluster(NAME) as cluster:
        pool = ApiPool(cluster, CLIENTS)
        fleet = Fleet(cluster.address, ctx.agent_dir(NAME))
        try:
            sites = await build_sites(pool, "p", n)
            agents = await fleet.add(sites)
            await fleet.wait(agents, lambda a: a.synced, timeout=60 + n, what="synced")
            pairs = [(0, 1)] + [(h, s) for h in (0, 1) for s in range(2, n)]
            names = [f"star-{sites[i]}-{sites[j]}" for i, j in pairs]

            ref_etcd = EmbeddedEtcd(cluster.work / "etcd-reference")
            endpoint = ref_etcd.start()
            try:
                raw = [RawEtcd(cluster, endpoint)]
                sample = encode(m.Connection(names[0], m.EndpointRef(sites[0], "gw"), m.EndpointRef(sites[1], "gw"),
                                             m.ConnectionType.BGP, bgp=m.BgpParams(hold_time=30, address_families=(
                                                 "ipv4-unicast",)), policy="star"))
                writes = [partial(raw_txn, raw, connection_keys("/bench/", name, sites[i], sites[j], sample))
                          for (i, j), name in zip(pairs, names, strict=True)]
                ref_timing = await run_clients(1, writes)
            finally:
                await ref_etcd.astop()
            ctx.say(f"{NAME}: reference: {total} 4-put transactions, one client, in {ref_timing.seconds:.1f}s")

            path = cluster.work / "star.yaml"
            path.write_text(POLICY.format(hubs=", ".join(sites[:2]), sites=", ".join(sites)))
            pids = {"load": 0, "coordinator": cluster.coordinator_pid, "etcd": cluster.etcd_pid}
            meter = CpuMeter(pids).start()
            t0 = time.perf_counter()
            await _apply(cluster.address, path)
            t_apply = time.perf_counter()
            done = await fleet.wait(
                agents, lambda a: len(a.reconciler.desired.peerings) == _want(sites, a.site)
                and a.reconciler.applied_revision >= a.reconciler.desired.revision,
                timeout=120 + total * 0.2, what="holding and applying the policy's peerings")
            res.cpu_seconds["isthmus policy"] = meter.stop()
        finally:
            await fleet.stop()
    elapsed = done - t0
    size = f"{n} sites, 2 hubs, {total} connections"
    res.figures.append(Figure(size, "one apply -> every peering applied on every agent", "s", elapsed,
                              f"{total} raw etcd txns of the same 4 keys, one client", ref_timing.seconds))
    res.figures.append(Figure(size, "time per connection", "ms", elapsed / total * 1000,
                              "raw etcd txn per connection, one client", ref_timing.seconds / total * 1000))
    res.raw = {"apply_s": t_apply - t0, "elapsed_s": elapsed, "reference_s": ref_timing.seconds}
    res.notes.append(f"isthmusctl apply (validating the file against the stored state, then writing the policy) "
                     f"took {t_apply - t0:.1f} s; the leader then expanded the policy and the agents applied its "
                     f"peerings {done - t_apply:.1f} s later.")
    return res
