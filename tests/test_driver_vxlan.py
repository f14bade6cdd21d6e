"""The vxlan driver against the real kernel, in network namespaces; and three sites end to end over VXLAN.

Driver tests call VxlanDriver directly with ``vxlan.netns`` pointing into a lab
namespace. The end-to-end test runs a coordinator on the host and an agent
inside each site namespace; hosts behind each site's bridge ping each other
across the overlay.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import Proc, agent_cmd, coordinator_cmd, ctl, wait_for
from isthmus.core.model import (
    VXLAN_BRIDGE_PROPERTY,
    AdminState,
    ConnectionType,
    DesiredPeering,
    Endpoint,
    PeeringState,
    VxlanParams,
)
from isthmus.drivers import base
from isthmus.drivers.base import DriverContext, DriverError
from isthmus.drivers.vxlan import VxlanDriver
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc
from isthmus.v1 import types_pb2 as pb
from netns import Netns, veth

ROOT = Path(__file__).resolve().parent.parent
SITE = "one"


# ---------------------------------------------------------------- helpers


def peering(conn: str, vni: int, local: str = "192.0.2.1", remote: str = "192.0.2.2", *, mtu: int = 1450,
            port: int = 4789, admin: AdminState = AdminState.UP) -> DesiredPeering:
    return DesiredPeering(
        connection=conn, type=ConnectionType.VXLAN,
        local=Endpoint(site=SITE, name="gw", address=local, asn=65001),
        remote=Endpoint(site="two", name="gw", address=remote, asn=65002),
        vxlan=VxlanParams(vni=vni, udp_port=port, mtu=mtu), admin_state=admin,
    )


def link(ns: Netns, name: str) -> dict[str, Any] | None:
    """``ip -d link show NAME`` as JSON, or None when there is no such device."""
    res = ns.ip("-j", "-d", "link", "show", "dev", name, check=False)
    if res.returncode != 0:
        return None
    found: list[dict[str, Any]] = json.loads(res.stdout)
    return found[0]


def must_link(ns: Netns, name: str) -> dict[str, Any]:
    got = link(ns, name)
    assert got is not None, f"{name} is missing in {ns.name}: {ns.ip('-br', 'link').stdout}"
    return got


def fdb(ns: Netns, name: str) -> list[tuple[str, str]]:
    res = subprocess.run(["bridge", "-n", ns.name, "-j", "fdb", "show", "dev", name], capture_output=True,
                         text=True, check=True, timeout=30)
    return [(e["mac"], e.get("dst", "")) for e in json.loads(res.stdout or "[]")]


def vxlan_of(dev: dict[str, Any]) -> dict[str, Any]:
    info = dev["linkinfo"]
    assert info["info_kind"] == "vxlan", dev
    data: dict[str, Any] = info["info_data"]
    return data


def underlay(a: Netns, b: Netns) -> None:
    """a and b on one veth: 192.0.2.1/2 and 2001:db8::1/2 (no DAD, so usable at once)."""
    veth(a, "eth0", b, "eth0")
    for ns, n in ((a, 1), (b, 2)):
        ns.ip("addr", "add", f"192.0.2.{n}/24", "dev", "eth0")
        ns.ip("addr", "add", f"2001:db8::{n}/64", "dev", "eth0", "nodad")


@contextlib.asynccontextmanager
async def vxlan_driver(ns: Netns, tmp: Path, site: str = SITE, **options: str) -> AsyncIterator[VxlanDriver]:
    driver = VxlanDriver(DriverContext(site, tmp / "vxlan", {"netns": ns.name, **options}))
    try:
        yield driver
    finally:
        await driver.close()


async def states(driver: VxlanDriver) -> dict[str, tuple[PeeringState, str]]:
    return {name: (o.state, o.error) for name, o in (await driver.observe()).items()}


# ---------------------------------------------------------------- options and loading


def test_entry_point_loads_the_driver() -> None:
    assert base.load("vxlan") is VxlanDriver
    assert VxlanDriver.handles == frozenset({ConnectionType.VXLAN})


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"brige": "br0"}, "vxlan.brige: unknown option"),
        ({"bridge": "a-bridge-name-too-long"}, "vxlan.bridge:"),
        ({"bridge": "br/0"}, "vxlan.bridge:"),
        ({"bridge": "br0", "isolated": "maybe"}, "vxlan.isolated: 'maybe' is not true or false"),
        ({"isolated": "true"}, "vxlan.isolated: only applies together with vxlan.bridge"),
        ({"netns": "../etc"}, "vxlan.netns:"),
    ],
)
def test_bad_options_are_terminal_and_named(tmp_path: Path, options: dict[str, str], text: str) -> None:
    with pytest.raises(DriverError) as err:
        VxlanDriver(DriverContext(SITE, tmp_path, options))
    assert err.value.terminal and text in str(err.value)


async def test_missing_namespace_is_a_retryable_driver_error(tmp_path: Path) -> None:
    driver = VxlanDriver(DriverContext(SITE, tmp_path, {"netns": "isthmus-no-such-namespace"}))
    try:
        with pytest.raises(DriverError) as err:
            await driver.apply({"c": peering("c", 100)})
        assert not err.value.terminal
        assert "network namespace isthmus-no-such-namespace does not exist" in str(err.value)
    finally:
        await driver.close()


def test_pyroute2_is_imported_only_by_the_netlink_toolkit() -> None:
    """STYLE rule 4: one module imports pyroute2, drivers/netlink.py, which the vxlan driver and the bgp
    speaker's kernel routes use."""
    offenders = []
    for folder in ("proto/isthmus", "agent", "coordinator", "drivers", "core", "ctl", "cloud"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if ("import pyroute2" in text or "from pyroute2" in text) and path != ROOT / "drivers" / "netlink.py":
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    assert "from isthmus.drivers.netlink import" in (ROOT / "drivers" / "vxlan.py").read_text()
    assert "from isthmus.drivers.netlink import" in (ROOT / "drivers" / "bgp" / "kernel.py").read_text()
    assert "subprocess" not in (ROOT / "drivers" / "vxlan.py").read_text(), "the driver talks netlink, not `ip`"


# ---------------------------------------------------------------- the driver in a namespace


async def test_create_then_reapply_leaves_the_device_alone(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    async with vxlan_driver(site, tmp_path) as driver:
        await driver.apply({"one-two": peering("one-two", 100)})
        dev = must_link(site, "isx100")
        vx = vxlan_of(dev)
        assert (vx["id"], vx["local"], vx["port"], vx["learning"]) == (100, "192.0.2.1", 4789, False)
        assert dev["mtu"] == 1450 and "UP" in dev["flags"]
        assert dev["ifalias"] == "isthmus:one:vni100"
        assert fdb(site, "isx100") == [("00:00:00:00:00:00", "192.0.2.2")]
        first = (await driver.observe())["one-two"]
        assert (first.state, first.error, first.driver) == (PeeringState.ESTABLISHED, "", "vxlan")

        await driver.apply({"one-two": peering("one-two", 100)})
        assert must_link(site, "isx100")["ifindex"] == dev["ifindex"], "an identical device is not recreated"
        assert fdb(site, "isx100") == [("00:00:00:00:00:00", "192.0.2.2")]
        again = (await driver.observe())["one-two"]
        assert again.state == PeeringState.ESTABLISHED and again.since_ms == first.since_ms

    # close() leaves the dataplane as it is.
    assert must_link(site, "isx100")["ifindex"] == dev["ifindex"]


async def test_changes_update_in_place_or_replace(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    site.ip("addr", "add", "192.0.2.11/24", "dev", "eth0")
    async with vxlan_driver(site, tmp_path) as driver:
        await driver.apply({"c": peering("c", 100)})
        index = must_link(site, "isx100")["ifindex"]

        await driver.apply({"c": peering("c", 100, mtu=1400)})
        dev = must_link(site, "isx100")
        assert dev["mtu"] == 1400 and dev["ifindex"] == index, "the MTU changes in place"

        await driver.apply({"c": peering("c", 100, mtu=1400, port=8472)})
        dev = must_link(site, "isx100")
        assert vxlan_of(dev)["port"] == 8472 and dev["ifindex"] != index, "a new UDP port needs a new device"
        index = dev["ifindex"]

        # The remote is an FDB entry of the VNI's device: it changes in place.
        await driver.apply({"c": peering("c", 100, remote="192.0.2.3", mtu=1400, port=8472)})
        dev = must_link(site, "isx100")
        assert dev["ifindex"] == index and fdb(site, "isx100") == [("00:00:00:00:00:00", "192.0.2.3")]

        await driver.apply({"c": peering("c", 100, local="192.0.2.11", remote="192.0.2.3", mtu=1400, port=8472)})
        dev = must_link(site, "isx100")
        assert dev["ifindex"] != index and vxlan_of(dev)["local"] == "192.0.2.11"

        await driver.apply({"c": peering("c", 200)})
        assert link(site, "isx100") is None, "a VNI change replaces the device"
        dev = must_link(site, "isx200")
        assert vxlan_of(dev)["id"] == 200 and dev["mtu"] == 1450 and dev["ifalias"] == "isthmus:one:vni200"
        assert await states(driver) == {"c": (PeeringState.ESTABLISHED, "")}


async def test_repairs_hand_changes_and_removes_what_is_no_longer_desired(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    want = {"c1": peering("c1", 101), "c2": peering("c2", 102)}
    async with vxlan_driver(site, tmp_path) as driver:
        await driver.apply(want)
        before = await driver.observe()

        # A device deleted by hand shows as ERROR, and the next apply brings it back.
        index = must_link(site, "isx101")["ifindex"]
        site.ip("link", "del", "isx101")
        assert await states(driver) == {"c1": (PeeringState.ERROR, "isx101 is missing"),
                                        "c2": (PeeringState.ESTABLISHED, "")}
        await driver.apply(want)
        assert must_link(site, "isx101")["ifindex"] != index
        assert (await states(driver))["c1"] == (PeeringState.ESTABLISHED, "")
        assert (await driver.observe())["c2"].since_ms == before["c2"].since_ms, "c2's state never changed"

        # A missing FDB entry, a changed MTU, a device set down: seen by observe, fixed in place by apply.
        index = must_link(site, "isx102")["ifindex"]
        subprocess.run(["bridge", "-n", site.name, "fdb", "del", "00:00:00:00:00:00", "dev", "isx102",
                        "dst", "192.0.2.2"], check=True, timeout=30)
        site.ip("link", "set", "isx102", "mtu", "1300", "down")
        state, error = (await states(driver))["c2"]
        assert state == PeeringState.ERROR
        assert "fdb entry for 192.0.2.2 missing" in error and "MTU 1300 (want 1450)" in error, error
        assert "it is down" in error
        await driver.apply(want)
        dev = must_link(site, "isx102")
        assert dev["ifindex"] == index and dev["mtu"] == 1450 and "UP" in dev["flags"]
        assert fdb(site, "isx102") == [("00:00:00:00:00:00", "192.0.2.2")]
        assert await states(driver) == {"c1": (PeeringState.ESTABLISHED, ""), "c2": (PeeringState.ESTABLISHED, "")}

        # A connection no longer desired loses its device.
        await driver.apply({"c2": want["c2"]})
        assert link(site, "isx101") is None and must_link(site, "isx102")["ifindex"] == index
        assert set(await driver.observe()) == {"c2"}
        await driver.apply({})
        assert link(site, "isx102") is None and await driver.observe() == {}


async def test_admin_down_keeps_the_device_down(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    async with vxlan_driver(site, tmp_path) as driver:
        await driver.apply({"c": peering("c", 100, admin=AdminState.DOWN)})
        dev = must_link(site, "isx100")
        assert "UP" not in dev["flags"]
        assert await states(driver) == {"c": (PeeringState.DOWN, "")}
        await driver.apply({"c": peering("c", 100)})
        up = must_link(site, "isx100")
        assert "UP" in up["flags"] and up["ifindex"] == dev["ifindex"]
        assert await states(driver) == {"c": (PeeringState.ESTABLISHED, "")}


async def test_foreign_devices_are_never_touched(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    # A device with the driver's prefix but no marker, an unrelated vxlan device, and one of another site.
    veth(site, "isx300", peer, "p300")
    site.ip("link", "add", "vxother", "type", "vxlan", "id", "77", "local", "192.0.2.1", "dstport", "4789")
    site.ip("link", "add", "isx400", "type", "vxlan", "id", "400", "local", "192.0.2.1", "dstport", "4789")
    site.ip("link", "set", "isx400", "alias", "isthmus:other-site:c")
    foreign = {name: must_link(site, name) for name in ("isx300", "vxother", "isx400")}

    async with vxlan_driver(site, tmp_path) as driver:
        await driver.apply({
            "mine": peering("mine", 100),
            "name-taken": peering("name-taken", 300),  # isx300 is someone else's
            "vni-taken": peering("vni-taken", 77),  # the kernel refuses a second device for VNI 77
        })
        got = await states(driver)
        assert got["mine"] == (PeeringState.ESTABLISHED, "")
        assert got["name-taken"][0] == PeeringState.ERROR
        assert "isx300 exists and is not isthmus's" in got["name-taken"][1]
        assert got["vni-taken"][0] == PeeringState.ERROR
        assert "A VXLAN device with the specified VNI already exists" in got["vni-taken"][1], got["vni-taken"]
        await driver.apply({})
        assert link(site, "isx100") is None

    for name, before in foreign.items():
        after = must_link(site, name)
        assert (after["ifindex"], after.get("ifalias"), after["flags"]) == (
            before["ifindex"], before.get("ifalias"), before["flags"]), name


async def test_missing_local_address_fails_that_peering_only(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    async with vxlan_driver(site, tmp_path) as driver:
        await driver.apply({"good": peering("good", 100), "bad": peering("bad", 101, local="198.51.100.7")})
        got = await states(driver)
        assert got["good"] == (PeeringState.ESTABLISHED, "")
        assert got["bad"] == (PeeringState.ERROR, "local address 198.51.100.7 is not configured in network "
                                                  f"namespace {site.name}")
        assert link(site, "isx101") is None and must_link(site, "isx100")
        # Once the address exists, the next apply creates the device.
        site.ip("addr", "add", "198.51.100.7/32", "dev", "eth0")
        await driver.apply({"good": peering("good", 100), "bad": peering("bad", 101, local="198.51.100.7")})
        assert (await states(driver))["bad"] == (PeeringState.ESTABLISHED, "")


async def test_a_recreated_namespace_is_followed(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    async with vxlan_driver(site, tmp_path) as driver:
        await driver.apply({"c": peering("c", 100)})
        site.delete()
        with pytest.raises(DriverError, match="does not exist"):
            await driver.apply({"c": peering("c", 100)})
        site = lab.netns("site")  # the same name, a new namespace
        veth(site, "eth0", peer, "eth1")
        site.ip("addr", "add", "192.0.2.1/24", "dev", "eth0")
        await driver.apply({"c": peering("c", 100)})
        assert must_link(site, "isx100")["ifalias"] == "isthmus:one:vni100"
        assert await states(driver) == {"c": (PeeringState.ESTABLISHED, "")}


async def test_ipv6_underlay_carries_traffic(lab: Any, tmp_path: Path) -> None:
    a, b = lab.netns("a"), lab.netns("b")
    underlay(a, b)
    async with (vxlan_driver(a, tmp_path / "a") as da, vxlan_driver(b, tmp_path / "b", site="two") as db):
        await da.apply({"c": peering("c", 600, local="2001:db8::1", remote="2001:db8::2")})
        await db.apply({"c": peering("c", 600, local="2001:db8::2", remote="2001:db8::1")})
        vx = vxlan_of(must_link(a, "isx600"))
        assert vx.get("local6", vx.get("local")) == "2001:db8::1", vx
        assert fdb(a, "isx600") == [("00:00:00:00:00:00", "2001:db8::2")]
        assert await states(da) == {"c": (PeeringState.ESTABLISHED, "")}
        assert await states(db) == {"c": (PeeringState.ESTABLISHED, "")}
        a.ip("addr", "add", "10.99.0.1/24", "dev", "isx600")
        b.ip("addr", "add", "10.99.0.2/24", "dev", "isx600")
        wait_for(lambda: a.ping("10.99.0.2"), 10, "a ping across the VXLAN tunnel over IPv6")


async def test_bridge_ports_are_isolated(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    async with vxlan_driver(site, tmp_path, bridge="br-ovl") as driver:
        # A missing bridge fails the peerings that need it, not the driver; their devices wait for it.
        await driver.apply({"c": peering("c", 100)})
        state, error = (await states(driver))["c"]
        assert state == PeeringState.ERROR and "bridge br-ovl does not exist at this site" in error, error
        assert link(site, "isx100") is None

        site.ip("link", "add", "br-ovl", "type", "bridge")
        site.ip("link", "set", "br-ovl", "up")
        await driver.apply({"c": peering("c", 100), "d": peering("d", 101)})
        for name in ("isx100", "isx101"):
            dev = must_link(site, name)
            assert dev.get("master") == "br-ovl", dev
            assert dev["linkinfo"]["info_slave_data"]["isolated"] is True, dev["linkinfo"]
        assert await states(driver) == {"c": (PeeringState.ESTABLISHED, ""), "d": (PeeringState.ESTABLISHED, "")}

        # Taken off the bridge by hand: observe says so, apply puts it back.
        site.ip("link", "set", "isx100", "nomaster")
        assert (await states(driver))["c"] == (PeeringState.ERROR, "isx100: not a port of bridge br-ovl")
        await driver.apply({"c": peering("c", 100), "d": peering("d", 101)})
        assert must_link(site, "isx100")["linkinfo"]["info_slave_data"]["isolated"] is True

    index = must_link(site, "isx100")["ifindex"]
    async with vxlan_driver(site, tmp_path, bridge="br-ovl", isolated="false") as driver:
        await driver.apply({"c": peering("c", 100), "d": peering("d", 101)})
        dev = must_link(site, "isx100")
        assert dev["ifindex"] == index and dev["linkinfo"]["info_slave_data"]["isolated"] is False


# ---------------------------------------------------------------- one device per VNI


def segment(conn: str, vni: int, remote: str, *, local: str = "192.0.2.1", bridge: str = "",
            admin: AdminState = AdminState.UP, mtu: int = 1450) -> DesiredPeering:
    """A border-gateway tunnel: the segment's VNI, and its bridge as the local endpoint's property."""
    p = peering(conn, vni, local=local, remote=remote, admin=admin, mtu=mtu)
    if not bridge:
        return p
    return dataclasses.replace(p, local=dataclasses.replace(p.local, properties={VXLAN_BRIDGE_PROPERTY: bridge}))


def zeros(ns: Netns, name: str) -> list[str]:
    """The remotes of the all-zeros FDB entries of device ``name``, sorted."""
    return sorted(dst for mac, dst in fdb(ns, name) if mac == "00:00:00:00:00:00")


async def test_peerings_of_one_vni_share_one_device(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    async with vxlan_driver(site, tmp_path) as driver:
        both = {"to-two": segment("to-two", 100, "192.0.2.2"), "to-three": segment("to-three", 100, "192.0.2.3")}
        await driver.apply(both)
        dev = must_link(site, "isx100")
        assert dev["ifalias"] == "isthmus:one:vni100" and vxlan_of(dev)["local"] == "192.0.2.1"
        assert zeros(site, "isx100") == ["192.0.2.2", "192.0.2.3"]
        assert [d["ifname"] for d in json.loads(site.ip("-j", "link", "show", "type", "vxlan").stdout)] == ["isx100"]
        assert await states(driver) == {"to-two": (PeeringState.ESTABLISHED, ""),
                                        "to-three": (PeeringState.ESTABLISHED, "")}

        # One entry gone by hand: only that peering is ERROR, and apply puts the entry back.
        subprocess.run(["bridge", "-n", site.name, "fdb", "del", "00:00:00:00:00:00", "dev", "isx100",
                        "dst", "192.0.2.3"], check=True, timeout=30)
        got = await states(driver)
        assert got["to-two"] == (PeeringState.ESTABLISHED, "")
        assert got["to-three"] == (PeeringState.ERROR, "isx100: fdb entry for 192.0.2.3 missing")
        await driver.apply(both)
        assert zeros(site, "isx100") == ["192.0.2.2", "192.0.2.3"]

        # A peering held down keeps the device up for the other but loses its entry.
        await driver.apply({**both, "to-three": segment("to-three", 100, "192.0.2.3", admin=AdminState.DOWN)})
        assert zeros(site, "isx100") == ["192.0.2.2"] and "UP" in must_link(site, "isx100")["flags"]
        assert await states(driver) == {"to-two": (PeeringState.ESTABLISHED, ""), "to-three": (PeeringState.DOWN, "")}

        # Removing one peering removes its entry only; removing the last removes the device.
        await driver.apply({"to-two": both["to-two"]})
        assert must_link(site, "isx100")["ifindex"] == dev["ifindex"]
        assert zeros(site, "isx100") == ["192.0.2.2"]
        assert await states(driver) == {"to-two": (PeeringState.ESTABLISHED, "")}
        await driver.apply({})
        assert link(site, "isx100") is None


async def test_a_peering_that_disagrees_with_its_vni_device_is_error(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    site.ip("addr", "add", "192.0.2.11/24", "dev", "eth0")
    async with vxlan_driver(site, tmp_path) as driver:
        first = {"z-first": segment("z-first", 100, "192.0.2.2")}
        await driver.apply(first)
        index = must_link(site, "isx100")["ifindex"]
        # Added later with another local address: it cannot take the device over, although its name sorts first.
        late = segment("a-late", 100, "192.0.2.3", local="192.0.2.11")
        await driver.apply({**first, "a-late": late, "other": segment("other", 101, "192.0.2.3")})
        got = await states(driver)
        assert got["z-first"] == (PeeringState.ESTABLISHED, "") and got["other"] == (PeeringState.ESTABLISHED, "")
        assert got["a-late"] == (PeeringState.ERROR, "conflicts with connection z-first on isx100, the one device "
                                 "of VNI 100: local address 192.0.2.11, not 192.0.2.1"), got["a-late"]
        dev = must_link(site, "isx100")
        assert dev["ifindex"] == index and vxlan_of(dev)["local"] == "192.0.2.1"
        assert zeros(site, "isx100") == ["192.0.2.2"]

        # Without a device yet, the first in name order sets the parameters; an MTU differs in place as well.
        await driver.apply({"b": segment("b", 200, "192.0.2.2"), "c": segment("c", 200, "192.0.2.3", mtu=1400)})
        got = await states(driver)
        assert got["b"] == (PeeringState.ESTABLISHED, "")
        assert got["c"][0] == PeeringState.ERROR and "MTU 1400, not 1450" in got["c"][1], got["c"]
        assert must_link(site, "isx200")["mtu"] == 1450 and zeros(site, "isx200") == ["192.0.2.2"]


async def test_segment_bridge_per_peering(lab: Any, tmp_path: Path) -> None:
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    site.ip("link", "add", "br-ovl", "type", "bridge")
    async with vxlan_driver(site, tmp_path, bridge="br-ovl") as driver:
        want = {
            "infra": peering("infra", 12),
            "blue-2": segment("blue-2", 100, "192.0.2.2", bridge="brs100"),
            "blue-3": segment("blue-3", 100, "192.0.2.3", bridge="brs100"),
            "odd": segment("odd", 101, "192.0.2.2", bridge="brs100"),
        }
        # The segment bridge is missing: its peerings are ERROR and get no device; the others go on.
        await driver.apply(want)
        got = await states(driver)
        assert got["infra"] == (PeeringState.ESTABLISHED, "")
        for name in ("blue-2", "blue-3", "odd"):
            assert got[name][0] == PeeringState.ERROR, got
            assert got[name][1].startswith("bridge brs100 does not exist at this site"), got[name]
        assert link(site, "isx100") is None and must_link(site, "isx12").get("master") == "br-ovl"

        site.ip("link", "add", "brs100", "type", "bridge")
        await driver.apply(want)
        assert await states(driver) == {n: (PeeringState.ESTABLISHED, "") for n in want}
        for name in ("isx100", "isx101"):
            dev = must_link(site, name)
            assert dev.get("master") == "brs100" and dev["linkinfo"]["info_slave_data"]["isolated"] is True, dev

        # One peering of a VNI cannot put the shared device on another bridge.
        await driver.apply({**want, "blue-3": segment("blue-3", 100, "192.0.2.3", bridge="br-ovl")})
        got = await states(driver)
        assert got["blue-2"] == (PeeringState.ESTABLISHED, "")
        assert got["blue-3"][0] == PeeringState.ERROR and "bridge br-ovl, not brs100" in got["blue-3"][1]
        assert must_link(site, "isx100").get("master") == "brs100" and zeros(site, "isx100") == ["192.0.2.2"]

        # An invalid bridge name in the property is that peering's error.
        await driver.apply({"bad": segment("bad", 300, "192.0.2.2", bridge="no/such")})
        bad = (await states(driver))["bad"]
        assert bad[0] == PeeringState.ERROR and "vxlan.bridge: 'no/such' is not a valid bridge name" in bad[1]


async def test_devices_of_the_per_connection_marker_are_adopted(lab: Any, tmp_path: Path) -> None:
    """An upgrade: devices an older driver marked isthmus:<site>:<connection> stay owned and converge."""
    site, peer = lab.netns("site"), lab.netns("peer")
    underlay(site, peer)
    site.ip("link", "add", "isx100", "type", "vxlan", "id", "100", "local", "192.0.2.1", "dstport", "4789",
            "nolearning")
    site.ip("link", "set", "isx100", "alias", "isthmus:one:one-two", "mtu", "1450", "up")
    subprocess.run(["bridge", "-n", site.name, "fdb", "append", "00:00:00:00:00:00", "dev", "isx100",
                    "dst", "192.0.2.2"], check=True, timeout=30)
    site.ip("link", "add", "isx101", "type", "vxlan", "id", "101", "local", "192.0.2.1", "dstport", "4789")
    site.ip("link", "set", "isx101", "alias", "isthmus:one:gone")
    index = must_link(site, "isx100")["ifindex"]
    async with vxlan_driver(site, tmp_path) as driver:
        await driver.apply({"one-two": peering("one-two", 100), "one-three": segment("one-three", 100, "192.0.2.3")})
        dev = must_link(site, "isx100")
        assert dev["ifindex"] == index and dev["ifalias"] == "isthmus:one:vni100"
        assert zeros(site, "isx100") == ["192.0.2.2", "192.0.2.3"]
        assert link(site, "isx101") is None, "an old device of a connection no longer desired is removed"
        assert await states(driver) == {"one-two": (PeeringState.ESTABLISHED, ""),
                                        "one-three": (PeeringState.ESTABLISHED, "")}


# ---------------------------------------------------------------- end to end: three sites, one overlay

SITES = ("s1", "s2", "s3")
MESH = {"s1-s2": ("s1", "s2", 12), "s1-s3": ("s1", "s3", 13), "s2-s3": ("s2", "s3", 23)}


def site_states(addr: str, site: str) -> dict[str, str]:
    out = json.loads(ctl("--coordinator", addr, "status", site, "-o", "json").stdout)
    return {p["desired"]["connection"]: p.get("observed", {}).get("state", "") for p in out.get("peerings", [])}


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Agent processes started in namespaces; stopped (SIGTERM, then SIGKILL) at the end, even on failure."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.terminate()
    for p in started:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_three_sites_full_mesh_over_vxlan(lab: Any, etcd: str, tmp_path: Path, procs: Callable[..., Proc],
                                          agents: list[subprocess.Popen[bytes]]) -> None:
    # The underlay: one L2 segment (a bridge in its own namespace), each site on it by a veth.
    ul = lab.netns("ul")
    ul.ip("link", "add", "br0", "type", "bridge")
    ul.ip("link", "set", "br0", "up")
    sites: dict[str, Netns] = {}
    hosts: dict[str, Netns] = {}
    for n, name in enumerate(SITES, start=1):
        site = sites[name] = lab.netns(name)
        veth(site, "eth0", ul, f"p{n}")
        ul.ip("link", "set", f"p{n}", "master", "br0")
        site.ip("addr", "add", f"192.0.2.{n}/24", "dev", "eth0")
        # The overlay: bridge br-ovl in the site, a host namespace behind it.
        host = hosts[name] = lab.netns(f"h{n}")
        site.ip("link", "add", "br-ovl", "type", "bridge")
        site.ip("link", "set", "br-ovl", "up")
        veth(site, "h0", host, "eth0")
        site.ip("link", "set", "h0", "master", "br-ovl")
        host.ip("addr", "add", f"10.200.0.{n}/24", "dev", "eth0")
    wait_for(lambda: sites["s1"].ping("192.0.2.2") and sites["s1"].ping("192.0.2.3"), 10, "the underlay to work")

    # The coordinator on the host; agents reach it through a unix socket from inside their namespaces.
    sock = tmp_path / "coord.sock"
    ready = tmp_path / "coord.addr"
    procs("coordinator", [*coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd),
                          "--listen", f"127.0.0.1:0,unix:{sock}"], tmp_path / "coord.log")
    addr = wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator to be ready")
    for name, site in sites.items():
        cmd = agent_cmd(name, f"unix:{sock}", tmp_path, "--driver", "vxlan", "--driver-opt", "vxlan.bridge=br-ovl",
                        "--reconcile-interval", "1")
        agents.append(site.popen(cmd, tmp_path / f"agent-{name}.log"))

    channel = grpc.insecure_channel(addr)
    site_api = api_pb2_grpc.SiteServiceStub(channel)
    endpoints = api_pb2_grpc.EndpointServiceStub(channel)
    conns = api_pb2_grpc.ConnectionServiceStub(channel)
    for n, name in enumerate(SITES, start=1):
        site_api.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION), timeout=10)
        endpoints.CreateEndpoint(pb.Endpoint(site=name, name="gw", address=f"192.0.2.{n}", asn=65000 + n), timeout=10)
    for conn, (a, b, vni) in MESH.items():
        conns.CreateConnection(pb.Connection(name=conn, type=pb.CONNECTION_TYPE_VXLAN,
                                             a=pb.EndpointRef(site=a, name="gw"), b=pb.EndpointRef(site=b, name="gw"),
                                             vxlan=pb.VxlanParams(vni=vni)), timeout=10)

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("agent-*.log")))

    res = ctl("--coordinator", addr, "status", "--wait-established", "--wait-timeout", "30", check=False)
    assert res.returncode == 0, f"{res.stderr}\n{logs()}"
    assert site_states(addr, "s1") == {"s1-s2": "PEERING_STATE_ESTABLISHED", "s1-s3": "PEERING_STATE_ESTABLISHED"}
    table = ctl("--coordinator", addr, "status", "s2").stdout
    rows = {line.split()[0]: line for line in table.splitlines() if line.split()[:1] in (["s1-s2"], ["s2-s3"])}
    assert len(rows) == 2 and all("established" in row for row in rows.values()), table
    for name in SITES:
        port = must_link(sites[name], f"isx{12 if name != 's3' else 13}")
        assert port.get("master") == "br-ovl" and port["linkinfo"]["info_slave_data"]["isolated"] is True

    h1 = hosts["s1"]
    wait_for(lambda: h1.ping("10.200.0.2"), 20, "host1 to reach host2 across the overlay")
    wait_for(lambda: h1.ping("10.200.0.3"), 20, "host1 to reach host3 across the overlay")
    wait_for(lambda: hosts["s2"].ping("10.200.0.3"), 20, "host2 to reach host3 across the overlay")

    # Without s1-s2, host1 cannot reach host2: site3's tunnels are isolated ports and relay nothing.
    conns.DeleteConnection(api.DeleteConnectionRequest(name="s1-s2"), timeout=10)
    wait_for(lambda: link(sites["s1"], "isx12") is None and link(sites["s2"], "isx12") is None, 15,
             "the s1-s2 devices to be removed at both sites")
    assert not h1.ping("10.200.0.2", count=2), "host1 still reaches host2 without a tunnel between their sites"
    wait_for(lambda: h1.ping("10.200.0.3"), 10, "host1 to still reach host3")

    # A device deleted by hand is back within the reconcile interval (1 s), and so is the traffic.
    index = must_link(sites["s1"], "isx13")["ifindex"]
    sites["s1"].ip("link", "del", "isx13")
    start = time.monotonic()
    wait_for(lambda: link(sites["s1"], "isx13"), 5, "the agent to recreate isx13")
    assert time.monotonic() - start < 3, "repaired within the 1 s reconcile interval (with slack)"
    assert must_link(sites["s1"], "isx13")["ifindex"] != index
    wait_for(lambda: h1.ping("10.200.0.3"), 15, "host1 to reach host3 again")

    res = ctl("--coordinator", addr, "status", "--wait-established", "--wait-timeout", "15", check=False)
    assert res.returncode == 0, f"{res.stderr}\n{logs()}"
    assert site_states(addr, "s1") == {"s1-s3": "PEERING_STATE_ESTABLISHED"}
    assert all(p.poll() is None for p in agents), logs()
