"""Scenario 3, fan-out: one change that reaches every site, until every agent has applied it.

A REMOTE hub endpoint is connected to every site; changing the hub's AS
changes one desired peering of every site. Trials alternate with the
reference: one key put to etcd, watched by as many clients (one raw watch
stream each, on a channel of its own) as there are sites. The agents and the
watchers are spread alike over the load processes (loadproc.py).
"""

from __future__ import annotations

import time
from functools import partial

import grpc.aio

from isthmus.coordinator.registry import encode, endpoint_key
from isthmus.core import model as m

from .cluster import Cluster, RawEtcd, quiesce
from .context import Context
from .figures import CpuMeter, Figure, ScenarioResult, add_cpu, latency_figures, median
from .fleet import Fleet, SimAgent
from .loadproc import LoadProcesses
from .workload import Api, ApiPool, address, asn, build_sites

NAME = "fanout"
TITLE = "Fan-out"
RATIO_GOAL = 3.0
CPU_GOAL_US = 100.0
HUB = ("hub", "gw")
HUB_INDEX = 1_000_000  # address/AS number of the hub endpoint, apart from the sites'
TRIAL_TIMEOUT = 300.0
HUB_KEY = endpoint_key(*HUB)


async def hub_sites(ctx: Context, pool: ApiPool, n: int, what: str) -> list[str]:
    """``n`` sites with a LOCAL endpoint each, all connected to one REMOTE hub endpoint."""
    t0 = time.monotonic()
    sites = await build_sites(pool, "s", n)
    api = pool.clients[0]
    await api.create_site(HUB[0])
    await api.create_endpoint(HUB[0], HUB[1], HUB_INDEX, remote=True)
    await pool.run([partial(Api.create_connection, name=f"hub--{s}", a=HUB, b=(s, "gw")) for s in sites])
    ctx.say(f"{what}: {n} sites connected to the hub ({time.monotonic() - t0:.1f}s); starting {n} agents")
    return sites


async def build_hub(ctx: Context, cluster: Cluster, pool: ApiPool, fleet: Fleet, n: int, what: str) -> list[SimAgent]:
    """The hub's sites (``hub_sites``) and an agent per site in this process."""
    sites = await hub_sites(ctx, pool, n, what)
    t1 = time.monotonic()
    agents = await fleet.add(sites)
    await fleet.wait(agents, lambda a: a.synced and len(a.reconciler.desired.peerings) == 1,
                     timeout=120 + n / 10, what="synced with their hub peering")
    ctx.say(f"{what}: {n} agents synced ({time.monotonic() - t1:.1f}s)")
    return agents


def hub_value(new_asn: int) -> bytes:
    """The hub endpoint as the registry stores it, with another AS number."""
    ep = m.validate_endpoint(m.Endpoint(HUB[0], HUB[1], address(HUB_INDEX), new_asn, m.EndpointRole.REMOTE))
    return encode(ep)


async def try_api_update(api: Api, load: LoadProcesses, n: int, res: ScenarioResult) -> float | None:
    """Change the hub through the API once; the call's seconds, or None (with the error as a problem)."""
    t0 = time.perf_counter()
    try:
        rev = await api.update_endpoint_asn(HUB[0], HUB[1], HUB_INDEX, asn(HUB_INDEX) + 1000, remote=True)
    except grpc.aio.AioRpcError as exc:
        res.problems.append(
            f"UpdateEndpoint of the hub endpoint with {n} connections failed: {exc.code().name}: "
            f"{(exc.details() or '').splitlines()[0]} (...). The registry compares the mod revision of every "
            "connection using the endpoint in one transaction, and etcd allows 128 operations per transaction "
            "(--max-txn-ops): an endpoint with more than 126 connections cannot be updated.")
        return None
    took = time.perf_counter() - t0
    await load.applied(rev, TRIAL_TIMEOUT)
    return took


def split_note(load: LoadProcesses, n: int) -> str:
    """How the agents and the reference's watchers are spread over the load processes."""
    per = ", ".join(str(len(range(k, n, load.n))) for k in range(load.n))
    return (f"The {n} simulated agents run in {load.n} load processes ({per} agents each, dealt round robin), "
            "each a Python process of its own with its own event loop and its own gRPC channels (a TCP connection "
            "per agent); the reference's etcd watchers are spread the same way over the same processes, a channel "
            "each. The load processes report each agent's apply time (and each watcher's) to the harness as "
            "time.perf_counter(), which on Linux is CLOCK_MONOTONIC, the same clock in every process.")


