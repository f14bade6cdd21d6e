"""The driver interface: everything that touches a network device or controller implements it.

A driver realizes the desired peerings of one site for the connection types it
handles. ``apply`` is idempotent and may be called at any time with the full
desired set; ``observe`` reports what is really there. A driver touches only
what it created (see each driver for how it marks its own objects).

Drivers are found by name through the ``isthmus.drivers`` entry-point group::

    [project.entry-points."isthmus.drivers"]
    fake = "isthmus.drivers.fake:FakeDriver"
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from isthmus.core.model import ConnectionType, DesiredPeering, ObservedPeering, PeeringState

ENTRY_POINT_GROUP = "isthmus.drivers"


class DriverError(Exception):
    """A driver could not do its work.

    ``terminal`` marks errors that retrying cannot fix (bad configuration, a
    4xx from a controller): the affected peerings show ERROR until the desired
    state changes. Other errors are retried with backoff.
    """

    def __init__(self, message: str, *, terminal: bool = False) -> None:
        super().__init__(message)
        self.terminal = terminal


class UnknownDriver(Exception):
    pass


@dataclass(frozen=True)
class DriverContext:
    """What every driver is given at start: the site, a private state directory, its options."""

    site: str
    state_dir: Path
    options: Mapping[str, str] = field(default_factory=dict)  # --driver-opt NAME.KEY=VALUE, prefix removed


class StateClock:
    """When each peering entered its current state: ``since`` stays put while the state does not change."""

    def __init__(self) -> None:
        self._since: dict[str, tuple[PeeringState, int]] = {}
        self._last: dict[str, ObservedPeering] = {}

    def observed(self, name: str, state: PeeringState, error: str, driver: str, **extra: Any) -> ObservedPeering:
        """The observation of ``name`` in ``state``, stamped with when it entered that state.

        The same object as last time when nothing about the peering changed: the reconciler, the agent's
        reports and the coordinator's status records compare and encode again only what changed.
        """
        prev = self._since.get(name)
        if prev is None or prev[0] != state:
            self._since[name] = (state, int(time.time() * 1000))
        new = ObservedPeering(name, state, error, self._since[name][1], driver, **extra)
        last = self._last.get(name)
        if last is not None and last == new:
            return last
        self._last[name] = new
        return new

    def keep(self, names: Iterable[str]) -> None:
        """Forget every peering not in ``names``."""
        wanted = set(names)
        for name in [n for n in self._since if n not in wanted]:
            del self._since[name]
            self._last.pop(name, None)

    def forget(self, name: str) -> None:
        self._since.pop(name, None)
        self._last.pop(name, None)


class Driver(abc.ABC):
    """Realizes one site's desired peerings of the connection types in ``handles``."""

    name: ClassVar[str]
    handles: ClassVar[frozenset[ConnectionType]]
    # A companion does not realize peerings; it follows those another driver has ESTABLISHED
    # (e.g. configuring Neutron to use the new network). Its ERROR turns the peering's state to ERROR.
    companion: ClassVar[bool] = False

    def __init__(self, context: DriverContext) -> None:
        """``context``: the site, the driver's state directory and its options.

        Raises DriverError(terminal=True) for options it cannot use.
        """
        self.context = context
        self.wake: Callable[[], None] = _nothing

    def subscribe(self, wake: Callable[[], None]) -> None:
        """``wake``: what the driver calls, on the event loop's thread, when what it observes changed by
        itself (a BGP session went down, a peer sent routes); the agent then runs a reconcile pass at once
        instead of at its next periodic one. The pass is level-based: ``wake`` carries no payload."""
        self.wake = wake

    @abc.abstractmethod
    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        """Make reality match ``peerings`` (keyed by connection name), all of types in ``handles``.

        Creates what is missing, updates what differs, removes what this driver
        created for peerings no longer listed. A failure of one peering is
        reported by ``observe`` as its ERROR state; raises DriverError only
        when the driver as a whole cannot work (controller unreachable).
        """

    @abc.abstractmethod
    async def observe(self) -> dict[str, ObservedPeering]:
        """The state of every peering this driver realizes, keyed by connection name.

        Raises DriverError when the state cannot be read.
        """

    async def close(self) -> None:  # noqa: B027 (optional hook)
        """Release resources (processes, sockets). Leaves the dataplane as it is."""


def _nothing() -> None:
    pass


def available() -> list[str]:
    """Names of the installed drivers."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load(name: str) -> type[Driver]:
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in found:
        names = ", ".join(available()) or "none installed"
        raise UnknownDriver(f"unknown driver {name!r}; available drivers: {names}")
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise UnknownDriver(f"entry point {name!r} of {ENTRY_POINT_GROUP} is not an isthmus Driver")
    return cls
