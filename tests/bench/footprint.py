"""Scenario 6, agent footprint: one real isthmus-agent process (fake driver), idle, holding N peerings.

The agent runs with its default options (heartbeat 5 s, reconcile interval
10 s). Once its N peerings are ESTABLISHED and acked, its RSS is sampled
every second and its CPU time read at both ends of the window. The reference
runs alongside over the same window: a bare Python process that only
imports grpc and isthmus.agent.main, i.e. the floor any Python agent pays.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from isthmus.v1 import api_pb2 as api
from isthmus.v1 import types_pb2 as pb

from .cluster import BIN, spawn, stop_process, tail
from .context import Context
from .figures import CLK_TCK, Figure, ScenarioResult, proc_cpu_seconds, proc_status
from .workload import Api, ApiPool, site_name

NAME = "footprint"
TITLE = "Agent footprint"
RSS_GOAL_MB = 60.0
CPU_GOAL_PCT = 1.0
SITE = "fp"
BARE = ("import pathlib, sys, time; import grpc, isthmus.agent.main; "
        "pathlib.Path(sys.argv[1]).write_text('ready'); time.sleep(float(sys.argv[2]))")


async def converged(status: Api, peerings: int, agent: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with {agent.returncode}:\n{tail(log)}")
        try:
            st = await status.status.GetSiteStatus(api.GetSiteStatusRequest(site=SITE), timeout=5)
            up = sum(p.observed.state == pb.PEERING_STATE_ESTABLISHED for p in st.peerings)
            last = f"connected={st.connected} applied {st.applied_revision}/{st.desired_revision}, {up} established"
            if st.connected and st.applied_revision >= st.desired_revision and up == peerings:
                return
        except Exception as exc:  # noqa: BLE001 (shown if the deadline passes)
            last = repr(exc)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the agent did not converge on {peerings} peerings in {timeout}s; last seen: {last}")


async def run(ctx: Context) -> ScenarioResult:
    s = ctx.sizes
    k, window = s.footprint_peerings, s.footprint_seconds
    res = ScenarioResult(NAME, TITLE, {"peerings": k, "window_s": window})
    async with ctx.cluster(NAME) as cluster:
        pool = ApiPool(cluster, min(64, k))
        first = pool.clients[0]
        await first.create_site(SITE)
        await first.create_endpoint(SITE, "gw", 0)
        remotes = [site_name("r", i) for i in range(k)]
        await pool.run([partial(Api.create_site, name=r) for r in remotes])
        await pool.run([partial(Api.create_endpoint, site=r, name="gw", index=10_000 + i, remote=True)
                        for i, r in enumerate(remotes)])
        await pool.run([partial(Api.create_connection, name=f"{SITE}--{r}", a=(SITE, "gw"), b=(r, "gw"))
                        for r in remotes])
        work = cluster.work / "agent"
        work.mkdir(parents=True, exist_ok=True)
        # The agent's sockets live in its state directory and beside it: a unix socket path has at most 107
        # bytes, which deep working directories exceed.
        short = Path(tempfile.mkdtemp(prefix="isthmus-fp-"))
        agent = spawn([str(BIN / "isthmus-agent"), "--site", SITE, "--coordinator", cluster.address,
                       "--driver", "fake", "--state-dir", str(short / "state"),
                       "--admin-socket", str(short / "admin.sock")], work / "agent.log")
        ready = work / "bare.ready"
        bare = spawn([sys.executable, "-c", BARE, str(ready), str(window + 120)], work / "bare.log")
        try:
            await converged(first, k, agent, work / "agent.log", timeout=60 + k / 10)
            deadline = time.monotonic() + 60
            while not ready.exists():
                if time.monotonic() > deadline or bare.poll() is not None:
                    raise RuntimeError(f"the bare import process did not start:\n{tail(work / 'bare.log')}")
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # the reports that follow convergence
            ctx.say(f"{NAME}: agent (pid {agent.pid}) converged on {k} peerings; measuring for {window:g}s")
            cpu0 = proc_cpu_seconds(agent.pid), proc_cpu_seconds(bare.pid)
            t0 = time.monotonic()
            rss: list[int] = []
            bare_rss: list[int] = []
            while True:
                rss.append(proc_status(agent.pid).get("VmRSS", 0))
                bare_rss.append(proc_status(bare.pid).get("VmRSS", 0))
                left = window - (time.monotonic() - t0)
                if left <= 0:
                    break
                await asyncio.sleep(min(1.0, left))
            elapsed = time.monotonic() - t0
            cpu1 = proc_cpu_seconds(agent.pid), proc_cpu_seconds(bare.pid)
            hwm = proc_status(agent.pid).get("VmHWM", 0)
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited with {agent.returncode}:\n{tail(work / 'agent.log')}")
        finally:
            await asyncio.to_thread(stop_process, agent, 15)
            await asyncio.to_thread(stop_process, bare, 5)
            shutil.rmtree(short, ignore_errors=True)
    size = f"{k} peerings, {window:g} s idle"
    fig = Figure(size, "agent RSS (max over the window)", "MB", max(rss) / 1024,
                 "bare `python -c 'import grpc, isthmus.agent.main'` RSS", max(bare_rss) / 1024,
                 target=f"< {RSS_GOAL_MB:g} MB")
    fig.met = fig.value < RSS_GOAL_MB
    res.figures.append(fig)
    cpu = (cpu1[0] - cpu0[0]) / elapsed * 100
    bare_cpu = (cpu1[1] - cpu0[1]) / elapsed * 100
    fig = Figure(size, "agent CPU (% of one core)", "%", cpu, "bare import process CPU", bare_cpu,
                 target=f"< {CPU_GOAL_PCT:g} %", positive=False)
    fig.met = cpu < CPU_GOAL_PCT
    res.figures.append(fig)
    res.raw = {"agent_rss_kb": rss, "bare_rss_kb": bare_rss, "agent_hwm_kb": hwm, "window_s": elapsed,
               "agent_cpu_s": cpu1[0] - cpu0[0], "bare_cpu_s": cpu1[1] - cpu0[1]}
    res.notes.append(f"CPU is read from /proc/PID/stat in clock ticks (1/{CLK_TCK} s), so short windows "
                     "round to 0. The agent's peak RSS including start-up (VmHWM) was "
                     f"{hwm / 1024:.1f} MB.")
    return res
