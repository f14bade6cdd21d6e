"""End to end with real processes: a coordinator on its embedded etcd and three agents converging.

Also: an agent restarted while the coordinator is down re-applies its persisted
state; agents keep their peerings while the coordinator is gone; a coordinator
restarted on the same data directory brings everyone back.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import Proc, agent_cmd, coordinator_cmd, wait_for
from isthmus.v1 import admin_pb2 as adm
from isthmus.v1 import admin_pb2_grpc, api_pb2_grpc
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import types_pb2 as pb

pytestmark = pytest.mark.skipif(
    not any((Path(p) / "etcd").exists() for p in os.environ.get("PATH", "").split(os.pathsep)),
    reason="etcd is not installed (Debian package etcd-server)",
)

SITES = [("region-one", pb.SITE_KIND_REGION, ""), ("region-two", pb.SITE_KIND_REGION, ""),
         ("cell-two-a", pb.SITE_KIND_CELL, "region-two")]
ADDRS = {"region-one": ("192.0.2.1", 65001), "region-two": ("192.0.2.2", 65002), "cell-two-a": ("192.0.2.3", 65003)}
MESH = [("region-one", "region-two"), ("region-one", "cell-two-a"), ("region-two", "cell-two-a")]


def admin(sock: Path) -> admin_pb2_grpc.AgentAdminStub:
    return admin_pb2_grpc.AgentAdminStub(grpc.insecure_channel(f"unix:{sock}"))


def local_states(sock: Path) -> dict[str, str]:
    resp = admin(sock).ListPeerings(adm.ListPeeringsRequest(), timeout=2)
    return {p.desired.connection: pb.PeeringState.Name(p.observed.state) for p in resp.peerings}


def converged(status: api_pb2_grpc.StatusServiceStub, want: dict[str, set[str]]) -> Any:
    """True when every site's agent is connected, caught up, and has exactly ``want`` ESTABLISHED.

    Otherwise raises, saying what it saw (``wait_for`` shows the last one on timeout).
    """
    resp = status.ListSiteStatus(api.ListSiteStatusRequest(), timeout=2)
    seen = {}
    for s in resp.sites:
        est = {p.desired.connection for p in s.peerings
               if p.observed.state == pb.PEERING_STATE_ESTABLISHED and p.HasField("desired")}
        seen[s.site] = (s.connected, s.applied_revision >= s.desired_revision, sorted(est))
    ok = all(seen.get(site, (False,))[0] and seen[site][1] and set(seen[site][2]) == names
             for site, names in want.items())
    if not ok:
        raise AssertionError(f"(connected, caught up, established) per site: {seen}")
    return True


@pytest.fixture
def cluster(tmp_path: Path, procs: Callable[..., Proc]) -> dict[str, Any]:
    ready = tmp_path / "coordinator.addr"
    coord = procs("coordinator", coordinator_cmd(tmp_path / "coord", ready), tmp_path / "coordinator.log")
    addr = wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator to be ready")
    channel = grpc.insecure_channel(addr)
    agents = {}
    for site, _, _ in SITES:
        agents[site] = procs(f"agent-{site}", agent_cmd(site, addr, tmp_path, "--driver-opt", "fake.connect_delay=0.2"),
                             tmp_path / f"agent-{site}.log")
    return {"addr": addr, "channel": channel, "coord": coord, "agents": agents, "tmp": tmp_path, "ready": ready}


def create_mesh(channel: grpc.Channel) -> dict[str, set[str]]:
    sites = api_pb2_grpc.SiteServiceStub(channel)
    eps = api_pb2_grpc.EndpointServiceStub(channel)
    conns = api_pb2_grpc.ConnectionServiceStub(channel)
    for name, kind, parent in SITES:
        sites.CreateSite(pb.Site(name=name, kind=kind, parent=parent))
        addr, asn = ADDRS[name]
        eps.CreateEndpoint(pb.Endpoint(site=name, name="gw", address=addr, asn=asn))
    want: dict[str, set[str]] = {s: set() for s, _, _ in SITES}
    for a, b in MESH:
        name = f"{a}--{b}"
        conns.CreateConnection(pb.Connection(name=name, type=pb.CONNECTION_TYPE_BGP,
                                             a=pb.EndpointRef(site=a, name="gw"), b=pb.EndpointRef(site=b, name="gw")))
        want[a].add(name)
        want[b].add(name)
    conns.CreateConnection(pb.Connection(name="one-two-vxlan", type=pb.CONNECTION_TYPE_VXLAN,
                                         a=pb.EndpointRef(site="region-one", name="gw"),
                                         b=pb.EndpointRef(site="region-two", name="gw"),
                                         vxlan=pb.VxlanParams(vni=1001)))
    want["region-one"].add("one-two-vxlan")
    want["region-two"].add("one-two-vxlan")
    return want


def test_three_agents_converge_and_follow_changes(cluster: dict[str, Any]) -> None:
    status = api_pb2_grpc.StatusServiceStub(cluster["channel"])
    want = create_mesh(cluster["channel"])
    wait_for(lambda: converged(status, want), 30, "every peering ESTABLISHED at every site")

    # The admin socket is private to the agent's user.
    sock = cluster["tmp"] / "region-one" / "admin.sock"
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
    st = admin(sock).Status(adm.AgentStatusRequest(), timeout=2)
    assert st.connected and st.site == "region-one" and st.driver == "fake" and st.coordinator == cluster["addr"]

    # Admin state DOWN reaches the agents and shows as DOWN on both sides.
    conns = api_pb2_grpc.ConnectionServiceStub(cluster["channel"])
    conns.UpdateConnection(pb.Connection(name="region-one--region-two", admin_state=pb.ADMIN_STATE_DOWN))
    for site in ("region-one", "region-two"):
        s = cluster["tmp"] / site / "admin.sock"
        wait_for(lambda s=s: local_states(s).get("region-one--region-two") == "PEERING_STATE_DOWN", 15,
                 f"the peering to go DOWN at {site}")

    # A deleted connection disappears from both agents and from the status.
    conns.DeleteConnection(api.DeleteConnectionRequest(name="region-one--region-two"))
    want["region-one"].discard("region-one--region-two")
    want["region-two"].discard("region-one--region-two")
    wait_for(lambda: converged(status, want), 15, "the deleted connection to be gone everywhere")
    assert "region-one--region-two" not in local_states(sock)

    # An agent that stops shows as disconnected (its stream closed, its presence lease revoked).
    cluster["agents"]["cell-two-a"].stop()
    wait_for(lambda: not status.GetSiteStatus(api.GetSiteStatusRequest(site="cell-two-a"), timeout=2).connected,
             15, "cell-two-a to show as disconnected")


def test_agents_keep_state_without_coordinator_and_restart_from_disk(cluster: dict[str, Any],
                                                                    procs: Callable[..., Proc]) -> None:
    status = api_pb2_grpc.StatusServiceStub(cluster["channel"])
    want = create_mesh(cluster["channel"])
    wait_for(lambda: converged(status, want), 30, "every peering ESTABLISHED at every site")
    tmp: Path = cluster["tmp"]
    sock = tmp / "region-one" / "admin.sock"

    # The coordinator goes away: agents keep every peering as it is and say they are disconnected.
    assert cluster["coord"].stop() == 0
    wait_for(lambda: not admin(sock).Status(adm.AgentStatusRequest(), timeout=2).connected, 15,
             "region-one to notice the coordinator is gone")
    assert set(local_states(sock).values()) == {"PEERING_STATE_ESTABLISHED"}
    assert set(local_states(sock)) == want["region-one"]

    # The agent restarts while the coordinator is still down: it re-applies what it persisted.
    agent = cluster["agents"]["region-one"]
    assert agent.stop() == 0
    assert not sock.exists(), "a clean stop removes the admin socket"
    procs("agent-region-one-2", agent_cmd("region-one", cluster["addr"], tmp), tmp / "agent-region-one-2.log")
    wait_for(lambda: set(local_states(sock)) == want["region-one"]
             and set(local_states(sock).values()) == {"PEERING_STATE_ESTABLISHED"},
             15, "the restarted agent to re-apply its persisted peerings")
    st = admin(sock).Status(adm.AgentStatusRequest(), timeout=2)
    assert not st.connected and st.applied_revision == st.desired_revision > 0

    # The coordinator comes back on the same data directory and port: everyone reconnects and converges.
    host, port = cluster["addr"].rsplit(":", 1)
    cluster["ready"].unlink()
    procs("coordinator-2", coordinator_cmd(tmp / "coord", cluster["ready"], port=int(port)),
          tmp / "coordinator-2.log")
    wait_for(lambda: cluster["ready"].exists(), 30, "the coordinator to restart")
    wait_for(lambda: converged(status, want), 40, "every site to reconnect and converge again")
