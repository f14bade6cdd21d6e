"""A route-reflector policy with real BGP daemons: the reflector is an isthmus site (its agent and os-ken speaker
in a namespace), its two clients gobgpd in namespaces of their own, all in one AS on one segment. Each client
learns the other's prefix only through the reflector: the policy's sessions make them route-reflector clients."""

from __future__ import annotations

from bgp_lab import BgpLab, bgp_lab, needs_daemons, netns

from conftest import wait_for
from isthmus.v1 import topology_pb2 as tpb
from isthmus.v1 import topology_pb2_grpc
from isthmus.v1 import types_pb2 as pb

__all__ = ["bgp_lab"]  # the fixture

AS = 64512


@netns
@needs_daemons
def test_clients_learn_each_others_prefixes_through_the_reflector(bgp_lab: BgpLab) -> None:
    bl = bgp_lab
    rr, c1, c2 = bl.lab.netns("rr"), bl.lab.netns("c1"), bl.lab.netns("c2")
    bl.link(rr, [], c1, ["192.0.2.2/24"], a_if="p1")
    bl.link(rr, [], c2, ["192.0.2.3/24"], a_if="p2")
    rr.ip("link", "add", "br0", "type", "bridge")
    for port in ("p1", "p2"):
        rr.ip("link", "set", port, "master", "br0")
    rr.ip("addr", "add", "192.0.2.1/24", "dev", "br0")
    rr.ip("link", "set", "br0", "up")
    clients = {
        "c1": bl.gobgpd(c1, AS, "192.0.2.2", [{"address": "192.0.2.1", "peer_as": AS}]),
        "c2": bl.gobgpd(c2, AS, "192.0.2.3", [{"address": "192.0.2.1", "peer_as": AS}]),
    }
    clients["c1"].cli("global", "rib", "add", "10.1.0.0/24")
    clients["c2"].cli("global", "rib", "add", "10.2.0.0/24")

    bl.site("rr")
    bl.site("c1", pb.SITE_KIND_EXTERNAL)
    bl.site("c2", pb.SITE_KIND_EXTERNAL)
    bl.endpoint("rr/gw", "192.0.2.1", AS, advertise="10.0.0.0/24")
    bl.endpoint("c1/gw", "192.0.2.2", AS, remote=True)
    bl.endpoint("c2/gw", "192.0.2.3", AS, remote=True)
    policies = topology_pb2_grpc.PolicyServiceStub(bl.channel)
    policy = tpb.TopologyPolicy(name="ibgp", kind=tpb.POLICY_KIND_ROUTE_REFLECTOR, endpoint="gw",
                                sites=["rr", "c1", "c2"], reflectors=["rr"], bgp=pb.BgpParams(hold_time=9))
    policies.CreatePolicy(policy, timeout=10)
    bl.agent(rr, "rr")

    wait_for(lambda: all(c.established("192.0.2.1") for c in clients.values()), 60, "both client sessions up")
    wait_for(lambda: clients["c1"].rib() >= {"10.0.0.0/24", "10.2.0.0/24"}
             and clients["c2"].rib() >= {"10.0.0.0/24", "10.1.0.0/24"}, 30,
             "each client learning the other's prefix through the reflector")

    # The same sessions without route reflection (a full mesh of these members joins only the reflector to
    # each client: the clients are both remote): iBGP does not pass one peer's routes to another, so the
    # reflected prefixes go and the reflector's own stay.
    current = policies.GetPolicy(tpb.GetPolicyRequest(name="ibgp"), timeout=10)
    mesh = tpb.TopologyPolicy()
    mesh.CopyFrom(current)
    mesh.kind = tpb.POLICY_KIND_FULL_MESH
    del mesh.reflectors[:]
    policies.UpdatePolicy(mesh, timeout=10)
    wait_for(lambda: "10.2.0.0/24" not in clients["c1"].rib() and "10.1.0.0/24" not in clients["c2"].rib()
             and all(c.established("192.0.2.1") for c in clients.values())
             and all("10.0.0.0/24" in c.rib() for c in clients.values()), 60,
             "the reflected prefixes withdrawn once the clients are plain iBGP peers")
