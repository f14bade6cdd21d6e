"""`make bench`: run the scenarios, write docs/performance.md and docs/performance.json.

    python -m tests.bench                      # every scenario at its default size (about 10 minutes)
    python -m tests.bench --scenario convergence --sites 1000
    python -m tests.bench --tiny --output-dir /tmp/b   # seconds per scenario: what the smoke test runs

etcd (coordinator/etcd.py EmbeddedEtcd) and isthmus-coordinator run as child
processes of this one, fresh for each scenario; this process is the load:
API clients, raw etcd clients and the simulated agents. Every child is
stopped at the end, also on failure or Ctrl-C, and dies with this process.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import logging
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from . import addresses, api_writes, convergence, coordinators, fanout, footprint, mesh, policy, storm
from .cluster import default_coordinator_args
from .context import Context, Sizes
from .figures import ScenarioResult, code_version, machine
from .fleet import own_connection_per_agent
from .report import write

REPO = Path(__file__).resolve().parents[2]

Scenario = Callable[[Context], Awaitable[ScenarioResult]]
SCENARIOS: dict[str, Scenario] = {
    api_writes.NAME: api_writes.run,
    convergence.NAME: convergence.run,
    fanout.NAME: fanout.run,
    coordinators.NAME: coordinators.run,
    mesh.NAME: mesh.run,
    storm.NAME: storm.run,
    footprint.NAME: footprint.run,
    addresses.NAME: addresses.run,
    policy.NAME: policy.run,
}
ALIASES = {"api": api_writes.NAME, "fan-out": fanout.NAME, "reconnect": storm.NAME, "full-mesh": mesh.NAME,
           "addresses": addresses.NAME}

HOW = [
    "etcd 3 (Debian's etcd-server) runs as a child process with its data on disk; isthmus-coordinator runs as a "
    "separate process against it with its default options (log level info, lease TTL 10 s, no authentication on "
    "loopback) except the per-caller write rate limit, which is off (--write-rate 0; see coordinator_args in the "
    "JSON); both are fresh for each scenario.",
    "The load process (the harness) runs the API clients, the raw etcd reference clients and the simulated "
    "agents. A simulated agent is the agent's own session code (StateFile, Overrides, Journal, FakeDriver, "
    "Reconciler, CoordinatorLink) with a state directory of its own (on tmpfs when /dev/shm exists: here up to "
    "1000 agents share one disk and one event loop, which real agents do not), over real gRPC, each on a TCP "
    "connection of its own.",
    "The fan-out and three-coordinator scenarios spread their simulated agents over N load processes "
    "(--load-processes, default 2), each a Python process of its own with its own event loop and gRPC channels, "
    "which report each agent's apply time to the harness (time.perf_counter, CLOCK_MONOTONIC on Linux, one "
    "clock for all processes); their reference's etcd watchers are spread the same way over the same processes, "
    "a channel each. In the CPU seconds, load is the harness and load k is load process k.",
    "Reference clients use etcd's v3 stubs from aetcd.rpc on grpc.aio channels, as coordinator/store.py does.",
    "Default sizes: API 64 clients x 1280 creates of each kind x 5 runs; convergence at 10, 100 and 1000 sites, 100 "
    "trials each; fan-out 1000 sites, 5 changes; three coordinators sharing the fan-out's 1000 sites, 5 changes; "
    "full mesh 200 sites (19,900 connections); reconnect storm 1000 sessions; agent footprint 100 peerings over "
    "60 s; address index 100,000 ports over 10 regions (in the load process, no etcd or coordinator), 2,000 "
    "lookups of each kind; policy expansion 500 sites (997 connections from one apply).",
    "Profiling: `--profile-coordinator DIR` runs the coordinator under cProfile (one file per start), "
    "`--profile-load FILE` the load process.",
    "Latencies are p50 / p99 / max over the trials; throughputs the median over the runs. The machine has two "
    "cores for etcd, the coordinator and the load process together, and other processes (other engineers' test "
    "runs) may have been running at the same time: treat single figures with care and compare ratios.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--scenario", action="append", default=[],
                   help=f"run only this scenario (repeatable or comma-separated): {', '.join(SCENARIOS)}")
    p.add_argument("--tiny", action="store_true", help="tiny sizes (seconds per scenario), as the smoke test uses")
    p.add_argument("--sites", type=int, default=0,
                   help="sites for fan-out and reconnect storm, and the largest convergence size")
    p.add_argument("--convergence-sizes", default="", help="comma-separated site counts (default 10,100,1000)")
    p.add_argument("--trials", type=int, default=0, help="convergence trials per size (default 100)")
    p.add_argument("--api-clients", type=int, default=0, help="concurrent API clients (default 64)")
    p.add_argument("--api-ops", type=int, default=0, help="creates per throughput run (default 1280)")
    p.add_argument("--runs", type=int, default=0, help="repeated throughput runs (default 5)")
    p.add_argument("--fanout-trials", type=int, default=0, help="fan-out changes (default 5)")
    p.add_argument("--mesh-sites", type=int, default=0, help="sites of the full mesh (default 200)")
    p.add_argument("--footprint-seconds", type=float, default=0, help="agent footprint window (default 60)")
    p.add_argument("--footprint-peerings", type=int, default=0, help="peerings of the measured agent (default 100)")
    p.add_argument("--address-ports", type=int, default=0, help="VM ports in the address index (default 100000)")
    p.add_argument("--address-regions", type=int, default=0, help="regions of the address index (default 10)")
    p.add_argument("--address-queries", type=int, default=0, help="address lookups of each kind (default 2000)")
    p.add_argument("--policy-sites", type=int, default=0,
                   help="sites of the hub-and-spoke policy one apply creates (default 500)")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="where performance.md and performance.json go (default: docs/ when every scenario runs, "
                   "else the working directory)")
    p.add_argument("--work-dir", type=Path, default=None, help="etcd data and logs (default: a new temp dir)")
    p.add_argument("--agent-state-dir", type=Path, default=None,
                   help="state directories of the simulated agents (default: a new dir in /dev/shm if present)")
    p.add_argument("--keep", action="store_true", help="keep the working directories afterwards")
    p.add_argument("--coordinator-log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--coordinator-arg", action="append", default=None, metavar="ARG",
                   help="an option for isthmus-coordinator, repeatable (e.g. --coordinator-arg=--write-rate=50); "
                   "replaces the benchmark's default of --write-rate 0 (no limit)")
    p.add_argument("--profile-coordinator", type=Path, default=None, metavar="DIR",
                   help="run the coordinator under cProfile, one .prof file per start in DIR")
    p.add_argument("--profile-load", type=Path, default=None, metavar="FILE",
                   help="run this (the load) process under cProfile and write the stats to FILE")
    p.add_argument("--shared-connection", action="store_true",
                   help="let the simulated agents of a process share one TCP connection (gRPC's default within a "
                   "process)")
    p.add_argument("--load-processes", type=int, default=2, metavar="N",
                   help="load processes the fan-out and three-coordinator scenarios spread their simulated agents "
                   "and the etcd watchers of their reference over, each with its own gRPC channels (default 2)")
    p.add_argument("--agent-logs", action="store_true", help="show the simulated agents' logs (very many lines)")
    p.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds (default 3600)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    a = p.parse_args(argv)
    chosen = []
    for item in a.scenario:
        for name in (x.strip() for x in item.split(",") if x.strip()):
            name = ALIASES.get(name, name).replace("-", "_")
            if name not in SCENARIOS:
                p.error(f"--scenario {name!r}: one of {', '.join(SCENARIOS)}")
            chosen.append(name)
    a.chosen = chosen or list(SCENARIOS)
    if a.load_processes < 1:
        p.error(f"--load-processes {a.load_processes}: at least 1")
    return a


def sizes_from(a: argparse.Namespace) -> Sizes:
    s = Sizes.tiny() if a.tiny else Sizes()
    if a.sites:
        s.fanout_sites = s.storm_sites = a.sites
        s.convergence_sizes = sorted({x for x in s.convergence_sizes if x < a.sites} | {a.sites})
    if a.convergence_sizes:
        s.convergence_sizes = sorted({int(x) for x in a.convergence_sizes.split(",") if x.strip()})
    for attr in ("trials", "api_clients", "api_ops", "runs", "fanout_trials", "mesh_sites", "footprint_seconds",
                 "footprint_peerings", "address_ports", "address_regions", "address_queries", "policy_sites"):
        if getattr(a, attr):
            setattr(s, attr, getattr(a, attr))
    if min(s.convergence_sizes) < 2 or s.fanout_sites < 1 or s.storm_sites < 1 or s.mesh_sites < 2:
        raise SystemExit("sizes: convergence needs at least 2 sites, the mesh 2, fan-out and storm 1")
    if s.policy_sites < 3:
        raise SystemExit("sizes: the policy's hub-and-spoke needs at least 3 sites (two hubs and a spoke)")
    if min(s.address_ports, s.address_regions, s.address_queries) < 1:
        raise SystemExit("sizes: the address index needs at least 1 port, 1 region and 1 query")
    return s


def _raise_fd_limit() -> None:
    # 1000 agents and 1000 watchers are a few thousand sockets in this process and in the coordinator.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


async def run_all(a: argparse.Namespace, ctx: Context) -> tuple[list[ScenarioResult], dict[str, str]]:
    results: list[ScenarioResult] = []
    failures: dict[str, str] = {}
    for name in a.chosen:
        ctx.say(f"== {name}")
        t0 = time.monotonic()
        code = code_version(REPO)
        try:
            result = await SCENARIOS[name](ctx)
        except Exception as exc:  # one scenario failing must not hide the others' figures
            failures[name] = f"{type(exc).__name__}: {exc}"
            ctx.say(f"{name} FAILED: {exc!r}")
            traceback.print_exc()
            continue
        result.duration_s = time.monotonic() - t0
        result.code = code
        results.append(result)
        for f in result.figures:
            ratio = f"{f.ratio:.3g}" if f.ratio is not None else "n/a"
            ctx.say(f"{name}: {f.size}: {f.name} = {f.value:.4g} {f.unit} (reference {f.reference_name} = "
                    f"{f.reference if f.reference is None else round(f.reference, 4)}; ratio {ratio})")
    return results, failures


async def _main(a: argparse.Namespace, ctx: Context) -> tuple[list[ScenarioResult], dict[str, str]]:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    return await asyncio.wait_for(run_all(a, ctx), a.timeout)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sizes = sizes_from(a)
    _raise_fd_limit()
    # The simulated agents log what a real agent logs; here that is 1000 agents' worth on one terminal.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("isthmus").setLevel(logging.DEBUG if a.agent_logs else logging.ERROR)
    own_connection_per_agent(not a.shared_connection)
    work = a.work_dir or Path(tempfile.mkdtemp(prefix="isthmus-bench-"))
    shm = Path("/dev/shm")
    agent_root = a.agent_state_dir or (Path(tempfile.mkdtemp(prefix="isthmus-bench-agents-", dir=shm))
                                       if shm.is_dir() and os.access(shm, os.W_OK) else work / "agents")
    work.mkdir(parents=True, exist_ok=True)
    agent_root.mkdir(parents=True, exist_ok=True)
    every = set(a.chosen) == set(SCENARIOS)
    out_dir = a.output_dir or (REPO / "docs" if every else work)
    ctx = Context(work, agent_root, sizes, log_level=a.coordinator_log_level, profile_dir=a.profile_coordinator,
                  quiet=a.quiet, coordinator_args=a.coordinator_arg, load_processes=a.load_processes,
                  shared_connection=a.shared_connection, agent_logs=a.agent_logs)
    started = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    doc = {
        "started": started.isoformat().replace("+00:00", "Z"),
        "machine": machine(),
        "code": code_version(REPO),
        "sizes": vars(sizes),
        "scenarios_run": a.chosen,
        "load_processes": a.load_processes,
        "coordinator_args": a.coordinator_arg if a.coordinator_arg is not None else default_coordinator_args(),
        "how": HOW,
        "caveat": "Other processes (other engineers' test runs) may have been running on this machine during the "
                  "measurement; the figures are re-measured before a release.",
    }
    ctx.say(f"work dir {work}, simulated agents' state in {agent_root}, results to {out_dir}")
    t0 = time.monotonic()
    code = 0
    results: list[ScenarioResult] = []
    failures: dict[str, str] = {}
    profile = cProfile.Profile() if a.profile_load else None
    try:
        if profile is not None:
            profile.enable()
        results, failures = asyncio.run(_main(a, ctx))
    except (asyncio.CancelledError, KeyboardInterrupt):
        failures["(run)"] = "interrupted"
        code = 130
    except TimeoutError:
        failures["(run)"] = f"gave up after --timeout {a.timeout}s"
        code = 1
    finally:
        if profile is not None:
            profile.disable()
            profile.dump_stats(a.profile_load)
        doc["duration_s"] = round(time.monotonic() - t0, 1)
        write(out_dir, doc, results, failures)
        if not a.keep:
            shutil.rmtree(agent_root, ignore_errors=True)
            if a.work_dir is None and out_dir != work:
                shutil.rmtree(work, ignore_errors=True)
            elif a.work_dir is None:  # the results stay; etcd data and logs go
                for child in work.iterdir():
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
    ctx.say(f"wrote {out_dir / 'performance.md'} and {out_dir / 'performance.json'}")
    if failures and code == 0:
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