async def run(ctx: Context) -> ScenarioResult:
    s = ctx.sizes
    n = s.fanout_sites
    res = ScenarioResult(NAME, TITLE, {"sites": n, "trials": s.fanout_trials, "load_processes": ctx.load_processes})
    async with ctx.cluster(NAME) as cluster, ctx.load(NAME) as load:
        pool = ApiPool(cluster, min(64, n))
        etcd = RawEtcd(cluster)
        pids = {"load": 0, **load.pids, "coordinator": cluster.coordinator_pid, "etcd": cluster.etcd_pid}
        sites = await hub_sites(ctx, pool, n, NAME)
        t1 = time.monotonic()
        await load.start_agents(ctx.agent_dir(NAME), [(x, cluster.address) for x in sites], 1, 120 + n / 10)
        ctx.say(f"{NAME}: {n} agents synced ({time.monotonic() - t1:.1f}s)")
        api_call = await try_api_update(pool.clients[0], load, n, res)
        await load.watch(cluster.etcd_endpoint, "/bench/fanout/hub", n, 120)
        ours: list[float] = []
        ours_median: list[float] = []
        received: list[float] = []
        ref: list[float] = []
        ref_median: list[float] = []
        used: dict[str, dict[str, float]] = {}
        for t in range(s.fanout_trials):
            value = hub_value(asn(HUB_INDEX) + t + 1)
            await quiesce(etcd)
            meter = CpuMeter(pids).start()
            await load.arm(TRIAL_TIMEOUT)
            t_call = time.perf_counter()
            rev = await etcd.put(HUB_KEY, value)
            applied, got = await load.applied(rev, TRIAL_TIMEOUT)
            times = list(applied.values())
            taken = [x for x in got.values() if x is not None]
            received.append(max(taken) - t_call if len(taken) == n else float("nan"))
            ours.append(max(times) - t_call)
            ours_median.append(median(times) - t_call)
            add_cpu(used, "isthmus trials", meter.stop())

            await quiesce(etcd)
            meter = CpuMeter(pids).start()
            t_call = time.perf_counter()
            rev = await etcd.put("/bench/fanout/hub", value)
            times = await load.seen(rev, TRIAL_TIMEOUT)
            ref.append(max(times) - t_call)
            ref_median.append(median(times) - t_call)
            add_cpu(used, "etcd trials", meter.stop())
            ctx.say(f"{NAME}: trial {t + 1}: all {n} agents applied the hub change {ours[-1] * 1000:.0f} ms "
                    f"after its put; all {n} etcd watchers saw a put after {ref[-1] * 1000:.1f} ms")
    size = f"{n} sites"
    res.figures += latency_figures(size, "hub endpoint changed -> all agents applied", ours,
                                   "etcd put -> all watchers saw it", ref, ratio_goal=RATIO_GOAL)
    res.figures += latency_figures(size, "hub endpoint changed -> half the agents applied", ours_median,
                                   "etcd put -> half the watchers saw it", ref_median)[:1]
    res.cpu_seconds = used
    # The coordinator's CPU for one delta to one agent: plan, encode and send it, take the ack and the status
    # report, write the status back; the reference is etcd's CPU for one event to one watcher.
    deliveries = s.fanout_trials * n
    per_agent = used.get("isthmus trials", {}).get("coordinator", 0.0) / deliveries * 1e6
    etcd_per_watcher = used.get("etcd trials", {}).get("etcd", 0.0) / deliveries * 1e6
    res.figures.append(Figure(size, "coordinator CPU per agent per delta", "us", per_agent,
                              "etcd CPU per watcher per event", etcd_per_watcher, target=f"<= {CPU_GOAL_US} us",
                              met=per_agent <= CPU_GOAL_US, positive=False))
    res.raw = {"all_applied_s": ours, "half_applied_s": ours_median, "all_received_and_persisted_s": received,
               "etcd_all_seen_s": ref, "etcd_half_seen_s": ref_median, "api_update_call_s": api_call}
    res.notes.append("Each trial writes the hub endpoint, with a new AS number, to its etcd key exactly as the "
                     "registry stores it, with the same client as the reference put: both figures start from one "
                     "etcd put and end when the last of the N agents applied the new revision (or the last "
                     "watcher saw the put). The trials do not go through UpdateEndpoint because of the "
                     "transaction limit noted below when it applies; "
                     + (f"through the API, the call alone took {api_call * 1000:.0f} ms (it reads every "
                        "connection of the hub and its other end before it writes)." if api_call is not None
                        else "here the API call failed."))
    res.notes.append("The last agent had received (and persisted) the change after "
                     f"{median(received) * 1000:.0f} ms (median over the trials); the rest is its reconcile pass.")
    res.notes.append(split_note(load, n) + " The load processes share the machine's cores with etcd and the "
                     "coordinator, so the figure still includes simulators working through their agents' deltas "
                     "one after another; see the CPU seconds (load k = load process k, load = the harness).")
    res.notes.append("Before each trial the harness waits until etcd's revision stands still (the status "
                     "write-backs of the previous trial are done).")
    return res

