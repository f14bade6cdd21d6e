"""Load processes: the simulated agents and the reference's etcd watchers, spread over child processes.

One Python process cannot keep up with 1000 simulated agents (a delta costs
it about 400 us per agent: receive, persist, reconcile, report), so the
fan-out scenarios hand their agents, and the etcd watchers of their
reference, to N load processes (``--load-processes``): each a ``python -m
tests.bench.loadproc`` child with its own event loop and its own gRPC
channels (a TCP connection each), driven by the harness over its
stdin/stdout, one JSON line per request and per reply.

Times are ``time.perf_counter()``, which on Linux is CLOCK_MONOTONIC: one
clock for every process of the machine, so the harness compares a child's
times with its own. A child refuses to start where perf_counter is another
clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import grpc.aio

from .cluster import OWN_CONNECTION, SETPRIV, RawWatcher, _die_with_parent, tail, wait_seen
from .fleet import Fleet, SimAgent, own_connection_per_agent

REPO = Path(__file__).resolve().parents[2]
CLOCK = "CLOCK_MONOTONIC"
LINE_LIMIT = 64 << 20  # a reply holds a time per agent: far beyond asyncio's 64 KiB default line


# ---------------------------------------------------------------- the child


class LocalChannels:
    """The etcd channels of one load process (``cluster.Channels``), each with a TCP connection of its own."""

    def __init__(self, etcd_endpoint: str) -> None:
        self.etcd_endpoint = etcd_endpoint
        self._channels: list[grpc.aio.Channel] = []

    def channel(self, target: str = "") -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(target or self.etcd_endpoint,
                                       options=[OWN_CONNECTION, ("grpc.max_receive_message_length", 64 << 20)])
        self._channels.append(ch)
        return ch

    async def close(self) -> None:
        channels, self._channels = self._channels, []
        await asyncio.gather(*(ch.close() for ch in channels), return_exceptions=True)


class Worker:
    """What one load process holds: its share of the agents and of the reference's watchers."""

    def __init__(self) -> None:
        self.fleets: dict[str, Fleet] = {}  # by coordinator address
        self.agents: list[SimAgent] = []
        self.probes: list[asyncio.Task[tuple[float, int]]] = []
        self.watchers: list[RawWatcher] = []
        self.channels: LocalChannels | None = None

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "agents":
            await self.add_agents(Path(req["root"]), req["sites"], req["peerings"], req["timeout"])
        elif op == "arm":
            self.arm(req["timeout"])
        elif op == "applied":
            return await self.applied(req["rev"], req["timeout"])
        elif op == "watch":
            await self.watch(req["endpoint"], req["key"], req["count"], req["timeout"])
        elif op == "seen":
            return {"seen": await wait_seen(self.watchers, req["rev"], req["timeout"]) if self.watchers else []}
        elif op == "stop":
            await self.stop()
        else:
            raise ValueError(f"op {op!r}: one of agents, arm, applied, watch, seen, stop")
        return {}

    async def add_agents(self, root: Path, sites: list[list[str]], peerings: int, timeout: float) -> None:
        """Start an agent for each [site, coordinator address]; wait until each holds ``peerings`` applied."""
        by_coordinator: dict[str, list[str]] = {}
        for site, coordinator in sites:
            by_coordinator.setdefault(coordinator, []).append(site)
        new: list[SimAgent] = []
        for coordinator, names in by_coordinator.items():
            fleet = self.fleets.setdefault(coordinator, Fleet(coordinator, root))
            new += await fleet.add(names)
        self.agents += new
        if new:
            await next(iter(self.fleets.values())).wait(
                new, lambda a: a.synced and len(a.reconciler.desired.peerings) == peerings, timeout=timeout,
                what=f"synced with {peerings} peerings")

    def arm(self, timeout: float) -> None:
        """Before a change: trace what each agent receives, and wait for each to apply a revision past its own."""
        for a in self.agents:
            a.reconciler.trace = []
        self.probes = [asyncio.create_task(a.applied(a.reconciler.applied_revision + 1, timeout))
                       for a in self.agents]

    async def applied(self, rev: int, timeout: float) -> dict[str, Any]:
        """When each agent applied ``rev`` (or later), and when it first received a desired state since ``arm``."""
        probes, self.probes = self.probes, []
        if not probes:
            probes = [asyncio.create_task(a.applied(rev, timeout)) for a in self.agents]
        seen = await asyncio.gather(*probes)
        seen = [x if x[1] >= rev else await a.applied(rev, timeout) for x, a in zip(seen, self.agents, strict=True)]
        received: dict[str, float | None] = {}
        for a in self.agents:
            trace, a.reconciler.trace = a.reconciler.trace, None
            received[a.site] = trace[0].at if trace else None
        return {"applied": {a.site: x[0] for x, a in zip(seen, self.agents, strict=True)}, "received": received}

    async def watch(self, endpoint: str, key: str, count: int, timeout: float) -> None:
        """``count`` raw etcd watch streams on ``key``, each on a channel of its own; once all are created."""
        self.channels = self.channels or LocalChannels(endpoint)
        new = [RawWatcher(self.channels, key) for _ in range(count)]
        self.watchers += new
        for w in new:
            w.start()
        await asyncio.wait_for(asyncio.gather(*(w.created.wait() for w in new)), timeout)

    async def stop(self) -> None:
        """Stop the watchers and the agents (their streams end as when an agent process stops)."""
        watchers, self.watchers = self.watchers, []
        fleets, self.fleets = list(self.fleets.values()), {}
        self.agents = []
        await asyncio.gather(*(w.stop() for w in watchers), return_exceptions=True)
        await asyncio.gather(*(f.stop() for f in fleets), return_exceptions=True)
        if self.channels is not None:
            await self.channels.close()


