"""Scenario 5, reconnect storm: the coordinator restarted under N connected agents.

N agents hold one peering each (the fan-out topology). The coordinator gets
SIGTERM (it ends every stream first) and is started again on the same port;
the figure is the time from the new coordinator serving until every agent
has a new session and has applied what it holds. Every desired state an
agent is handed meanwhile is recorded: a session that sees an older
revision, an empty set of peerings or different peerings (nothing changed
in etcd) counts as a violation. The reference is N fresh agents (empty state
directories) connecting at once to the running coordinator.
"""

from __future__ import annotations

import asyncio
import inspect
import time

from isthmus.agent import link as agent_link

from .cluster import RawEtcd, quiesce
from .context import Context
from .fanout import build_hub
from .figures import CpuMeter, Figure, ScenarioResult, latency_summary
from .fleet import Fleet, SimAgent
from .workload import ApiPool

NAME = "storm"
TITLE = "Reconnect storm"
GOAL_S = 10.0
STATUS = "/isthmus/v1/status/"


def violations(agents: list[SimAgent], before: dict[str, tuple[int, frozenset[str]]]) -> dict[str, str]:
    """Agents handed anything but their held peerings at the same or a newer revision; site -> what."""
    bad = {}
    for a in agents:
        rev, peerings = before[a.site]
        last = rev
        for taken in a.reconciler.trace or []:
            if taken.revision < last:
                bad[a.site] = f"rev {taken.revision} after rev {last}"
            elif not taken.peerings:
                bad[a.site] = f"no peerings at rev {taken.revision}"
            elif taken.peerings != peerings:
                bad[a.site] = f"{len(taken.peerings)} peerings at rev {taken.revision}, held {len(peerings)}"
            last = max(last, taken.revision)
        if frozenset(a.reconciler.desired.peerings) != peerings:
            bad.setdefault(a.site, f"ended with {len(a.reconciler.desired.peerings)} peerings")
    return bad


