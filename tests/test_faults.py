"""Real faults against real processes: a three-member etcd cluster, two coordinators, cut links.

- kill -9 the leader coordinator: the API answers on the other, leadership
  moves, agents reconnect, nothing is lost;
- kill -9 the etcd leader: writes resume, nothing is lost;
- an agent cut off from its coordinator keeps its peerings, says it is
  partitioned, accepts local maintenance, and after healing converges without
  touching peerings that did not change;
- a coordinator restarted under connected agents, or one whose etcd is behind,
  never makes an agent apply an empty or older desired state.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import Proc, agent_cmd, coordinator_cmd, ctl, wait_for
from etcd_cluster import EtcdCluster
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc, api_pb2_grpc
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import types_pb2 as pb
from tcp_proxy import Proxy

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (Debian package etcd-server)")


# ---------------------------------------------------------------- helpers


class Api:
    def __init__(self, address: str) -> None:
        ch = grpc.insecure_channel(address)
        self.sites = api_pb2_grpc.SiteServiceStub(ch)
        self.endpoints = api_pb2_grpc.EndpointServiceStub(ch)
        self.connections = api_pb2_grpc.ConnectionServiceStub(ch)
        self.status = api_pb2_grpc.StatusServiceStub(ch)

    def mesh(self, sites: list[str]) -> None:
        for i, site in enumerate(sites):
            self.sites.CreateSite(pb.Site(name=site, kind=pb.SITE_KIND_REGION), timeout=10)
            self.endpoints.CreateEndpoint(pb.Endpoint(site=site, name="gw", address=f"192.0.2.{i + 1}",
                                                      asn=65001 + i), timeout=10)
        for i, a in enumerate(sites):
            for b in sites[i + 1:]:
                self.connect(a, b)

    def connect(self, a: str, b: str) -> None:
        self.connections.CreateConnection(pb.Connection(
            name=f"{a}--{b}", type=pb.CONNECTION_TYPE_BGP, a=pb.EndpointRef(site=a, name="gw"),
            b=pb.EndpointRef(site=b, name="gw")), timeout=10)

    def converged(self, sites: list[str]) -> bool:
        resp = self.status.ListSiteStatus(api.ListSiteStatusRequest(), timeout=3)
        by_site = {s.site: s for s in resp.sites}
        bad = {}
        for site in sites:
            s = by_site.get(site)
            desired = [p for p in s.peerings if p.HasField("desired")] if s else []
            ok = (s is not None and s.connected and s.applied_revision >= s.desired_revision and desired
                  and all(p.observed.state == pb.PEERING_STATE_ESTABLISHED for p in desired))
            if not ok:
                bad[site] = (s.connected, s.applied_revision, s.desired_revision) if s else "missing"
        if bad:
            raise AssertionError(f"not converged: {bad}")
        return True

    def leader(self) -> str:
        coords = self.status.ListCoordinators(api.ListCoordinatorsRequest(), timeout=3).coordinators
        leaders = [c.address for c in coords if c.leader]
        return leaders[0] if len(leaders) == 1 else ""


def admin(sock: Path) -> admin_pb2_grpc.AgentAdminStub:
    return admin_pb2_grpc.AgentAdminStub(grpc.insecure_channel(f"unix:{sock}"))


def operations(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / "fake" / "operations.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start_coordinator(procs: Callable[..., Proc], tmp: Path, name: str, etcd: str, port: int = 0) -> tuple[Proc, str]:
    ready = tmp / f"{name}.addr"
    ready.unlink(missing_ok=True)
    proc = procs(name, coordinator_cmd(tmp / name, ready, etcd_endpoint=etcd, port=port), tmp / f"{name}.log")
    addr = wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, f"{name} to be ready")
    return proc, str(addr)


# ---------------------------------------------------------------- a three-member etcd cluster


@pytest.fixture
def etcd_cluster(tmp_path: Path, procs: Callable[..., Proc]) -> EtcdCluster:
    return EtcdCluster(tmp_path / "etcd", procs)


# ---------------------------------------------------------------- tests


def test_leader_coordinator_killed_api_and_agents_move(etcd_cluster: EtcdCluster, tmp_path: Path,
                                                       procs: Callable[..., Proc]) -> None:
    coord_a, addr_a = start_coordinator(procs, tmp_path, "coord-a", etcd_cluster.endpoints)
    coord_b, addr_b = start_coordinator(procs, tmp_path, "coord-b", etcd_cluster.endpoints)
    sites = ["r1", "r2", "r3"]
    for site in sites:
        procs(f"agent-{site}", agent_cmd(site, f"{addr_a},{addr_b}", tmp_path), tmp_path / f"agent-{site}.log")
    Api(addr_a).mesh(sites)
    wait_for(lambda: Api(addr_a).converged(sites), 30, "the mesh to converge")
    leader = wait_for(lambda: Api(addr_b).leader(), 15, "one leader")
    dead, dead_proc, survivor = (addr_a, coord_a, addr_b) if leader == addr_a else (addr_b, coord_b, addr_a)

    dead_proc.stop(signal.SIGKILL)
    s = Api(survivor)
    assert {x.name for x in s.sites.ListSites(api.ListSitesRequest(), timeout=5).sites} == set(sites)
    wait_for(lambda: s.leader() == survivor, 20, "leadership to move to the surviving coordinator")
    wait_for(lambda: s.converged(sites), 30, "every agent to reconnect to the survivor")
    statuses = s.status.ListSiteStatus(api.ListSiteStatusRequest(), timeout=5).sites
    assert {st.coordinator for st in statuses if st.connected} == {survivor}
    # Nothing lost, and the survivor takes writes that reach the agents.
    assert len(s.connections.ListConnections(api.ListConnectionsRequest(), timeout=5).connections) == 3
    s.sites.CreateSite(pb.Site(name="r4", kind=pb.SITE_KIND_REGION), timeout=5)
    s.endpoints.CreateEndpoint(pb.Endpoint(site="r4", name="gw", address="192.0.2.4", asn=65004), timeout=5)
    s.connect("r1", "r4")
    wait_for(lambda: "r1--r4" in {p.desired.connection for p in s.status.GetSiteStatus(
        api.GetSiteStatusRequest(site="r1"), timeout=3).peerings if p.observed.state == pb.PEERING_STATE_ESTABLISHED},
             20, "the new connection to be established at r1")
    wait_for(lambda: dead not in {c.address for c in s.status.ListCoordinators(
        api.ListCoordinatorsRequest(), timeout=3).coordinators}, 15, "the dead coordinator's lease to expire")


def test_etcd_leader_killed_writes_resume(etcd_cluster: EtcdCluster, tmp_path: Path,
                                          procs: Callable[..., Proc]) -> None:
    _, addr = start_coordinator(procs, tmp_path, "coord", etcd_cluster.endpoints)
    a = Api(addr)
    a.mesh(["r1", "r2"])
    index = etcd_cluster.leader_index()
    assert index >= 0
    etcd_cluster.members[index].stop(signal.SIGKILL)

    def write() -> bool:
        a.sites.CreateSite(pb.Site(name="r3", kind=pb.SITE_KIND_REGION), timeout=3)
        return True

    wait_for(write, 30, "a write to succeed after the etcd leader died")
    wait_for(lambda: etcd_cluster.leader_index() >= 0, 15, "a new etcd leader")
    names = {x.name for x in a.sites.ListSites(api.ListSitesRequest(), timeout=5).sites}
    assert names == {"r1", "r2", "r3"}
    assert [c.name for c in a.connections.ListConnections(api.ListConnectionsRequest(), timeout=5).connections] == [
        "r1--r2"]


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[str], Proxy]]:
    made: list[Proxy] = []

    def make(upstream: str) -> Proxy:
        p = Proxy(upstream)
        made.append(p)
        return p

    yield make
    for p in made:
        p.cut()


def test_partitioned_agent_keeps_peerings_and_converges_without_touching_them(
        etcd: str, tmp_path: Path, procs: Callable[..., Proc], proxy_factory: Callable[[str], Proxy]) -> None:
    _, addr = start_coordinator(procs, tmp_path, "coord", etcd)
    proxy = proxy_factory(addr)
    sites = ["r1", "r2", "r3"]
    procs("agent-r1", agent_cmd("r1", proxy.address, tmp_path), tmp_path / "agent-r1.log")
    for site in sites[1:]:
        procs(f"agent-{site}", agent_cmd(site, addr, tmp_path), tmp_path / f"agent-{site}.log")
    a = Api(addr)
    a.mesh(sites)
    wait_for(lambda: a.converged(sites), 30, "the mesh to converge")
    sock = tmp_path / "r1" / "admin.sock"
    state = tmp_path / "r1" / "state"
    ops_before = operations(state)
    assert sorted(o["connection"] for o in ops_before if o["op"] == "create") == ["r1--r2", "r1--r3"]

    proxy.cut()
    wait_for(lambda: admin(sock).Status(adm.AgentStatusRequest(), timeout=2).partitioned, 20,
             "r1 to say it is partitioned")
    peerings = admin(sock).ListPeerings(adm.ListPeeringsRequest(), timeout=2).peerings
    assert {p.desired.connection: p.observed.state for p in peerings} == {
        "r1--r2": pb.PEERING_STATE_ESTABLISHED, "r1--r3": pb.PEERING_STATE_ESTABLISHED}

    # Local maintenance while cut off: take one peering down, add a peering to a new remote endpoint.
    ctl("local", "--socket", str(sock), "disable", "r1--r3", "--reason", "maintenance window")
    ctl("local", "--socket", str(sock), "add", "r1-to-dc", "--type", "bgp", "--local-address", "192.0.2.1",
        "--local-asn", "65001", "--remote-address", "198.51.100.9", "--remote-asn", "64999")
    wait_for(lambda: {p.desired.connection: p.observed.state for p in admin(sock).ListPeerings(
        adm.ListPeeringsRequest(), timeout=2).peerings} == {
            "r1--r2": pb.PEERING_STATE_ESTABLISHED, "r1--r3": pb.PEERING_STATE_DOWN,
            "r1-to-dc": pb.PEERING_STATE_ESTABLISHED}, 15, "the local overrides to be realized")

    # Meanwhile the coordinator's intent changes: a fourth site joins r1.
    a.sites.CreateSite(pb.Site(name="r4", kind=pb.SITE_KIND_REGION), timeout=5)
    a.endpoints.CreateEndpoint(pb.Endpoint(site="r4", name="gw", address="192.0.2.4", asn=65004), timeout=5)
    a.connect("r1", "r4")
    mark = len(operations(state))

    proxy.heal()
    wait_for(lambda: admin(sock).Status(adm.AgentStatusRequest(), timeout=2).connected, 30, "r1 to reconnect")
    wait_for(lambda: "r1--r4" in {p.desired.connection for p in admin(sock).ListPeerings(
        adm.ListPeeringsRequest(), timeout=2).peerings if p.observed.state == pb.PEERING_STATE_ESTABLISHED},
             20, "the change made while cut off to reach r1")
    after = operations(state)[mark:]
    assert [(o["op"], o["connection"]) for o in after] == [("create", "r1--r4")], after
    # The resumed stream was a delta from the held revision, not a snapshot.
    assert "resuming from rev" in (tmp_path / "coord.log").read_text()

    # The overrides stay after reconnecting, and the coordinator shows them as local.
    st = a.status.GetSiteStatus(api.GetSiteStatusRequest(site="r1"), timeout=3)
    wait_for(lambda: {o.connection for o in a.status.GetSiteStatus(api.GetSiteStatusRequest(site="r1"),
                                                                    timeout=3).overrides} == {"r1--r3", "r1-to-dc"},
             15, "the overrides to be reported upward")
    st = a.status.GetSiteStatus(api.GetSiteStatusRequest(site="r1"), timeout=3)
    marked = {p.desired.connection or p.observed.connection: pb.OverrideKind.Name(p.override.kind)
              for p in st.peerings if p.HasField("override")}
    assert marked == {"r1--r3": "OVERRIDE_KIND_DISABLE", "r1-to-dc": "OVERRIDE_KIND_ADD"}
    kinds = [e.kind for e in st.journal]
    assert "link" in kinds and "override" in kinds


def test_coordinator_restart_never_empties_an_agent(etcd: str, tmp_path: Path, procs: Callable[..., Proc]) -> None:
    coord, addr = start_coordinator(procs, tmp_path, "coord", etcd)
    sites = ["r1", "r2"]
    for site in sites:
        procs(f"agent-{site}", agent_cmd(site, addr, tmp_path), tmp_path / f"agent-{site}.log")
    Api(addr).mesh(sites)
    wait_for(lambda: Api(addr).converged(sites), 30, "the mesh to converge")

    coord.stop(signal.SIGKILL)
    _, addr2 = start_coordinator(procs, tmp_path, "coord2", etcd, port=int(addr.rsplit(":", 1)[1]))
    wait_for(lambda: Api(addr2).converged(sites), 40, "the agents to reconnect to the restarted coordinator")
    for site in sites:
        ops = operations(tmp_path / site / "state")
        assert [o["op"] for o in ops] == ["create"], f"{site} saw {ops}"


def test_agent_refuses_a_coordinator_whose_etcd_is_behind(etcd: str, tmp_path: Path,
                                                         procs: Callable[..., Proc]) -> None:
    _, addr = start_coordinator(procs, tmp_path, "coord", etcd)
    agent = procs("agent-r1", agent_cmd("r1", addr, tmp_path), tmp_path / "agent-r1.log")
    procs("agent-r2", agent_cmd("r2", addr, tmp_path), tmp_path / "agent-r2.log")
    a = Api(addr)
    a.mesh(["r1", "r2"])
    for i in range(10):  # move the revision well past a fresh etcd's
        a.sites.UpdateSite(pb.Site(name="r1", description=f"touch {i}"), timeout=5)
    wait_for(lambda: a.converged(["r1", "r2"]), 30, "the mesh to converge")
    sock = tmp_path / "r1" / "admin.sock"
    held = admin(sock).Status(adm.AgentStatusRequest(), timeout=2).desired_revision

    # The agent restarts against a coordinator on an empty etcd (a restore gone wrong, a wrong
    # cluster): that coordinator's view is older than what the agent holds, so nothing changes.
    assert agent.stop() == 0
    _, empty_addr = start_coordinator(procs, tmp_path, "empty", "")
    log = tmp_path / "agent-r1b.log"
    procs("agent-r1b", agent_cmd("r1", empty_addr, tmp_path), log)
    wait_for(lambda: "behind the agent's" in log.read_text() or "older than the held" in log.read_text(), 40,
             "the agent to refuse the stale coordinator")
    st = admin(sock).Status(adm.AgentStatusRequest(), timeout=2)
    assert st.desired_revision == held and not st.connected
    peerings = admin(sock).ListPeerings(adm.ListPeeringsRequest(), timeout=2).peerings
    assert [(p.desired.connection, p.observed.state) for p in peerings] == [
        ("r1--r2", pb.PEERING_STATE_ESTABLISHED)]
    assert [o["op"] for o in operations(tmp_path / "r1" / "state")] == ["create", "create"]
