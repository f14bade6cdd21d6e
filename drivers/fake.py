"""The fake driver: realizes peerings in memory. For tests, the demo, and trying isthmus out.

Options (``--driver-opt fake.KEY=VALUE``):
  connect_delay   seconds a new peering stays CONNECTING before ESTABLISHED (default 0)

An endpoint property ``fake.error=TEXT`` on the local endpoint makes its
peerings fail with ERROR and that text, to see how failures look.

Every change it makes is appended to ``STATE_DIR/operations.jsonl`` (create,
update, remove, with the connection), so tests and curious operators can see
exactly what a real driver would have been asked to do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

from isthmus.core.model import AdminState, ConnectionType, DesiredPeering, ObservedPeering, PeeringState
from isthmus.drivers.base import Driver, DriverContext, DriverError, StateClock


def _now_ms() -> int:
    return int(time.time() * 1000)


class FakeDriver(Driver):
    name = "fake"
    handles = frozenset({ConnectionType.BGP, ConnectionType.VXLAN})

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        try:
            self.connect_delay = float(context.options.get("connect_delay", "0"))
        except ValueError:
            raise DriverError(
                f"fake.connect_delay: {context.options['connect_delay']!r} is not a number", terminal=True
            ) from None
        self.realized: dict[str, DesiredPeering] = {}
        self._started: dict[str, float] = {}  # monotonic time each peering was (re)created
        self._clock = StateClock()
        self.apply_calls = 0

    def _record(self, op: str, name: str) -> None:
        self.context.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.context.state_dir / "operations.jsonl", "a") as f:
            f.write(json.dumps({"op": op, "connection": name, "time_ms": _now_ms()}) + "\n")

    async def apply(self, peerings: Mapping[str, DesiredPeering]) -> None:
        self.apply_calls += 1
        for name in list(self.realized):
            if name not in peerings:
                del self.realized[name]
                self._started.pop(name, None)
                self._clock.forget(name)
                self._record("remove", name)
        for name, peering in peerings.items():
            if self.realized.get(name) != peering:
                new_session = (
                    name not in self.realized
                    or self.realized[name].remote != peering.remote
                    or self.realized[name].local != peering.local
                )
                self._record("create" if name not in self.realized else "update", name)
                self.realized[name] = peering
                if new_session:
                    self._started[name] = time.monotonic()

    def _state(self, name: str, peering: DesiredPeering) -> tuple[PeeringState, str]:
        error = peering.local.properties.get("fake.error", "")
        if error:
            return PeeringState.ERROR, error
        if peering.admin_state == AdminState.DOWN:
            return PeeringState.DOWN, ""
        if time.monotonic() - self._started[name] < self.connect_delay:
            return PeeringState.CONNECTING, ""
        return PeeringState.ESTABLISHED, ""

    async def observe(self) -> dict[str, ObservedPeering]:
        out = {}
        for name, peering in self.realized.items():
            state, error = self._state(name, peering)
            out[name] = self._clock.observed(name, state, error, self.name)
        return out
