"""What every scenario gets: sizes, working directories, a fresh cluster, progress output."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from .cluster import Cluster
from .loadproc import LoadProcesses


@dataclass
class Sizes:
    """Sizes of every scenario; the defaults fit `make bench` into 10 minutes on 2 cores."""

    api_clients: int = 64
    api_ops: int = 1280  # creates per run, of each kind
    runs: int = 5  # repeated throughput runs (the median is reported)
    convergence_sizes: list[int] = field(default_factory=lambda: [10, 100, 1000])
    trials: int = 100  # convergence trials per size
    fanout_sites: int = 1000
    fanout_trials: int = 5
    mesh_sites: int = 200  # 19,900 connections
    mesh_clients: int = 64
    storm_sites: int = 1000
    footprint_seconds: float = 60.0
    footprint_peerings: int = 100
    address_ports: int = 100_000  # the address index scenario runs in-process, without etcd
    address_regions: int = 10
    address_queries: int = 2000  # lookups of each kind
    policy_sites: int = 500  # the hub-and-spoke (two hubs) one apply creates

    @classmethod
    def tiny(cls) -> Sizes:
        """Seconds per scenario: for the smoke test, which checks that figures come out, not their values."""
        return cls(api_clients=4, api_ops=16, runs=2, convergence_sizes=[3, 5], trials=3, fanout_sites=5,
                   fanout_trials=2, mesh_sites=4, mesh_clients=4, storm_sites=5, footprint_seconds=3.0,
                   footprint_peerings=5, address_ports=2000, address_regions=10, address_queries=200,
                   policy_sites=5)


@dataclass
class Context:
    work: Path  # etcd data and process logs (disk, as in production)
    agent_root: Path  # state directories of the simulated agents
    sizes: Sizes
    log_level: str = "info"
    profile_dir: Path | None = None
    quiet: bool = False
    coordinator_args: list[str] | None = None  # None: cluster.default_coordinator_args()
    load_processes: int = 2  # processes the fan-out scenarios spread their agents and watchers over
    shared_connection: bool = False  # the simulated agents of a process share one TCP connection
    agent_logs: bool = False
    t0: float = field(default_factory=time.monotonic)

    def say(self, message: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    @contextlib.asynccontextmanager
    async def cluster(self, name: str) -> AsyncIterator[Cluster]:
        """A fresh etcd and coordinator for one scenario, stopped afterwards whatever happens."""
        cluster = Cluster(self.work / name, log_level=self.log_level, profile_dir=self.profile_dir,
                          name=f"coordinator-{name}", extra_args=self.coordinator_args)
        try:
            cluster.start_etcd()
            await cluster.start_coordinator()
            self.say(f"{name}: etcd on {cluster.etcd_endpoint}, coordinator (pid {cluster.coordinator_pid}) "
                     f"on {cluster.address}")
            yield cluster
        finally:
            try:
                await asyncio.wait_for(cluster.close(), 60)
            finally:
                cluster.kill()  # if closing timed out or was cancelled: the processes go anyway

    @contextlib.asynccontextmanager
    async def load(self, name: str) -> AsyncIterator[LoadProcesses]:
        """``load_processes`` load processes (loadproc.py), logging to the scenario's work dir; stopped afterwards."""
        load = LoadProcesses(self.load_processes, self.work / name, self.shared_connection, self.agent_logs)
        try:
            await load.start()
            self.say(f"{name}: {self.load_processes} load processes (pids {', '.join(map(str, load.pids.values()))})")
            yield load
        finally:
            await load.close()

    def agent_dir(self, name: str) -> Path:
        path = self.agent_root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path
