"""The speaker's learned routes in the host's routing table: best paths in, through one worker thread.

The speaker hands over every best-path change (prefix -> the neighbor it came
from); the worker keeps the kernel's table equal to those paths, under
``isthmus.drivers.netlink.RouteTable``'s ownership rules (its table, its route
protocol, its own next hops), coalescing changes that come close together.
A new speaker (after a crash) starts with an empty RIB: it removes nothing
until every neighbor has been back for a second, or ``STALE_TIME`` seconds at
most, so the routes the last one installed keep forwarding while the sessions
come back (what a graceful-restart helper does for its peer, RFC 4724 4.2,
done here for our own kernel).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from isthmus.drivers.netlink import NetlinkError, RouteTable

log = logging.getLogger("isthmus.bgp_speaker.kernel")

COALESCE = 0.05  # seconds: changes within this are installed together
RETRY = 1.0  # seconds after a failed netlink call
STALE_TIME = 60.0  # seconds a new speaker keeps the routes it found before removing any


@dataclass(frozen=True)
class KernelSettings:
    """Whether and where to install: set by the driver (its options and the endpoint's ``bgp.install``)."""

    install: bool = False
    table: int = 179
    protocol: int = 179
    rule_priority: int = 1790


class KernelRoutes:
    """The kernel side of one speaker's RIB: ``configure``, ``own`` and ``best`` are its inputs."""

    def __init__(self, settled: Callable[[], bool]) -> None:
        """``settled()``: every configured neighbor is Established (and has been for a moment)."""
        self._settled = settled
        self._lock = threading.Lock()
        self._best: dict[str, str] = {}  # prefix -> gateway (the neighbor's address)
        self._gateways: set[str] = set()  # every next hop this speaker has installed through
        self._settings = KernelSettings()
        self._changed = threading.Event()
        self._started = time.monotonic()
        self.installed = 0
        self.foreign: tuple[str, ...] = ()
        self.last_error = ""
        self._stop = False
        self._done = threading.Event()
        threading.Thread(target=self._run, name="speaker-kernel", daemon=True).start()

    @property
    def settings(self) -> KernelSettings:
        return self._settings

    def configure(self, settings: KernelSettings) -> None:
        with self._lock:
            self._settings = settings
        self._changed.set()

    def best(self, prefix: str, gateway: str | None) -> None:
        """The best path of ``prefix`` now goes through ``gateway`` (None: it has none left)."""
        with self._lock:
            if gateway is None:
                self._best.pop(prefix, None)
            elif _same_family(prefix, gateway):  # next hop the peer: only for its own family
                self._best[prefix] = gateway
                self._gateways.add(gateway)
        self._changed.set()

    def own(self, gateway: str) -> None:
        """Routes via ``gateway`` (a neighbor) are this speaker's, also those a previous speaker installed."""
        with self._lock:
            self._gateways.add(gateway)
        self._changed.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Remove every route this speaker installed, then stop the worker."""
        self._stop = True
        with self._lock:
            self._best.clear()
        self._changed.set()
        self._done.wait(timeout)

    def _run(self) -> None:
        table: RouteTable | None = None
        current: tuple[int, int, int] | None = None
        settled = False  # once every neighbor was back, the RIB is whole: no route is kept stale any more
        inherited: set[str] = set()  # routes a previous speaker installed, kept until settled
        while True:
            self._changed.wait(RETRY if self.last_error else STALE_TIME / 4 if settled else 0.5)
            time.sleep(COALESCE)
            self._changed.clear()
            with self._lock:
                settings, best, gateways = self._settings, dict(self._best), set(self._gateways)
            where = (settings.table, settings.protocol, settings.rule_priority)
            try:
                if table is not None and where != current:
                    # Moving to another table: empty the old one first.
                    table.sync({}, gateways)
                    table.close()
                    table = None
                if table is None and (settings.install or self._stop or gateways):
                    table, current = RouteTable(*where), where
                    inherited = table.ours()
                    if settings.install:
                        table.ensure_rules()
                if table is not None:
                    want = best if settings.install and not self._stop else {}
                    settled = settled or self._stop or time.monotonic() - self._started >= STALE_TIME \
                        or self._settled()
                    result = table.sync(want, gateways, keep=() if settled else inherited)
                    inherited -= set(want)  # installed by this speaker now: its own to remove
                    self.installed = len(want) - len(result.foreign)
                    if result.foreign != self.foreign and result.foreign:
                        log.warning("left alone: %s (routes in table %d that isthmus did not install)",
                                    ", ".join(result.foreign), settings.table)
                    self.foreign = result.foreign
                    if result.added or result.replaced or result.removed:
                        log.info("kernel table %d: %d routes added, %d replaced, %d removed", settings.table,
                                 result.added, result.replaced, result.removed)
                self.last_error = ""
            except (NetlinkError, OSError) as exc:
                if str(exc) != self.last_error:
                    log.warning("cannot install the learned routes: %s", exc)
                self.last_error = str(exc)
            if self._stop:
                if table is not None:
                    table.close()
                self._done.set()
                return


def _same_family(prefix: str, gateway: str) -> bool:
    try:
        return ipaddress.ip_network(prefix).version == ipaddress.ip_address(gateway).version
    except ValueError:
        return False
