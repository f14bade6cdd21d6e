"""Scenario 8, three coordinators sharing the agents over one etcd: fan-out per coordinator, and a projection.

Three coordinator processes run against the same etcd; the N simulated agents
are spread over them (agent i connects to coordinator i mod 3), as an operator
spreads agents over coordinators. Each trial changes the REMOTE hub endpoint
connected to every site (as the fan-out scenario does): one etcd put that
every coordinator sees on its own watch and turns into one delta for each of
its agents. The reference is the fan-out scenario's: one etcd put, watched by
N raw etcd watch streams (one channel each, spread over the same load
processes as the agents, loadproc.py). A burst of connection creates, spread over the three coordinators,
gives each coordinator's CPU per write; with the CPU per agent delta it makes
the projection in the notes.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc

from .cluster import Cluster, RawEtcd, quiesce
from .context import Context
from .fanout import HUB, HUB_INDEX, HUB_KEY, TRIAL_TIMEOUT, hub_value, split_note
from .figures import CpuMeter, Figure, ScenarioResult, add_cpu, latency_figures, median
from .workload import Api, ApiPool, asn, build_sites

NAME = "coordinators"
TITLE = "Three coordinators"
COORDINATORS = 3
HEADROOM = 0.5  # the share of a core the projection lets a coordinator use
CHANGE_EVERY_S = 10.0  # the projection's load: one change of each site's desired peerings every 10 s


async def _extra_coordinators(ctx: Context, cluster: Cluster) -> list[Cluster]:
    """Coordinators 2..COORDINATORS, each a process of its own against the first cluster's etcd."""
    out = []
    for k in range(2, COORDINATORS + 1):
        extra = Cluster(cluster.work / f"coordinator-{k}", log_level=ctx.log_level, profile_dir=ctx.profile_dir,
                        name=f"coordinator-{NAME}-{k}", extra_args=ctx.coordinator_args)
        extra.work.mkdir(parents=True, exist_ok=True)
        extra.etcd_endpoint = cluster.etcd_endpoint
        await extra.start_coordinator()
        out.append(extra)
    return out


async def _streams(cluster: Cluster) -> dict[str, int]:
    """Agent streams per coordinator address, as ListCoordinators shows them."""
    stub = api_pb2_grpc.StatusServiceStub(cluster.channel())
    resp = await stub.ListCoordinators(api.ListCoordinatorsRequest(), timeout=30)
    return {c.address: c.agents for c in resp.coordinators}


async def _all_streams(cluster: Cluster, n: int, timeout: float) -> dict[str, int]:
    """The streams per coordinator once ListCoordinators counts all ``n`` agents: it reads the sessions' status
    records, which are written a few seconds after the agents synced."""
    deadline = time.monotonic() + timeout
    while True:
        streams = await _streams(cluster)
        if sum(streams.values()) >= n:
            return streams
        if time.monotonic() > deadline:
            raise RuntimeError(f"ListCoordinators counts {sum(streams.values())} of {n} agent streams after "
                               f"{timeout:.0f} s: {streams}")
        await asyncio.sleep(0.2)