async def run(ctx: Context) -> ScenarioResult:
    s = ctx.sizes
    n = s.storm_sites
    res = ScenarioResult(NAME, TITLE, {"sites": n})
    async with ctx.cluster(NAME) as cluster:
        pool = ApiPool(cluster, min(64, n))
        etcd = RawEtcd(cluster)
        fleet = Fleet(cluster.address, ctx.agent_dir(NAME))
        try:
            agents = await build_hub(ctx, cluster, pool, fleet, n, NAME)
            await quiesce(etcd)
            before = {a.site: (a.reconciler.desired.revision, frozenset(a.reconciler.desired.peerings))
                      for a in agents}
            sessions = {a.site: a.link.sessions for a in agents}
            for a in agents:
                a.reconciler.trace = []

            ctx.say(f"{NAME}: SIGTERM to the coordinator under {n} sessions")
            t_term = time.perf_counter()
            exit_s = await cluster.stop_coordinator()
            t_exit = time.perf_counter()
            await cluster.start_coordinator()
            t_ready = time.perf_counter()
            meter = CpuMeter({"load": 0, "coordinator": cluster.coordinator_pid, "etcd": cluster.etcd_pid}).start()
            back = await fleet.times(agents, lambda a: a.link.sessions > sessions[a.site] and a.synced,
                                     timeout=120 + n / 10, what="resynced after the restart")
            res.cpu_seconds["resync"] = meter.stop()
            t_all = max(back.values())
            bad = violations(agents, before)
            stale_views = sum(1 for a in agents for t in a.reconciler.trace or [] if t.revision < before[a.site][0])
            took = sum(1 for a in agents if a.reconciler.trace)
            ctx.say(f"{NAME}: all {n} resynced {t_all - t_ready:.2f}s after the new coordinator served "
                    f"({t_all - t_term:.2f}s after SIGTERM); {len(bad)} violations")

            # The reference: as many fresh agents connecting at once to the running coordinator.
            await fleet.stop()
            leftover = await _wait_gone(etcd)
            if leftover:
                res.problems.append(
                    f"{leftover} of {n} status keys outlived their agents' streams: after the simulated agents "
                    "were stopped (their streams cancelled), the coordinator did not revoke those sessions' "
                    "leases, so the sites looked connected until the lease TTL ran out and a new agent instance "
                    "would be refused (ALREADY_EXISTS) meanwhile. The harness revoked them after 1 s.")
            await quiesce(etcd)
            fresh = Fleet(cluster.address, ctx.agent_dir(NAME + "-fresh"))
            try:
                meter = CpuMeter({"load": 0, "coordinator": cluster.coordinator_pid,
                                  "etcd": cluster.etcd_pid}).start()
                t0 = time.perf_counter()
                new = await fresh.add([a.site for a in agents])
                first = await fresh.times(new, lambda a: a.synced and len(a.reconciler.desired.peerings) == 1,
                                          timeout=120 + n / 10, what="synced (fresh)")
                res.cpu_seconds["fresh connects"] = meter.stop()
            finally:
                await fresh.stop()
        finally:
            await fleet.stop()
    t_ref = max(first.values())
    ours = [t - t_ready for t in back.values()]
    ref = [t - t0 for t in first.values()]
    size = f"{n} sessions"
    fig = Figure(size, "coordinator restarted: serving -> all sessions resynced", "s", t_all - t_ready,
                 "fresh sessions: connect -> all synced", t_ref - t0, target=f"< {GOAL_S:g} s")
    fig.met = fig.value < GOAL_S
    res.figures.append(fig)
    res.figures.append(Figure(size, "resync per session p50", "s", latency_summary(ours)["p50_ms"] / 1000,
                              "fresh connect per session p50", latency_summary(ref)["p50_ms"] / 1000))
    res.figures.append(Figure(size, "SIGTERM -> all sessions resynced", "s", t_all - t_term,
                              "fresh sessions: connect -> all synced", t_ref - t0))
    count = Figure(size, "sessions handed an older, empty or different desired state", "sessions", len(bad),
                   "none expected", None, target="0", positive=False)
    count.met = not bad
    res.figures.append(count)
    res.raw = {
        "coordinator_exit_s": exit_s, "coordinator_start_s": t_ready - t_exit,
        "resync_from_ready_s": sorted(ours), "fresh_connect_s": sorted(ref),
        "violations": bad, "stale_views": stale_views, "sessions_handed_a_new_state": took,
        "status_keys_left_after_agents_stopped": leftover,
    }
    cap = inspect.signature(agent_link.backoff).parameters["cap"].default
    res.notes.append(f"The old coordinator took {exit_s:.2f} s to exit after SIGTERM and the new one "
                     f"{t_ready - t_exit:.2f} s to serve. Meanwhile each agent retries with its jittered "
                     f"exponential backoff (doubling up to {cap:g} s), which is part of the resync time.")
    res.notes.append(f"{took} of {n} agents were handed a desired state during the storm (a newer revision "
                     "with the same peerings)" + ("; the others resumed with nothing to change." if took < n else "."))
    return res


async def _wait_gone(etcd: RawEtcd, timeout: float = 60.0) -> int:
    """Until every session's status key is gone, so that fresh agents can claim the sites.

    A session whose agent went away should revoke its lease at once; keys still
    there after a second are revoked here (their number is returned) rather
    than waiting for the lease TTL.
    """
    deadline = time.monotonic() + timeout
    revoked = 0
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        kvs = await etcd.range_prefix(STATUS)
        if not kvs:
            return revoked
        if time.monotonic() - t0 > 1.0 and not revoked:
            leases = {kv.lease for kv in kvs if kv.lease}
            for lease in leases:
                await etcd.revoke(lease)
            revoked = len(kvs)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"status keys still present {timeout}s after the agents stopped")
