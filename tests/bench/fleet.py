"""Many site agents in one load process, each running the agent's own session code.

A simulated agent is what ``isthmus-agent`` runs, minus the admin socket:
StateFile + Overrides + Journal + FakeDriver + Reconciler + CoordinatorLink,
with its own state directory, over real gRPC to the coordinator. The load
process can look at its own agents directly (``reconciler.applied_revision``)
instead of asking the coordinator.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from isthmus.agent import link as agent_link
from isthmus.agent.journal import Journal
from isthmus.agent.link import CoordinatorLink
from isthmus.agent.overrides import Overrides
from isthmus.agent.reconciler import Reconciler
from isthmus.agent.state import DesiredState, StateFile
from isthmus.drivers.base import DriverContext
from isthmus.drivers.fake import FakeDriver

from .cluster import OWN_CONNECTION


def own_connection_per_agent(enabled: bool = True) -> None:
    """Give each simulated agent's channel a TCP connection of its own, as on separate hosts.

    gRPC shares one connection between all channels of a process with the same
    target and arguments; without this, 1000 simulated agents would be 1000
    streams on one connection. The agent's channel options are a module list
    (``isthmus.agent.link.CHANNEL_OPTIONS``); this adds the one channel argument.
    """
    opts = agent_link.CHANNEL_OPTIONS
    if enabled and OWN_CONNECTION not in opts:
        opts.append(OWN_CONNECTION)
    elif not enabled and OWN_CONNECTION in opts:
        opts.remove(OWN_CONNECTION)


REFUSED = ("PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_ARGUMENT", "UNIMPLEMENTED")


@dataclass(frozen=True)
class Taken:
    """One desired state handed to a reconciler: when, at which revision, which peerings."""

    at: float
    revision: int
    peerings: frozenset[str]


class TracingReconciler(Reconciler):
    """The agent's reconciler, noting every desired state the link hands it (when tracing is on)."""

    trace: list[Taken] | None = None

    def set_desired(self, state: DesiredState) -> None:
        if self.trace is not None:
            self.trace.append(Taken(time.perf_counter(), state.revision, frozenset(state.peerings)))
        super().set_desired(state)


class SimAgent:
    """One site's agent session in this process."""

    def __init__(self, site: str, coordinator: str, state_dir: Path, interval: float, heartbeat: float) -> None:
        self.site = site
        self.state_file = StateFile(state_dir)
        self.driver = FakeDriver(DriverContext(site, state_dir / "fake", {}))
        self.reconciler = TracingReconciler(site, [self.driver], Overrides(state_dir / "overrides.json"),
                                            Journal(state_dir / "journal.jsonl", limit=1000), interval=interval)
        self.link = CoordinatorLink(site, [coordinator], self.reconciler, self.state_file, "fake",
                                    heartbeat=heartbeat)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """As isthmus-agent starts: load the persisted state, apply it, then reconcile and link."""
        state = self.state_file.load(self.site)
        self.reconciler.note("agent", f"started: {len(state.peerings)} persisted peerings at rev {state.revision}")
        self.reconciler.set_desired(state)
        await self.reconciler.reconcile_once()
        self._tasks = [asyncio.create_task(self.reconciler.run(), name=f"reconciler-{self.site}"),
                       asyncio.create_task(self.link.run(), name=f"link-{self.site}")]

    def crashed(self) -> BaseException | None:
        for t in self._tasks:
            if t.done() and not t.cancelled():
                return t.exception() or RuntimeError(f"{t.get_name()} returned")
        return None

    @property
    def synced(self) -> bool:
        """Connected, holding a desired state from a coordinator, and that state applied."""
        r = self.reconciler
        return self.link.connected and r.desired.revision > 0 and r.applied_revision >= r.desired.revision

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self.driver.close()

    async def applied(self, floor: int, timeout: float) -> tuple[float, int]:
        """Wait until the applied revision is at least ``floor``; (perf_counter then, the revision)."""
        r = self.reconciler

        async def wait() -> tuple[float, int]:
            seq, report = r.report()
            while report.applied_revision < floor:
                seq, report = await r.wait_report(seq)
            return time.perf_counter(), report.applied_revision

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"applied rev not yet {floor} after {timeout}s: {self.describe()}") from None

    def describe(self) -> str:
        r = self.reconciler
        return (f"site {self.site}: {'connected' if self.link.connected else 'not connected'}, desired rev "
                f"{r.desired.revision} ({len(r.desired.peerings)} peerings), applied rev {r.applied_revision}, "
                f"link error {self.link.last_error!r}")


class Fleet:
    """The simulated agents of one scenario, with state directories under ``root``."""

    def __init__(self, coordinator: str, root: Path, interval: float = 10.0, heartbeat: float = 5.0) -> None:
        self.coordinator = coordinator
        self.root = root
        self.interval = interval
        self.heartbeat = heartbeat
        self.agents: dict[str, SimAgent] = {}

    def __len__(self) -> int:
        return len(self.agents)

    async def add(self, sites: Iterable[str], subdir: str = "") -> list[SimAgent]:
        new = [SimAgent(s, self.coordinator, self.root / subdir / s, self.interval, self.heartbeat) for s in sites]
        for a in new:
            self.agents[a.site] = a
        await asyncio.gather(*(a.start() for a in new))
        return new

    async def wait(self, agents: Iterable[SimAgent], done: Callable[[SimAgent], bool], timeout: float,
                   what: str, interval: float = 0.0) -> float:
        """Poll until ``done`` holds for every agent; returns perf_counter then. Fails naming the laggards."""
        return max((await self.times(agents, done, timeout, what, interval)).values(), default=time.perf_counter())

    async def times(self, agents: Iterable[SimAgent], done: Callable[[SimAgent], bool], timeout: float,
                    what: str, interval: float = 0.0) -> dict[str, float]:
        """Poll until ``done`` holds for every agent; perf_counter when each was first seen done.

        The polling shares the event loop with the agents: by default it looks
        every 10 ms at up to 200 agents, less often at more (50 ms at 1000).
        """
        pending = list(agents)
        interval = interval or max(0.01, len(pending) / 20_000)
        seen: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        next_health = 0.0
        while True:
            now = time.perf_counter()
            still = []
            for a in pending:
                if done(a):
                    seen[a.site] = now
                else:
                    still.append(a)
            pending = still
            if not pending:
                return seen
            if time.monotonic() < next_health:
                await asyncio.sleep(interval)
                continue
            next_health = time.monotonic() + 0.5
            for a in pending:
                if (exc := a.crashed()) is not None:
                    raise RuntimeError(f"site {a.site}: agent task failed: {exc!r}")
                if a.link.last_error.startswith(REFUSED):  # retrying will not help: fail now, not at the deadline
                    raise RuntimeError(f"the coordinator refuses the agents: {a.describe()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} agents not {what} after {timeout}s; e.g. {pending[0].describe()}")
            await asyncio.sleep(interval)

    async def stop(self, agents: Iterable[SimAgent] | None = None, timeout: float = 60.0) -> None:
        """Stop agents (all by default): their streams end as when an agent process stops; bounded."""
        chosen = list(self.agents.values()) if agents is None else list(agents)
        for a in chosen:
            self.agents.pop(a.site, None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(a.stop() for a in chosen), return_exceptions=True), timeout)
