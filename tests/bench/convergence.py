"""Scenario 2, convergence: a connection created until both sites' agents have applied (and acked) it.

With 10, 100 and 1000 agents connected (each site has two background
peerings: a chain through all sites), each trial creates a connection between
two random sites, waits until both simulated agents have applied a revision
at least the connection's, then deletes it again (not measured). The
reference is the same shape on etcd directly: a transaction putting one key
per site until both of two clients watching those keys have seen it, with a
raw watch open for every site.
"""

from __future__ import annotations

import asyncio
import random
import time
from functools import partial

from .cluster import RawEtcd, RawWatcher, wait_seen
from .context import Context
from .figures import CpuMeter, ScenarioResult, add_cpu, latency_figures, latency_summary
from .fleet import Fleet, SimAgent
from .workload import Api, ApiPool, build_sites

NAME = "convergence"
TITLE = "Convergence"
P99_GOAL_MS = 50.0
GOAL_SITES = 100
TRIAL_TIMEOUT = 60.0
VALUE = b"x" * 300  # about a connection's size


def _fmt(seconds: list[float]) -> str:
    x = latency_summary(seconds)
    return f"p50 {x['p50_ms']:.1f} / p99 {x['p99_ms']:.1f} / max {x['max_ms']:.1f} ms"


async def grow(ctx: Context, pool: ApiPool, fleet: Fleet, sites: list[str], n: int) -> list[SimAgent]:
    """Add sites up to ``n`` (each chained to the previous one) and an agent for each; wait until synced."""
    start = len(sites)
    sites += await build_sites(pool, "s", n - start, start=start)
    await pool.run([partial(Api.create_connection, name=f"chain-{i}", a=(sites[i - 1], "gw"), b=(sites[i], "gw"))
                    for i in range(max(1, start), n)])
    new = await fleet.add(sites[start:])
    expected = {s: (1 if i in (0, n - 1) else 2) for i, s in enumerate(sites)}
    await fleet.wait(fleet.agents.values(),
                     lambda a: a.synced and len(a.reconciler.desired.peerings) == expected[a.site],
                     timeout=120 + n / 10, what="synced with their chain peerings")
    return new


async def run(ctx: Context) -> ScenarioResult:
    s = ctx.sizes
    sizes = sorted(s.convergence_sizes)
    res = ScenarioResult(NAME, TITLE, {"sites": sizes, "trials_per_size": s.trials})
    rng = random.Random(7)
    raw: dict[str, dict[str, list[float]]] = {}
    async with ctx.cluster(NAME) as cluster:
        pool = ApiPool(cluster, min(64, max(sizes)))
        api = Api(cluster.channel())
        etcd = RawEtcd(cluster)
        fleet = Fleet(cluster.address, ctx.agent_dir(NAME))
        watchers: list[RawWatcher] = []
        sites: list[str] = []
        pids = {"load": 0, "coordinator": cluster.coordinator_pid, "etcd": cluster.etcd_pid}
        try:
            for n in sizes:
                t_setup = time.monotonic()
                await grow(ctx, pool, fleet, sites, n)
                for site in sites[len(watchers):]:
                    w = RawWatcher(cluster, f"/bench/conv/{site}")
                    w.start()
                    watchers.append(w)
                await asyncio.wait_for(asyncio.gather(*(w.created.wait() for w in watchers)), 60)
                ctx.say(f"{NAME}: {n} agents synced, {n} raw watchers ({time.monotonic() - t_setup:.1f}s setup); "
                        f"{s.trials} trials")
                pairs = [tuple(rng.sample(range(n), 2)) for _ in range(s.trials)]

                # Each isthmus trial is followed by its etcd counterpart, so that whatever else runs on the
                # machine meanwhile falls on both alike.
                from_return, from_call, calls, ref, starts = [], [], [], [], []
                used_ours, used_ref = CpuMeter(pids), CpuMeter(pids)
                cpu: dict[str, dict[str, float]] = {}
                t_first = time.perf_counter()
                for t, (i, j) in enumerate(pairs):
                    used_ours.start()
                    a, b = fleet.agents[sites[i]], fleet.agents[sites[j]]
                    probes = [asyncio.create_task(x.applied(x.reconciler.applied_revision + 1, TRIAL_TIMEOUT))
                              for x in (a, b)]
                    name = f"t{n}-{t}"
                    t_call = time.perf_counter()
                    rev = await api.create_connection(name, (sites[i], "gw"), (sites[j], "gw"), vni=10_000 + t)
                    t_ret = time.perf_counter()
                    seen = await asyncio.gather(*probes)
                    # Nothing else changes the configuration meanwhile, so the first new revision is this one.
                    seen = [x if x[1] >= rev else await ag.applied(rev, TRIAL_TIMEOUT)
                            for x, ag in zip(seen, (a, b), strict=True)]
                    last = max(x[0] for x in seen)
                    starts.append(t_call - t_first)
                    from_return.append(max(0.0, last - t_ret))
                    from_call.append(last - t_call)
                    calls.append(t_ret - t_call)
                    drev = await api.delete_connection(name)
                    await asyncio.gather(a.applied(drev, TRIAL_TIMEOUT), b.applied(drev, TRIAL_TIMEOUT))
                    await asyncio.sleep(0.01)
                    add_cpu(cpu, "isthmus trials", used_ours.stop())

                    used_ref.start()
                    wi, wj = watchers[i], watchers[j]
                    t_call = time.perf_counter()
                    rev = await etcd.txn_puts([(wi.key, VALUE), (wj.key, VALUE)])
                    seen_at = await wait_seen([wi, wj], rev, TRIAL_TIMEOUT)
                    ref.append(max(seen_at) - t_call)
                    await asyncio.sleep(0.01)
                    add_cpu(cpu, "etcd trials", used_ref.stop())
                for phase, used in cpu.items():
                    res.cpu_seconds[f"{n} sites, {phase}"] = used

                res.figures += latency_figures(
                    f"{n} sites", "CreateConnection -> both agents applied", from_call,
                    "etcd txn -> both watchers saw it", ref,
                    p99_goal_ms=P99_GOAL_MS if n == GOAL_SITES else None)
                after = latency_summary(from_return)
                res.notes.append(f"{n} sites, from the CreateConnection call returning: p50 {after['p50_ms']:.1f} ms, "
                                 f"p99 {after['p99_ms']:.1f} ms, max {after['max_ms']:.1f} ms; the call itself: "
                                 f"p50 {latency_summary(calls)['p50_ms']:.1f} ms.")
                raw[str(n)] = {"from_api_return_s": from_return, "from_api_call_s": from_call,
                               "api_call_s": calls, "etcd_reference_s": ref, "trial_start_s": starts}
                ctx.say(f"{NAME}: {n} sites: {_fmt(from_call)} vs etcd {_fmt(ref)}; create call {_fmt(calls)}")
        finally:
            await asyncio.gather(*(w.stop() for w in watchers), return_exceptions=True)
            await fleet.stop()
    res.raw = raw
    res.notes.insert(0, "Latency runs from the CreateConnection call being issued until both simulated agents "
                     "applied a revision at least the connection's (the ack goes out in the same step); the "
                     "reference from the etcd transaction being issued until both watchers saw it. Timed from the "
                     "calls' return instead, etcd's figure would be 0: its watch events arrive before the reply. "
                     f"The p99 goal applies at {GOAL_SITES} sites.")
    res.notes.append("Each trial connection is a VXLAN connection between two random sites, deleted (and the "
                     "deletion applied) before the next trial; each site holds two background BGP peerings.")
    return res
