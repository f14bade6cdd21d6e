"""Scenario 1, API write throughput: endpoint and connection creates per second against raw etcd puts.

The same number of concurrent clients, each a grpc.aio channel of its own,
first put values of an endpoint's size into etcd directly (etcd's v3 stubs,
as coordinator/store.py uses them), then create endpoints, then connections
through the coordinator. Runs are interleaved and repeated; medians are
reported.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from functools import partial

from isthmus.coordinator.registry import encode
from isthmus.core import model as m

from .cluster import RawEtcd
from .context import Context
from .figures import CpuMeter, Figure, ScenarioResult, add_cpu, median
from .workload import Api, ApiPool, RunTiming, address, asn, build_sites, run_clients, site_name, spread_pairs

NAME = "api_writes"
TITLE = "API write throughput"
RATIO_GOAL = 0.5


async def raw_put(raw: list[RawEtcd], key: str, value: bytes, client: int) -> int:
    return await raw[client].put(key, value)


def pool_size(connections: int) -> int:
    """Sites needed so that ``connections`` distinct site pairs exist."""
    return max(2, math.ceil((1 + math.sqrt(1 + 8 * connections)) / 2))


async def run(ctx: Context) -> ScenarioResult:
    s = ctx.sizes
    res = ScenarioResult(NAME, TITLE, {"clients": s.api_clients, "creates_per_run": s.api_ops, "runs": s.runs})
    async with ctx.cluster(NAME) as cluster:
        pool = ApiPool(cluster, s.api_clients)
        raw = [RawEtcd(cluster) for _ in range(s.api_clients)]
        ep_sites = [site_name("e", i) for i in range(min(64, s.api_clients))]
        await pool.run([partial(Api.create_site, name=n) for n in ep_sites])
        n_pool = pool_size(s.api_ops * s.runs)
        conn_sites = await build_sites(pool, "c", n_pool)
        pairs = spread_pairs(n_pool)
        value = encode(m.Endpoint("e0000", "r0-0", address(0), asn(0), router_id=address(0)))
        ctx.say(f"{NAME}: {s.runs} runs of {s.api_ops} creates with {s.api_clients} clients "
                f"(connections among {n_pool} sites)")

        rates: dict[str, list[float]] = {"etcd_put": [], "endpoint_create": [], "connection_create": []}
        cpu: dict[str, dict[str, float]] = {}
        pids = {"load": 0, "coordinator": cluster.coordinator_pid, "etcd": cluster.etcd_pid}
        for r in range(s.runs):
            puts = [partial(raw_put, raw, f"/bench/put/{r}/{k}", value) for k in range(s.api_ops)]
            endpoints = [partial(Api.create_endpoint, site=ep_sites[k % len(ep_sites)], name=f"r{r}-{k}", index=k)
                         for k in range(s.api_ops)]
            batch = pairs[r * s.api_ops:(r + 1) * s.api_ops]
            connections = [partial(Api.create_connection, name=f"{conn_sites[i]}--{conn_sites[j]}",
                                   a=(conn_sites[i], "gw"), b=(conn_sites[j], "gw")) for i, j in batch]
            runs: list[tuple[str, Callable[[], Awaitable[RunTiming]]]] = [
                ("etcd_put", partial(run_clients, s.api_clients, puts)),
                ("endpoint_create", partial(pool.run, endpoints)),
                ("connection_create", partial(pool.run, connections)),
            ]
            for kind, start in runs:
                meter = CpuMeter(pids).start()
                timing = await start()
                add_cpu(cpu, kind, meter.stop())
                rates[kind].append(timing.per_second)
            ctx.say(f"{NAME}: run {r + 1}: etcd {rates['etcd_put'][-1]:.0f} puts/s, "
                    f"{rates['endpoint_create'][-1]:.0f} endpoints/s, "
                    f"{rates['connection_create'][-1]:.0f} connections/s")

    ref = median(rates["etcd_put"])
    size = f"{s.api_clients} clients"
    for kind, label in (("endpoint_create", "endpoint creates/s"), ("connection_create", "connection creates/s")):
        fig = Figure(size, f"{label} (median of {s.runs})", "1/s", median(rates[kind]),
                     f"raw etcd puts/s, same clients (median of {s.runs})", ref, better="higher",
                     target=f"ratio >= {RATIO_GOAL}")
        fig.met = fig.ratio is not None and fig.ratio >= RATIO_GOAL
        res.figures.append(fig)
    res.raw = {"per_second": rates, "value_bytes": len(value)}
    res.cpu_seconds = cpu
    res.notes.append("Each client is a grpc.aio channel with its own TCP connection; a client has one call in "
                     "flight at a time. At the time of writing an endpoint create is 2 reads and 1 transaction in "
                     "etcd, a connection create 4 reads and 1 transaction of 4 puts, each followed by an audit put; "
                     "the reference is 1 put per operation. The connection rate falls from run to run as each "
                     "site accumulates connections (see the runs in performance.json).")
    return res