async def run(ctx: Context) -> ScenarioResult:
    s = ctx.sizes
    n = s.fanout_sites
    trials = s.fanout_trials
    res = ScenarioResult(NAME, TITLE, {"sites": n, "coordinators": COORDINATORS, "trials": trials,
                                       "load_processes": ctx.load_processes})
    async with ctx.cluster(NAME) as first:
        extras: list[Cluster] = []
        try:
            extras = await _extra_coordinators(ctx, first)
            clusters = [first, *extras]
            async with ctx.load(NAME) as load:
                pids = {"load": 0, **load.pids, "etcd": first.etcd_pid,
                        **{f"coordinator {k + 1}": c.coordinator_pid for k, c in enumerate(clusters)}}
                pool = ApiPool(first, min(64, n))
                sites = await build_sites(pool, "s", n)
                api0 = pool.clients[0]
                await api0.create_site(HUB[0])
                await api0.create_endpoint(HUB[0], HUB[1], HUB_INDEX, remote=True)
                await pool.run([partial(Api.create_connection, name=f"hub--{x}", a=HUB, b=(x, "gw"))
                                for x in sites])
                groups = [sites[k::COORDINATORS] for k in range(COORDINATORS)]
                await load.start_agents(ctx.agent_dir(NAME), [(x, clusters[i % COORDINATORS].address)
                                                              for i, x in enumerate(sites)], 1, 120 + n / 10)
                streams = await _all_streams(first, n, 30)
                ctx.say(f"{NAME}: {n} agents synced over {COORDINATORS} coordinators: {streams}")

                etcd = RawEtcd(first)
                await load.watch(first.etcd_endpoint, "/bench/coordinators/hub", n, 120)
                ours: list[float] = []
                per_coordinator: list[list[float]] = [[] for _ in clusters]
                ref: list[float] = []
                used: dict[str, dict[str, float]] = {}
                for t in range(trials):
                    value = hub_value(asn(HUB_INDEX) + t + 1)
                    await quiesce(etcd, 5.5)
                    meter = CpuMeter(pids).start()
                    await load.arm(TRIAL_TIMEOUT)
                    t_put = time.perf_counter()
                    rev = await etcd.put(HUB_KEY, value)
                    at, _ = await load.applied(rev, TRIAL_TIMEOUT)
                    ours.append(max(at.values()) - t_put)
                    for k, g in enumerate(groups):
                        per_coordinator[k].append(max(at[x] for x in g) - t_put)
                    add_cpu(used, "isthmus trials", meter.stop())

                    await quiesce(etcd, 0.3)
                    meter = CpuMeter(pids).start()
                    t_put = time.perf_counter()
                    rev = await etcd.put("/bench/coordinators/hub", value)
                    ref.append(max(await load.seen(rev, TRIAL_TIMEOUT)) - t_put)
                    add_cpu(used, "etcd trials", meter.stop())
                    ctx.say(f"{NAME}: trial {t + 1}: all {n} agents applied after {ours[-1] * 1000:.0f} ms "
                            f"({', '.join(f'{x[-1] * 1000:.0f}' for x in per_coordinator)} ms per coordinator); "
                            f"etcd watchers {ref[-1] * 1000:.1f} ms")

                # Writes spread over the coordinators: each client on one of them, connections between new sites.
                await quiesce(etcd, 5.5)
                pools = [ApiPool(c, 16) for c in clusters]
                writers = await build_sites(pools[0], "w", min(64, max(4, n)), first_index=n + 10)
                pairs = [(i, j) for i in range(len(writers)) for j in range(i + 1, len(writers))][:min(1200, 20 * n)]
                ops = [partial(Api.create_connection, name=f"{writers[i]}--{writers[j]}", a=(writers[i], "gw"),
                               b=(writers[j], "gw")) for i, j in pairs]
                meter = CpuMeter(pids).start()
                t0 = time.perf_counter()
                await asyncio.gather(*(p.run(ops[k::COORDINATORS]) for k, p in enumerate(pools)))
                write_s = time.perf_counter() - t0
                add_cpu(used, "writes", meter.stop())
        finally:
            for extra in extras:
                await extra.close()

    size = f"{n} sites, {COORDINATORS} coordinators"
    res.figures += latency_figures(size, "hub endpoint changed -> all agents applied", ours,
                                   "etcd put -> all watchers saw it", ref, ratio_goal=3.0)[:2]
    for k, times in enumerate(per_coordinator):
        res.figures.append(Figure(size, f"coordinator {k + 1}: its {len(groups[k])} agents applied p50", "ms",
                                  median(times) * 1000, "etcd put -> all watchers saw it p50", median(ref) * 1000))
    trial_cpu = used.get("isthmus trials", {})
    cpu_delta = [trial_cpu.get(f"coordinator {k + 1}", 0.0) / (trials * len(g)) * 1e6 for k, g in enumerate(groups)]
    etcd_watch = used.get("etcd trials", {}).get("etcd", 0.0) / (trials * n) * 1e6
    for k, us in enumerate(cpu_delta):
        res.figures.append(Figure(size, f"coordinator {k + 1}: CPU per agent per delta", "us", us,
                                  "etcd CPU per watcher per event", etcd_watch, target="<= 100 us", met=us <= 100,
                                  positive=False))
    writes = len(ops)
    write_cpu = used.get("writes", {})
    cpu_write = sum(write_cpu.get(f"coordinator {k + 1}", 0.0) for k in range(COORDINATORS)) / writes * 1e6
    etcd_write = write_cpu.get("etcd", 0.0) / writes * 1e6
    res.notes.append(f"{writes} connection creates over the {COORDINATORS} coordinators (16 clients each, all at "
                     f"once) took {write_s:.1f} s: {writes / write_s:,.0f}/s.")
    res.figures.append(Figure(size, "coordinator CPU per connection create (all coordinators)", "us", cpu_write,
                              "etcd CPU per connection create", etcd_write, positive=False))
    res.cpu_seconds = used
    res.raw = {"all_applied_s": ours, "per_coordinator_applied_s": per_coordinator, "etcd_all_seen_s": ref,
               "streams": streams, "cpu_per_agent_delta_us": cpu_delta, "cpu_per_write_us": cpu_write,
               "etcd_cpu_per_write_us": etcd_write, "writes": writes, "write_s": write_s}
    res.notes.append(f"Agent streams per coordinator (ListCoordinators): "
                     f"{', '.join(f'{a}: {c}' for a, c in sorted(streams.items()))}. Each coordinator watches etcd "
                     "on its own and sends the deltas of its own agents. " + split_note(load, n))
    res.notes.append(_projection(median(cpu_delta) if cpu_delta else 0.0, cpu_write, etcd_write))
    return res


