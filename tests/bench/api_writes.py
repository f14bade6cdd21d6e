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
from .workload import (
    Api,
    ApiPool,
    RunTiming,
    address,
    asn,
    build_sites,
    connection_keys,
    raw_txn,
    run_clients,
    site_name,
    spread_pairs,
)

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

        conn_value = encode(m.Connection("c0000--c0001", m.EndpointRef("c0000", "gw"), m.EndpointRef("c0001", "gw"),
                                         m.ConnectionType.BGP, bgp=m.BgpParams(address_families=("ipv4-unicast",))))
        audit = b'{"allowed":true,"coordinator":"127.0.0.1:12345","detail":"c0000--c0001","method":' \
                b'"/isthmus.v1.ConnectionService/CreateConnection","role":"admin","time_unix_ms":1700000000000,' \
                b'"who":"anonymous"}'
        rates: dict[str, list[float]] = {"etcd_put": [], "etcd_txn": [], "endpoint_create": [],
                                         "connection_create": []}
        cpu: dict[str, dict[str, float]] = {}
        pids = {"load": 0, "coordinator": cluster.coordinator_pid, "etcd": cluster.etcd_pid}
        for r in range(s.runs):
            puts = [partial(raw_put, raw, f"/bench/put/{r}/{k}", value) for k in range(s.api_ops)]
            endpoints = [partial(Api.create_endpoint, site=ep_sites[k % len(ep_sites)], name=f"r{r}-{k}", index=k)
                         for k in range(s.api_ops)]
            batch = pairs[r * s.api_ops:(r + 1) * s.api_ops]
            connections = [partial(Api.create_connection, name=f"{conn_sites[i]}--{conn_sites[j]}",
                                   a=(conn_sites[i], "gw"), b=(conn_sites[j], "gw")) for i, j in batch]
            txns = [partial(raw_txn, raw, connection_keys("/bench/txn/", f"{conn_sites[i]}--{conn_sites[j]}",
                                                          conn_sites[i], conn_sites[j], conn_value, audit))
                    for i, j in batch]
            runs: list[tuple[str, Callable[[], Awaitable[RunTiming]]]] = [
                ("etcd_put", partial(run_clients, s.api_clients, puts)),
                ("etcd_txn", partial(run_clients, s.api_clients, txns)),
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

    size = f"{s.api_clients} clients"
    for kind, label, ref_kind, ref_label in (
            ("endpoint_create", "endpoint creates/s", "etcd_put", "raw etcd puts/s"),
            ("connection_create", "connection creates/s", "etcd_txn",
             "raw etcd txns/s of the 5 keys a connection create writes")):
        fig = Figure(size, f"{label} (median of {s.runs})", "1/s", median(rates[kind]),
                     f"{ref_label}, same clients (median of {s.runs})", median(rates[ref_kind]), better="higher",
                     target=f"ratio >= {RATIO_GOAL}")
        fig.met = fig.ratio is not None and fig.ratio >= RATIO_GOAL
        res.figures.append(fig)
    res.raw = {"per_second": rates, "value_bytes": len(value)}
    res.cpu_seconds = cpu
    res.notes.append("Each client is a grpc.aio channel with its own TCP connection; a client has one call in "
                     "flight at a time. An endpoint create is 1 etcd transaction (the site and the endpoint's "
                     "absence compared, the endpoint and its audit event put), a connection create 1 transaction "
                     "of 5 puts (connection, pair index, two endpoint references, audit event), both validated on "
                     "the coordinator's watch-fed view of the configuration; the references are 1 put per "
                     "endpoint and 1 transaction of the same 5 keys per connection, with the same clients.")
    return res
