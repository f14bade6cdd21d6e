"""Border gateways end to end in network namespaces: tenant segments of two, then three sites joined over VXLAN.

Each site is a gateway namespace with its agent inside (vxlan driver) and two tenant segments: bridge brs100
(blue) and brs200 (red), each with a tenant host behind it, all in one subnet. The coordinator runs on the
host; the test drives the BorderGatewayService over gRPC and with isthmusctl, and checks the result with
ping, the kernel's devices and the connection status.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import Proc, agent_cmd, coordinator_cmd, ctl, wait_for
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc, l2gw_pb2_grpc
from isthmus.v1 import l2gw_pb2 as l2
from isthmus.v1 import types_pb2 as pb
from netns import Netns, veth

SITES = ("s1", "s2", "s3")
TENANTS = {"blue": (100, 0), "red": (200, 10)}  # segmentation id, offset of the hosts' addresses
ESTABLISHED = pb.PEERING_STATE_ESTABLISHED


def address(tenant: str, site: str) -> str:
    """blue-s1 is 10.100.0.1, red-s1 10.100.0.11: one subnet, so only the segmentation id keeps them apart."""
    return f"10.100.0.{TENANTS[tenant][1] + SITES.index(site) + 1}"


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


def build(lab: Any) -> tuple[dict[str, Netns], dict[str, Netns]]:
    """The gateway namespaces on one underlay segment, and the tenant hosts behind their segment bridges."""
    ul = lab.netns("ul")
    ul.ip("link", "add", "br0", "type", "bridge")
    ul.ip("link", "set", "br0", "up")
    gateways: dict[str, Netns] = {}
    hosts: dict[str, Netns] = {}
    for n, site in enumerate(SITES, start=1):
        gw = gateways[site] = lab.netns(f"gw-{site}")
        veth(gw, "eth0", ul, f"p{n}")
        ul.ip("link", "set", f"p{n}", "master", "br0")
        gw.ip("addr", "add", f"192.0.2.{n}/24", "dev", "eth0")
        for tenant, (segid, _) in TENANTS.items():
            bridge, port = f"brs{segid}", f"{tenant}0"
            gw.ip("link", "add", bridge, "type", "bridge")
            gw.ip("link", "set", bridge, "up")
            host = hosts[f"{tenant}-{site}"] = lab.netns(f"{tenant}-{site}")
            veth(gw, port, host, "eth0")
            gw.ip("link", "set", port, "master", bridge)
            host.ip("addr", "add", f"{address(tenant, site)}/24", "dev", "eth0")
    return gateways, hosts


def vxlan_devices(gw: Netns) -> dict[str, tuple[str, list[str]]]:
    """The vxlan devices of a gateway namespace: name -> (bridge, remotes of the all-zeros FDB entries)."""
    out = {}
    for dev in json.loads(gw.ip("-j", "-d", "link", "show", "type", "vxlan").stdout):
        res = subprocess.run(["bridge", "-n", gw.name, "-j", "fdb", "show", "dev", dev["ifname"]],
                             capture_output=True, text=True, check=True, timeout=30)
        remotes = sorted(e["dst"] for e in json.loads(res.stdout or "[]")
                         if e["mac"] == "00:00:00:00:00:00" and "dst" in e)
        out[dev["ifname"]] = (dev.get("master", ""), remotes)
    return out


def peerings_at(status: Any, site: str) -> dict[str, int]:
    """The site's peerings (desired or still observed) with their observed state (0: unreported)."""
    st = status.GetSiteStatus(api.GetSiteStatusRequest(site=site), timeout=10)
    return {p.desired.connection or p.observed.connection: p.observed.state if p.HasField("observed") else 0
            for p in st.peerings}


def complete_status(border: Any, conn_id: str) -> l2.L2GatewayConnectionStatus:
    st = border.GetL2GatewayConnectionStatus(l2.GetByIdRequest(id=conn_id), timeout=10)
    assert not st.missing_sites, f"missing sites: {', '.join(st.missing_sites)}"
    return st