def _projection(cpu_delta_us: float, cpu_write_us: float, etcd_write_us: float) -> str:
    """How many sites and writes per second N coordinators carry, from the CPU measured here."""
    if cpu_delta_us <= 0 or cpu_write_us <= 0:
        return "Projection: not enough CPU measured for one."
    deltas = HEADROOM / (cpu_delta_us / 1e6)  # agent deltas per second one coordinator sends at HEADROOM
    sites = deltas * CHANGE_EVERY_S
    writes = HEADROOM / (cpu_write_us / 1e6)
    etcd_writes = HEADROOM / (etcd_write_us / 1e6) if etcd_write_us > 0 else float("inf")
    rows = ", ".join(f"{k}: {k * sites:,.0f} sites and {min(k * writes, etcd_writes):,.0f} writes/s"
                     for k in (1, 3, 5))
    return (f"Projection (from this run's CPU; each coordinator on a core of its own, used to {HEADROOM:.0%}; "
            f"every site's desired peerings changing once every {CHANGE_EVERY_S:g} s): one coordinator sends "
            f"{deltas:,.0f} agent deltas/s ({cpu_delta_us:.0f} us each) and takes {writes:,.0f} connection "
            f"creates/s ({cpu_write_us:.0f} us each); sites scale with the coordinators (each agent has one "
            "stream, each coordinator its own watch) as long as the CPU per agent delta holds, but it holds only "
            "roughly: every coordinator plans, and records the desired revisions of, every site, so with more "
            "coordinators that share of the cost falls on fewer agents each; writes scale with them until etcd, "
            "which took "
            f"{etcd_write_us:.0f} us of CPU per create here ({etcd_writes:,.0f}/s at {HEADROOM:.0%} of a core; "
            f"an etcd cluster of 3 or 5 members takes about the same: every member applies every write). "
            f"N coordinators -> {rows}.")