async def serve(inp: TextIO, out: TextIO) -> None:
    """Answer requests, one JSON line each, until ``stop`` or the end of the input."""
    worker = Worker()
    try:
        while line := await asyncio.to_thread(inp.readline):
            req = json.loads(line)
            try:
                reply = {"ok": True, **await worker.handle(req)}
            except Exception as exc:  # the harness names the process and the error
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
            if req["op"] == "stop":
                break
    finally:
        await worker.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.loadproc", description="a benchmark load process")
    p.add_argument("--shared-connection", action="store_true")
    p.add_argument("--agent-logs", action="store_true")
    a = p.parse_args(argv)
    clock = time.get_clock_info("perf_counter").implementation
    if CLOCK not in clock:
        raise SystemExit(f"perf_counter is {clock}, not {CLOCK}: its times cannot be compared across processes")
    out = os.fdopen(os.dup(1), "w")  # the replies; anything else printed goes to stderr (the log)
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("isthmus").setLevel(logging.DEBUG if a.agent_logs else logging.ERROR)
    own_connection_per_agent(not a.shared_connection)
    asyncio.run(serve(sys.stdin, out))
    return 0


# ---------------------------------------------------------------- the harness's side


class LoadProcesses:
    """N load processes, started and driven by the harness; each request goes to all of them at once."""

    def __init__(self, n: int, log_dir: Path, shared_connection: bool = False, agent_logs: bool = False) -> None:
        if n < 1:
            raise ValueError(f"load processes: {n}, at least 1")
        self.n = n
        self.log_dir = log_dir
        self.flags = [*(["--shared-connection"] if shared_connection else []),
                      *(["--agent-logs"] if agent_logs else [])]
        self.procs: list[asyncio.subprocess.Process] = []

    @property
    def pids(self) -> dict[str, int]:
        return {f"load {k + 1}": p.pid for k, p in enumerate(self.procs)}

    def log(self, k: int) -> Path:
        return self.log_dir / f"load-{k + 1}.log"

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        wrap = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []  # dies with the harness, as in spawn()
        for k in range(self.n):
            with open(self.log(k), "ab") as logf:
                self.procs.append(await asyncio.create_subprocess_exec(
                    *wrap, sys.executable, "-m", "tests.bench.loadproc", *self.flags, cwd=REPO,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=logf, limit=LINE_LIMIT,
                    start_new_session=True, preexec_fn=None if SETPRIV else _die_with_parent))

    async def call(self, k: int, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.procs[k]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(req) + "\n").encode())
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load process {k + 1} exited during {req['op']}:\n{tail(self.log(k))}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"load process {k + 1}, {req['op']}: {reply['error']}")
        return reply

    async def each(self, reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.call(k, r) for k, r in enumerate(reqs))))

    async def start_agents(self, root: Path, sites: list[tuple[str, str]], peerings: int, timeout: float) -> None:
        """An agent for each (site, coordinator address), dealt round robin; once each holds ``peerings``."""
        await self.each([{"op": "agents", "root": str(root), "sites": sites[k::self.n], "peerings": peerings,
                          "timeout": timeout} for k in range(self.n)])

    async def arm(self, timeout: float) -> None:
        """Call before a change: see ``Worker.arm``."""
        await self.each([{"op": "arm", "timeout": timeout}] * self.n)

    async def applied(self, rev: int, timeout: float) -> tuple[dict[str, float], dict[str, float | None]]:
        """perf_counter when each site's agent applied ``rev``, and when it received the change (None: no trace)."""
        applied: dict[str, float] = {}
        received: dict[str, float | None] = {}
        for reply in await self.each([{"op": "applied", "rev": rev, "timeout": timeout}] * self.n):
            applied.update(reply["applied"])
            received.update(reply["received"])
        return applied, received

    async def watch(self, endpoint: str, key: str, count: int, timeout: float) -> None:
        """``count`` raw etcd watchers of ``key``, spread as evenly as the agents are."""
        await self.each([{"op": "watch", "endpoint": endpoint, "key": key, "count": len(range(k, count, self.n)),
                          "timeout": timeout} for k in range(self.n)])

    async def seen(self, rev: int, timeout: float) -> list[float]:
        """perf_counter when each watcher saw ``rev``."""
        return [t for r in await self.each([{"op": "seen", "rev": rev, "timeout": timeout}] * self.n)
                for t in r["seen"]]

    async def close(self, timeout: float = 60.0) -> None:
        """Stop the agents and watchers (their streams end first), then the processes; bounded."""
        async def stop(k: int, proc: asyncio.subprocess.Process) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.call(k, {"op": "stop"}), timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            with contextlib.suppress(ProcessLookupError):
                if proc.returncode is None:
                    proc.kill()
            await proc.wait()

        procs, self.procs = self.procs, []
        await asyncio.gather(*(stop(k, p) for k, p in enumerate(procs)))


if __name__ == "__main__":
    sys.exit(main())
