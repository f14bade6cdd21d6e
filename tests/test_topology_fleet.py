"""A 100-site hub-and-spoke policy with two hubs, expanded by the coordinator's leader, converging at 100 site
agents (the agent's own link, reconciler and fake driver, over real gRPC, against real etcd); sites joining
and changing labels, and the policy's removal."""

from __future__ import annotations

from pathlib import Path

import grpc.aio
from bench.fleet import Fleet, SimAgent

from conftest import await_for, running_coordinator
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc, topology_pb2_grpc
from isthmus.v1 import topology_pb2 as tpb
from isthmus.v1 import types_pb2 as pb

HUBS = ("hub-1", "hub-2")
SPOKES = tuple(f"s{i:03d}" for i in range(98))


class Api:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.sites = api_pb2_grpc.SiteServiceStub(channel)
        self.endpoints = api_pb2_grpc.EndpointServiceStub(channel)
        self.connections = api_pb2_grpc.ConnectionServiceStub(channel)
        self.policies = topology_pb2_grpc.PolicyServiceStub(channel)

    async def add_site(self, name: str, index: int, role: str) -> None:
        await self.sites.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION, labels={"role": role}))
        await self.endpoints.CreateEndpoint(pb.Endpoint(site=name, name="gw", address=f"10.1.{index // 200}."
                                                        f"{index % 200 + 1}", asn=64512))

    async def connections_of(self, policy: str) -> dict[str, pb.Connection]:
        reply = await self.connections.ListConnections(api.ListConnectionsRequest())
        return {c.name: c for c in reply.connections if c.policy == policy}

    async def all_connections(self) -> set[str]:
        return {c.name for c in (await self.connections.ListConnections(api.ListConnectionsRequest())).connections}


def spoke_connections(spoke: str) -> set[str]:
    return {f"edge-{hub}-{spoke}" for hub in HUBS}


def holds(agent: SimAgent, names: set[str]) -> bool:
    """The agent's desired peerings are exactly ``names``, and it applied them."""
    return set(agent.reconciler.desired.peerings) == names and agent.synced


async def test_hub_and_spoke_of_100_sites_converges_and_follows_joins_relabels_and_removal(
        etcd: str, tmp_path: Path) -> None:
    async with running_coordinator(etcd, tmp_path / "coord") as coord, \
            grpc.aio.insecure_channel(coord.address) as channel:
        a = Api(channel)
        for i, name in enumerate(HUBS + SPOKES):
            await a.add_site(name, i, "hub" if name in HUBS else "edge")
        # An explicit connection between two spokes, which the policy must leave alone.
        await a.connections.CreateConnection(pb.Connection(
            name="s000-s001", a=pb.EndpointRef(site="s000", name="gw"), b=pb.EndpointRef(site="s001", name="gw"),
            type=pb.CONNECTION_TYPE_BGP))
        await a.policies.CreatePolicy(tpb.TopologyPolicy(
            name="edge", kind=tpb.POLICY_KIND_HUB_AND_SPOKE, endpoint="gw", selector={"role": "edge"},
            hubs=list(HUBS), bgp=pb.BgpParams(hold_time=30, graceful_restart=60)))

        expected = {"edge-hub-1-hub-2"} | {n for s in SPOKES for n in spoke_connections(s)}
        assert len(expected) == 197

        async def policy_is(names: set[str]) -> bool:
            return set(await a.connections_of("edge")) == names

        await await_for(lambda: policy_is(expected), 60, "the 197 connections of the policy")
        fleet = Fleet(coord.address, tmp_path / "agents", interval=5.0, heartbeat=2.0)
        try:
            await fleet.add(HUBS + SPOKES)
            want = {s: spoke_connections(s) for s in SPOKES}
            want["s000"] = want["s000"] | {"s000-s001"}
            want["s001"] = want["s001"] | {"s000-s001"}
            for hub in HUBS:
                want[hub] = {n for n in expected if hub in n}
            await fleet.wait(fleet.agents.values(), lambda ag: holds(ag, want[ag.site]), 60, "converged")
            conn = (await a.connections_of("edge"))["edge-hub-1-s042"]
            assert conn.bgp.hold_time == 30 and conn.bgp.graceful_restart == 60 and conn.a.site == "hub-1"

            # A site joining creates exactly its two spoke connections.
            before = await a.all_connections()
            await a.add_site("s098", 98 + 2, "edge")
            await await_for(lambda: policy_is(expected | spoke_connections("s098")), 30, "the new spoke's")
            assert await a.all_connections() - before == spoke_connections("s098")
            [joined] = await fleet.add(["s098"])
            await fleet.wait([joined], lambda ag: holds(ag, spoke_connections("s098")), 30, "the new spoke")
            await fleet.wait([fleet.agents[h] for h in HUBS],
                             lambda ag: f"edge-{ag.site}-s098" in ag.reconciler.desired.peerings and ag.synced,
                             30, "the hubs peering with the new spoke")

            # Relabelling s005 out of the policy removes its connections, and only those.
            await a.sites.UpdateSite(pb.Site(name="s005", labels={"role": "lab"}))
            now = expected | spoke_connections("s098")
            await await_for(lambda: policy_is(now - spoke_connections("s005")), 30, "the relabelled site's gone")
            await fleet.wait([fleet.agents["s005"]], lambda ag: holds(ag, set()), 30, "s005 without peerings")
            # ... and back in: they come back.
            await a.sites.UpdateSite(pb.Site(name="s005", labels={"role": "edge"}))
            await await_for(lambda: policy_is(now), 30, "the relabelled site's back")
            await fleet.wait([fleet.agents["s005"]], lambda ag: holds(ag, spoke_connections("s005")), 30, "s005")

            # Removing the policy removes what it made, and nothing else.
            await a.policies.DeletePolicy(tpb.DeletePolicyRequest(name="edge"))

            async def only_explicit() -> bool:
                return await a.all_connections() == {"s000-s001"}

            await await_for(only_explicit, 60, "only the explicit connection left")
            await fleet.wait(fleet.agents.values(),
                             lambda ag: holds(ag, {"s000-s001"} if ag.site in ("s000", "s001") else set()),
                             60, "every agent without the policy's peerings")
        finally:
            await fleet.stop()


async def test_the_next_leader_expands_the_policies(etcd: str, tmp_path: Path) -> None:
    async with running_coordinator(etcd, tmp_path / "a") as first:
        await await_for(lambda: first.membership.is_leader.is_set(), 10, "the first coordinator leading")
        async with running_coordinator(etcd, tmp_path / "b") as second, \
                grpc.aio.insecure_channel(second.address) as channel:
            a = Api(channel)
            for i, name in enumerate(("x", "y", "z")):
                await a.add_site(name, i, "core")
            # The leader goes; the policy is written through the other coordinator, which takes over.
            await first.membership.stop()
            await a.policies.CreatePolicy(tpb.TopologyPolicy(
                name="core", kind=tpb.POLICY_KIND_FULL_MESH, endpoint="gw", selector={"role": "core"}))

            async def meshed() -> bool:
                return set(await a.connections_of("core")) == {"core-x-y", "core-x-z", "core-y-z"}

            await await_for(meshed, 30, "the new leader's expansion")
            assert second.membership.is_leader.is_set()
