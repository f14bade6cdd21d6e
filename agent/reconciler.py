"""The agent's level-based reconcile loop: desired state in, drivers applied, observed state out.

Each pass takes the latest desired state (never an event's payload), hands each
driver the peerings of the types it handles, observes, and decides when to
look again: at once when asked, soon while a peering is still coming up or a
driver failed (with backoff), else after the periodic interval. A driver
failure never stops the loop; it shows as the peerings' ERROR state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from isthmus.agent.journal import Journal
from isthmus.agent.overrides import Overrides
from isthmus.agent.state import DesiredState
from isthmus.core import model as m
from isthmus.drivers.base import Driver, DriverError

log = logging.getLogger(__name__)

FAST_RECHECK = 0.25  # seconds, while a peering is CONNECTING
MAX_BACKOFF = 30.0


_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Report:
    """What the agent tells the coordinator: the revision applied and what it observes."""

    applied_revision: int
    observed: dict[str, m.ObservedPeering]


class Reconciler:
    """Realizes the coordinator's desired state with the local overrides applied."""

    def __init__(self, site: str, drivers: Sequence[Driver], overrides: Overrides, journal: Journal,
                 interval: float = 10.0) -> None:
        self.observe_pass: Callable[[float], None] | None = None  # the metrics' reconcile latency, when served
        self.site = site
        self.drivers = list(drivers)
        self.overrides = overrides
        self.journal = journal
        self.interval = interval
        self.desired = DesiredState(site)
        self.effective: dict[str, m.DesiredPeering] = {}
        self.applied_revision = 0
        self.observed: dict[str, m.ObservedPeering] = {}
        self.local_seq = 0  # bumped when overrides or the journal change
        self._followed: dict[str, set[str]] = {}  # companion -> peerings it realizes
        self._local_changed = asyncio.Event()
        self.last_error = ""
        self.passes = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._failures = 0
        self._report_changed = asyncio.Condition()
        self._report_seq = 0
        for driver in self.drivers:
            driver.subscribe(self.poke)  # a session that goes down shows at once, not at the next interval

    # ------------------------------------------------------------ inputs

    def set_desired(self, state: DesiredState) -> None:
        self.desired = state
        self._wake.set()

    def poke(self) -> None:
        self._wake.set()

    def note(self, kind: str, message: str, connection: str = "", level: str = "") -> None:
        """Record an event of the site: journal (on disk), log, and the coordinators' event history.

        The one way for any agent component to raise an event (kinds: link,
        desired, peering, override, agent, sync, quota, error; level info,
        warning or error, "" for the kind's default). Call it on the event
        loop's thread; from another thread, ``loop.call_soon_threadsafe(note,
        kind, message)``. It never raises: a journal that cannot be written is
        logged and the entry kept in memory.
        """
        entry = self.journal.append(kind, message, connection, level)
        log.log(_LOG_LEVELS.get(entry.level, logging.INFO), "site %s: %s%s", self.site,
                f"{connection}: " if connection else "", message)
        self._bump_local()

    def local_changed(self) -> None:
        """Wake the link's local report (something besides the journal changed what it sends)."""
        self._bump_local()

    def _bump_local(self) -> None:
        self.local_seq += 1
        self._local_changed.set()

    async def wait_local(self, after: int) -> int:
        """Wait until overrides or the journal changed after sequence ``after`` (one waiter: the link)."""
        while self.local_seq == after:
            self._local_changed.clear()
            await self._local_changed.wait()
        return self.local_seq

    def overrides_changed(self, message: str, connection: str) -> None:
        self.note("override", message, connection)
        self._wake.set()

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        while True:
            delay = await self.reconcile_once()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass

    @property
    def _dataplane(self) -> list[Driver]:
        return [d for d in self.drivers if not d.companion]

    @property
    def _companions(self) -> list[Driver]:
        return [d for d in self.drivers if d.companion]

    def _driver_for(self, ctype: m.ConnectionType) -> Driver | None:
        return next((d for d in self._dataplane if ctype in d.handles), None)

    async def _run(self, driver: Driver, mine: dict[str, m.DesiredPeering], revision: int,
                   errors: list[str]) -> tuple[dict[str, m.ObservedPeering], bool]:
        """apply + observe of one driver; a failure becomes ERROR on its peerings, never an exception."""
        try:
            await driver.apply(mine)
            return await driver.observe(), True
        except DriverError as exc:
            errors.append(f"{driver.name}: {exc}")
            log.warning("site %s: driver %s failed at rev %d: %s", self.site, driver.name, revision, exc)
            text = f"{driver.name}: {exc}"
            retry = not exc.terminal
        except Exception as exc:  # a driver bug must not kill the loop
            errors.append(f"{driver.name}: {exc!r}")
            log.exception("site %s: driver %s crashed", self.site, driver.name)
            text = f"{driver.name} crashed: {exc!r}"
            retry = True
        return {name: self._error(name, text, driver.name) for name in mine}, not retry

    async def reconcile_once(self) -> float:
        """One pass; returns the delay before the next one."""
        started = time.monotonic()
        try:
            return await self._pass()
        finally:
            if self.observe_pass is not None:
                self.observe_pass(time.monotonic() - started)

    async def _pass(self) -> float:
        async with self._lock:
            self._wake.clear()
            self.passes += 1
            for gone in self.overrides.expire():
                self.note("override", f"local {gone.kind} override expired", gone.connection)
            desired = self.desired
            effective = self.overrides.effective(desired.peerings)
            self.effective = effective
            by_driver: dict[int, dict[str, m.DesiredPeering]] = {id(d): {} for d in self.drivers}
            observed: dict[str, m.ObservedPeering] = {}
            drivers = {t: self._driver_for(t) for t in m.ConnectionType}  # looked up once per pass
            for name, peering in effective.items():
                driver = drivers[peering.type]
                if driver is None:
                    have = ", ".join(d.name for d in self.drivers)
                    observed[name] = self._error(name, f"no driver for {peering.type.upper()} (drivers: {have})")
                else:
                    by_driver[id(driver)][name] = peering
            failed = False
            errors: list[str] = []
            for driver in self._dataplane:
                mine = by_driver[id(driver)]
                seen, ok = await self._run(driver, mine, desired.revision, errors)
                failed = failed or not ok
                for name in mine:
                    observed[name] = seen.get(name) or self._error(
                        name, f"{driver.name} did not realize it", driver.name
                    )
            # Companions (e.g. neutron) follow what the dataplane established, and keep it while it
            # stays desired (a session flap must not remove the Neutron side); their failure makes
            # the peering ERROR, since the site cannot use it yet.
            up = {n for n, o in observed.items() if n in effective and o.state == m.PeeringState.ESTABLISHED}
            for driver in self._companions:
                keep = (up | self._followed.get(driver.name, set())) & effective.keys()
                mine = {n: effective[n] for n in keep if effective[n].type in driver.handles}
                self._followed[driver.name] = set(mine)
                seen, ok = await self._run(driver, mine, desired.revision, errors)
                failed = failed or not ok
                for name in mine:
                    extra = seen.get(name)
                    if extra is not None and extra.state == m.PeeringState.ERROR:
                        text = extra.error if extra.error.startswith(driver.name) else f"{driver.name}: {extra.error}"
                        observed[name] = self._error(name, text, f"{observed[name].driver}+{driver.name}")
            self.last_error = "; ".join(errors)
            applied = desired.revision if not failed else self.applied_revision
            await self._publish(applied, observed)
            delay = self.interval
            if failed:
                self._failures += 1
                delay = float(min(MAX_BACKOFF, 0.5 * 2 ** min(self._failures, 8)))
            else:
                self._failures = 0
                if any(o.state == m.PeeringState.CONNECTING for o in observed.values()):
                    delay = FAST_RECHECK
            expiry = self.overrides.next_expiry_ms()
            if expiry:
                delay = max(0.0, min(delay, expiry / 1000 - time.time()))
            return delay

    def _error(self, name: str, text: str, driver: str = "") -> m.ObservedPeering:
        prev = self.observed.get(name)
        since = prev.since_ms if prev is not None and prev.state == m.PeeringState.ERROR else _now_ms()
        return m.ObservedPeering(name, m.PeeringState.ERROR, text, since, driver)

    async def _publish(self, applied: int, observed: dict[str, m.ObservedPeering]) -> None:
        for name, o in observed.items():
            before = self.observed.get(name)
            if before is None or before.state != o.state:
                text = f"{before.state if before else 'new'} -> {o.state}" + (f": {o.error}" if o.error else "")
                self.note("peering", text, name, _transition_level(before, o))
        for name in self.observed.keys() - observed.keys():
            self.note("peering", "removed", name)
        changed = applied != self.applied_revision or observed != self.observed
        if applied != self.applied_revision:
            established = sum(o.state == m.PeeringState.ESTABLISHED for o in observed.values())
            log.info("site %s: applied rev %d (%d peerings, %d established)", self.site, applied,
                     len(observed), established)
        self.applied_revision = applied
        self.observed = observed
        if changed:
            async with self._report_changed:
                self._report_seq += 1
                self._report_changed.notify_all()

    # ------------------------------------------------------------ outputs

    def report(self) -> tuple[int, Report]:
        return self._report_seq, Report(self.applied_revision, dict(self.observed))

    async def wait_report(self, after: int) -> tuple[int, Report]:
        """Wait until the report differs from sequence ``after``."""
        async with self._report_changed:
            await self._report_changed.wait_for(lambda: self._report_seq != after)
        return self.report()


def _transition_level(before: m.ObservedPeering | None, after: m.ObservedPeering) -> str:
    """error when a peering fails, warning when an established one goes (DOWN held by an override too)."""
    if after.state == m.PeeringState.ERROR:
        return "error"
    if before is not None and before.state == m.PeeringState.ESTABLISHED:
        return "warning"
    return "info"
