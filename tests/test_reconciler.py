"""The agent's reconcile loop with drivers that follow the interface (no kernel, no network)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from isthmus.agent.journal import Journal
from isthmus.agent.overrides import Overrides
from isthmus.agent.reconciler import MAX_BACKOFF, Reconciler
from isthmus.agent.state import DesiredState
from isthmus.core import model as m
from isthmus.drivers.base import Driver, DriverContext, DriverError
from isthmus.drivers.fake import FakeDriver


def peering(name: str, ctype: m.ConnectionType = m.ConnectionType.BGP) -> m.DesiredPeering:
    local = m.Endpoint("r1", "gw", "192.0.2.1", 65001)
    remote = m.Endpoint("r2", "gw", "192.0.2.2", 65002)
    vx = m.VxlanParams(vni=7) if ctype == m.ConnectionType.VXLAN else None
    return m.DesiredPeering(name, ctype, local, remote, bgp=m.BgpParams() if vx is None else None, vxlan=vx)


class Companion(Driver):
    """Records what it was given; fails for names in ``fail``."""

    name = "companion"
    handles = frozenset({m.ConnectionType.BGP})
    companion = True

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self.given: list[set[str]] = []
        self.fail: set[str] = set()

    async def apply(self, peerings: Mapping[str, m.DesiredPeering]) -> None:
        self.given.append(set(peerings))

    async def observe(self) -> dict[str, m.ObservedPeering]:
        return {n: m.ObservedPeering(n, m.PeeringState.ERROR if n in self.fail else m.PeeringState.ESTABLISHED,
                                     "quota exceeded" if n in self.fail else "")
                for n in self.given[-1]}


class Broken(Driver):
    name = "broken"
    handles = frozenset({m.ConnectionType.VXLAN})

    def __init__(self, context: DriverContext, terminal: bool = False) -> None:
        super().__init__(context)
        self.terminal = terminal

    async def apply(self, peerings: Mapping[str, m.DesiredPeering]) -> None:
        raise DriverError("controller said 400 Bad Request", terminal=self.terminal)

    async def observe(self) -> dict[str, m.ObservedPeering]:
        return {}


def make(tmp: Path, *drivers: Driver) -> Reconciler:
    return Reconciler("r1", list(drivers), Overrides(tmp / "o.json", "r1"), Journal(tmp / "j.jsonl"), interval=7)


async def test_companion_follows_established_peerings_and_its_error_shows(tmp_path: Path) -> None:
    ctx = DriverContext("r1", tmp_path / "d")
    fake, comp = FakeDriver(ctx), Companion(ctx)
    rec = make(tmp_path, fake, comp)
    down = peering("b")
    rec.set_desired(DesiredState("r1", 5, {"a": peering("a"), "b": m.DesiredPeering(
        "b", down.type, down.local, down.remote, down.bgp, None, m.AdminState.DOWN)}))
    comp.fail = {"a"}
    assert await rec.reconcile_once() == 7
    assert comp.given[-1] == {"a"}  # not b: it is not established
    assert rec.observed["a"].state == m.PeeringState.ERROR and rec.observed["a"].error == "companion: quota exceeded"
    assert rec.observed["a"].driver == "fake+companion"
    assert rec.observed["b"].state == m.PeeringState.DOWN
    comp.fail = set()
    await rec.reconcile_once()
    assert rec.observed["a"].state == m.PeeringState.ESTABLISHED and rec.applied_revision == 5


async def test_driver_failure_backs_off_unless_terminal_and_other_drivers_go_on(tmp_path: Path) -> None:
    ctx = DriverContext("r1", tmp_path / "d")
    broken = Broken(ctx)
    rec = make(tmp_path, broken, FakeDriver(ctx))  # VXLAN goes to the first driver handling it
    rec.set_desired(DesiredState("r1", 3, {"bgp": peering("bgp"), "vx": peering("vx", m.ConnectionType.VXLAN)}))
    delays = [await rec.reconcile_once() for _ in range(3)]
    assert delays == sorted(delays) and delays[0] < delays[-1] <= MAX_BACKOFF
    assert rec.observed["bgp"].state == m.PeeringState.ESTABLISHED
    assert rec.observed["vx"].state == m.PeeringState.ERROR and "400 Bad Request" in rec.observed["vx"].error
    assert rec.applied_revision == 0  # a retryable failure: the revision is not acknowledged
    broken.terminal = True
    assert await rec.reconcile_once() == 7  # nothing retrying can fix: no fast retries
    assert rec.applied_revision == 3


async def test_no_driver_for_a_type_is_an_error_naming_the_drivers(tmp_path: Path) -> None:
    rec = make(tmp_path, Companion(DriverContext("r1", tmp_path)))
    rec.set_desired(DesiredState("r1", 1, {"x": peering("x", m.ConnectionType.VXLAN)}))
    await rec.reconcile_once()
    assert rec.observed["x"].state == m.PeeringState.ERROR and "no driver for VXLAN" in rec.observed["x"].error


async def test_companion_keeps_what_it_realized_while_the_peering_flaps(tmp_path: Path) -> None:
    ctx = DriverContext("r1", tmp_path / "d")
    fake, comp = FakeDriver(ctx), Companion(ctx)
    rec = make(tmp_path, fake, comp)
    p = peering("a")
    rec.set_desired(DesiredState("r1", 1, {"a": p}))
    await rec.reconcile_once()
    assert comp.given[-1] == {"a"}
    # The session drops (here: admin DOWN); the companion keeps its side while the peering is desired.
    rec.set_desired(DesiredState("r1", 2, {"a": m.DesiredPeering("a", p.type, p.local, p.remote, p.bgp, None,
                                                                m.AdminState.DOWN)}))
    await rec.reconcile_once()
    assert comp.given[-1] == {"a"} and rec.observed["a"].state == m.PeeringState.DOWN
    rec.set_desired(DesiredState("r1", 3, {}))
    await rec.reconcile_once()
    assert comp.given[-1] == set()