def test_border_gateways_join_tenant_segments_and_keep_tenants_apart(
    lab: Any, etcd: str, tmp_path: Path, procs: Callable[..., Proc], agents: list[subprocess.Popen[bytes]]
) -> None:
    gateways, hosts = build(lab)
    wait_for(lambda: gateways["s1"].ping("192.0.2.2") and gateways["s1"].ping("192.0.2.3"), 10,
             "the underlay to work")

    # The coordinator on the host; agents reach it through a unix socket from inside their namespaces.
    sock = tmp_path / "coord.sock"
    ready = tmp_path / "coord.addr"
    procs("coordinator", [*coordinator_cmd(tmp_path / "coord", ready, etcd_endpoint=etcd),
                          "--listen", f"127.0.0.1:0,unix:{sock}"], tmp_path / "coord.log")
    addr = str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator to be ready"))
    for site, gw in gateways.items():
        cmd = agent_cmd(site, f"unix:{sock}", tmp_path, "--driver", "vxlan", "--reconcile-interval", "1")
        agents.append(gw.popen(cmd, tmp_path / f"agent-{site}.log"))

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("agent-*.log")))

    channel = grpc.insecure_channel(addr)
    border = l2gw_pb2_grpc.BorderGatewayServiceStub(channel)
    status = api_pb2_grpc.StatusServiceStub(channel)
    sites = api_pb2_grpc.SiteServiceStub(channel)
    device: dict[str, str] = {}
    for n, site in enumerate(SITES, start=1):
        sites.CreateSite(pb.Site(name=site, kind=pb.SITE_KIND_REGION), timeout=10)
        device[site] = border.CreateGatewayDevice(l2.GatewayDevice(
            site=site, name="gw", type=l2.GATEWAY_DEVICE_TYPE_ROUTER_VTEP, tunnel_ips=[f"192.0.2.{n}"]),
            timeout=10).id

    # Blue between two sites: one tunnel each way, and ARP and ping across them.
    blue_gw = border.CreateL2Gateway(l2.L2Gateway(name="blue", project_id="p1", devices=[
        l2.L2GatewayDeviceRef(device_id=device[s], segmentation_id=100) for s in ("s1", "s2")]), timeout=10)
    blue = border.CreateL2GatewayConnection(l2.L2GatewayConnection(l2_gateway_id=blue_gw.id, network_id="net-blue"),
                                            timeout=10)
    assert blue.segmentation_id == 100
    res = ctl("--coordinator", addr, "l2-gateway-connection", "status", blue.id, "--wait-complete",
              "--wait-timeout", "20", check=False)
    assert res.returncode == 0, f"{res.stderr}\n{logs()}"
    assert res.stdout.splitlines()[-1] == "complete", res.stdout
    blue1 = hosts["blue-s1"]
    wait_for(lambda: blue1.ping(address("blue", "s2")), 15, "blue-s1 to reach blue-s2 across two sites")

    # s3 joins blue: every site now has two tunnels of VNI 100 on one device.
    blue_gw = border.UpdateL2Gateway(l2.L2Gateway(id=blue_gw.id, name="blue", version=blue_gw.version, devices=[
        l2.L2GatewayDeviceRef(device_id=device[s], segmentation_id=100) for s in SITES]), timeout=10)
    wait_for(lambda: blue1.ping(address("blue", "s3")), 20, "blue-s1 to reach blue-s3")
    wait_for(lambda: hosts["blue-s3"].ping(address("blue", "s2")), 10, "blue-s3 to reach blue-s2")

    # Red, made with isthmusctl: same subnet, segmentation id 200.
    table = ctl("--coordinator", addr, "l2-gateway", "create", "red", "--project", "p1",
                *[arg for s in SITES for arg in ("--device", device[s])], "--segmentation-id", "200", "-o", "json")
    red_gw = json.loads(table.stdout)
    assert [(d["device_id"], d["segmentation_id"]) for d in red_gw["devices"]] == [(device[s], 200) for s in SITES]
    red = json.loads(ctl("--coordinator", addr, "l2-gateway-connection", "create", red_gw["id"],
                         "--network", "net-red", "-o", "json").stdout)
    assert (red["segmentation_id"], red["network_id"], red["project_id"]) == (200, "net-red", "p1")
    red1 = hosts["red-s1"]
    wait_for(lambda: red1.ping(address("red", "s2")) and red1.ping(address("red", "s3")), 20,
             "red-s1 to reach red-s2 and red-s3")

    # Tenants stay apart: the segmentation id is the only thing between them.
    assert not blue1.ping(address("red", "s2"), count=2), "blue-s1 reaches red-s2"
    assert not blue1.ping(address("red", "s1"), count=1), "blue-s1 reaches red-s1 at its own site"
    assert not red1.ping(address("blue", "s3"), count=2), "red-s1 reaches blue-s3"
    wait_for(lambda: red1.ping(address("red", "s2")) and blue1.ping(address("blue", "s2")), 5,
             "red-s1 and blue-s1 to still reach their own tenant")

    # One device per segment at each site, on the segment's bridge, replicating to both other sites.
    for n, (site, gw) in enumerate(gateways.items(), start=1):
        others = sorted(f"192.0.2.{k}" for k in (1, 2, 3) if k != n)
        assert vxlan_devices(gw) == {"isx100": ("brs100", others), "isx200": ("brs200", others)}, site

    tunnels: dict[str, dict[str, set[str]]] = {}  # connection -> site -> its tunnels' peering names
    for conn_id in (blue.id, red["id"]):
        # The agents report what they observe right after applying it: the last report may still be on its way.
        st = wait_for(lambda conn_id=conn_id: complete_status(border, conn_id), 10,
                      f"every site of l2-gateway-connection {conn_id} to be complete")
        assert [(s.site, s.agent_connected, s.complete, len(s.tunnels)) for s in st.sites] == [
            (s, True, True, 2) for s in SITES], st
        assert all(t.observed.state == ESTABLISHED for s in st.sites for t in s.tunnels), st
        tunnels[conn_id] = {s.site: {t.peering for t in s.tunnels} for s in st.sites}
    out = ctl("--coordinator", addr, "l2-gateway-connection", "status", red["id"]).stdout
    assert out.splitlines()[-1] == "complete", out
    rows = [line.split() for line in out.splitlines() if line.split()[:2] in (["s1", "connected"],
                                                                              ["s3", "connected"])]
    assert [(r[0], r[3], r[4]) for r in rows] == [("s1", "s2/gw", "established"), ("s1", "s3/gw", "established"),
                                                  ("s3", "s1/gw", "established"), ("s3", "s2/gw", "established")]

    # Deleting blue's connection ends blue's tunnels everywhere; red goes on.
    ctl("--coordinator", addr, "l2-gateway-connection", "delete", blue.id)
    wait_for(lambda: all("isx100" not in vxlan_devices(gw) for gw in gateways.values()), 15,
             "isx100 to be removed at every site")
    wait_for(lambda: not blue1.ping(address("blue", "s2")), 10, "blue-s1 to lose blue-s2")
    assert not blue1.ping(address("blue", "s3")), "blue-s1 still reaches blue-s3"
    wait_for(lambda: red1.ping(address("red", "s2")) and red1.ping(address("red", "s3")), 5,
             "red-s1 to still reach red-s2 and red-s3")
    for site in SITES:
        wait_for(lambda site=site: not tunnels[blue.id][site] & set(peerings_at(status, site)), 10,
                 f"the blue tunnels to leave {site}'s status")
        now = peerings_at(status, site)
        assert {name: now.get(name) for name in tunnels[red["id"]][site]} == {
            name: ESTABLISHED for name in tunnels[red["id"]][site]}, site
    gone = ctl("--coordinator", addr, "l2-gateway-connection", "status", blue.id, check=False)
    assert gone.returncode == 1 and gone.stderr.startswith("isthmusctl: error: NOT_FOUND: "), gone.stderr
    assert all(p.poll() is None for p in agents), logs()
    channel.close()
