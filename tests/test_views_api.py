"""Global views over real gRPC and etcd: quotas shared out by the coordinator, capacity, the address view.

Stand-in agents speak the real RegionAgentService stream (usage, address
deltas, capacity up; quota assignments down); the OpenStack side is in
test_views_openstack.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from test_sync_api import Env, FakeRegionAgent, with_env

from conftest import await_for, running_coordinator
from isthmus.coordinator.multisite.views_planner import VIEWS
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc, events_pb2_grpc, views_pb2_grpc
from isthmus.v1 import events_pb2 as epb
from isthmus.v1 import sync_pb2 as spb
from isthmus.v1 import types_pb2 as pb
from isthmus.v1 import views_pb2 as vpb


class ViewAgent(FakeRegionAgent):
    """A stand-in agent that also keeps the quota targets it is given."""

    def __init__(self, channel: grpc.aio.Channel, site: str) -> None:
        super().__init__(channel, site)
        self.targets: dict[tuple[str, str], int] = {}
        self.grants: dict[tuple[str, str], int] = {}  # the grant numbers of ``targets``
        self.history: list[dict[tuple[str, str], tuple[int, int]]] = []  # (limit, grant) per assignment, in order

    async def start(self, images: list[spb.ImageInfo] | None = None, instance: str = "") -> ViewAgent:
        await super().start(images, instance)
        return self

    async def _read(self) -> None:
        async for msg in self.call:
            if msg.WhichOneof("msg") == "quotas":
                self.targets = {(t.project, t.resource): t.limit for t in msg.quotas.targets}
                self.grants = {(t.project, t.resource): t.grant for t in msg.quotas.targets}
                self.history.append({(t.project, t.resource): (t.limit, t.grant) for t in msg.quotas.targets})
            else:
                self.tasks = list(msg.assignment.tasks)

    async def usage(self, project: str, resource: str, in_use: int, limit: int, recent: float = 0.0,
                    grant: int = 0) -> None:
        report = vpb.UsageReport()
        entry = report.projects.add(project=project)
        entry.resources[resource].CopyFrom(vpb.UsageEntry(in_use=in_use, limit=limit, recent=recent, grant=grant))
        await self.call.write(spb.RegionUp(usage=report))

    async def addresses(self, seq: int, upserts: list[vpb.AddressRecord], removes: list[tuple[str, str]] = (),
                        full: bool = False) -> None:
        await self.call.write(spb.RegionUp(addresses=vpb.AddressDelta(
            seq=seq, full=full, upserts=upserts, removes=[vpb.AddressKey(kind=k, id=i) for k, i in removes])))


async def view_agent(env: Env, site: str) -> ViewAgent:
    a = ViewAgent(env.channel, site)
    await a.start()
    env.agents.append(a)
    return a


def views(env: Env) -> Any:
    return views_pb2_grpc.GlobalViewServiceStub(env.channel)


def port(id_: str, network: str, *ips: str, mac: str = "", project: str = "p1") -> vpb.AddressRecord:
    return vpb.AddressRecord(kind="port", id=id_, network=network, ips=list(ips), mac=mac, project=project)


def subnet(id_: str, network: str, cidr: str) -> vpb.AddressRecord:
    return vpb.AddressRecord(kind="subnet", id=id_, network=network, cidr=cidr, project="p1")


@with_env
async def test_regional_limits_never_add_up_to_more_than_the_hard_limit(env: Env) -> None:
    v = views(env)
    one, two = await view_agent(env, "one"), await view_agent(env, "two")
    await v.SetQuota(vpb.QuotaLimit(project="p1", resource="security_groups", hard=20, soft=15))
    # Both regions report before any limit: report only (-2) until the coordinator knows their usage.
    await await_for(lambda: one.targets.get(("p1", "security_groups")) == -2, what="a report-only target")
    await one.usage("p1", "security_groups", 5, 10, recent=3)
    await two.usage("p1", "security_groups", 3, 10, recent=1)
    # Rounds of "apply what you are told, report it back": the sum of the limits in force never tops 20.
    limits = {"one": 10, "two": 10}
    in_use = {"one": 5, "two": 3}
    for _ in range(4):
        await await_for(lambda: all(a.targets.get(("p1", "security_groups"), -2) >= 0 for a in (one, two)),
                        what="limits for both regions")
        for agent in (one, two):
            limits[agent.site] = agent.targets[("p1", "security_groups")]
            assert sum(limits.values()) <= 20, limits
            await agent.usage("p1", "security_groups", in_use[agent.site], limits[agent.site], recent=2,
                              grant=agent.grants[("p1", "security_groups")])
        await asyncio.sleep(0.2)
    pq = await v.GetQuota(vpb.GetQuotaRequest(project="p1"))
    [rq] = pq.resources
    assert (rq.hard, rq.soft, rq.total, rq.headroom, rq.soft_exceeded) == (20, 15, 8, 12, False)
    regions = {r.region: r for r in rq.regions}
    assert regions["one"].usage == 5 and regions["two"].usage == 3
    assert sum(r.target for r in regions.values()) == 20 and all(r.target >= r.usage for r in regions.values())
    # Both grow at once, up to their limits: still within 20 in total, and the soft limit is seen crossed.
    in_use = {"one": limits["one"], "two": limits["two"]}
    for agent in (one, two):
        await agent.usage("p1", "security_groups", in_use[agent.site], limits[agent.site], recent=10,
                          grant=agent.grants[("p1", "security_groups")])
    await await_for(lambda: v.GetQuota(vpb.GetQuotaRequest(project="p1")), what="view")
    for _ in range(100):
        rq = (await v.GetQuota(vpb.GetQuotaRequest(project="p1"))).resources[0]
        if rq.soft_exceeded:
            break
        await asyncio.sleep(0.05)
    assert rq.soft_exceeded and rq.total == sum(in_use.values()) <= 20
    # Crossing the soft limit is one event in the central history, however many coordinators saw it.
    events = events_pb2_grpc.EventServiceStub(env.channel)

    async def soft_events() -> list[Any]:
        return list((await events.ListEvents(epb.ListEventsRequest(kind="quota.soft-limit"))).events)

    found = await await_for(soft_events, what="the soft-limit event")
    assert len(found) == 1 and "p1" in found[0].message and "security_groups" in found[0].message
    assert found[0].level == "warning" and found[0].site == "_coordinators"
    # Region two goes away: it keeps its last limit, shown stale; one's share never takes two's.
    await two.close()
    await await_for(lambda: v.GetQuota(vpb.GetQuotaRequest(project="p1")), what="view")
    for _ in range(200):
        rq = (await v.GetQuota(vpb.GetQuotaRequest(project="p1"))).resources[0]
        if {r.region: r.stale for r in rq.regions}.get("two"):
            break
        await asyncio.sleep(0.05)
    regions = {r.region: r for r in rq.regions}
    assert regions["two"].stale and regions["two"].target == limits["two"]
    assert regions["one"].target + limits["two"] <= 20


@with_env
async def test_quota_input_is_checked_and_unset_removes(env: Env) -> None:
    v = views(env)
    for limit, field in [(vpb.QuotaLimit(project="p1", resource="flavors", hard=1), "resource"),
                         (vpb.QuotaLimit(project="", resource="cores", hard=1), "project"),
                         (vpb.QuotaLimit(project="p1", resource="cores", hard=-5), "hard"),
                         (vpb.QuotaLimit(project="p1", resource="cores", hard=10, soft=11), "soft")]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await v.SetQuota(limit)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(f"{field}:")
    kvs, _ = await env.store.get_prefix(VIEWS)
    assert kvs == []
    made = await v.SetQuota(vpb.QuotaLimit(project="p1", resource="cores", hard=10))
    [listed] = (await v.ListQuotas(vpb.ListQuotasRequest())).limits
    assert (listed.resource, listed.hard, listed.version) == ("cores", 10, made.version) and made.version > 0
    # A write naming the version it read wins once; the second one with that version is stale.
    await v.SetQuota(vpb.QuotaLimit(project="p1", resource="cores", hard=12, version=listed.version))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await v.SetQuota(vpb.QuotaLimit(project="p1", resource="cores", hard=14, version=listed.version))
    assert err.value.code() == grpc.StatusCode.ABORTED and err.value.details().startswith("version:")
    assert (await v.UnsetQuota(vpb.UnsetQuotaRequest(project="p1"))).removed == 1
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await v.GetQuota(vpb.GetQuotaRequest(project="p1"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@with_env
async def test_address_view_finds_duplicates_only_within_a_routing_domain(env: Env) -> None:
    v = views(env)
    one, two = await view_agent(env, "one"), await view_agent(env, "two")
    await one.addresses(1, [port("p-a", "net-a", "10.0.0.5", "2001:db8::5", mac="fa:16:3e:00:00:01"),
                            subnet("s-a", "net-a", "10.0.0.0/24"), subnet("s-a6", "net-a", "2001:db8::/64")],
                        full=True)
    await two.addresses(1, [port("p-b", "net-b", "10.0.0.5", "2001:db8::5", mac="FA:16:3E:00:00:01"),
                            subnet("s-b", "net-b", "10.0.0.128/25"), subnet("s-b6", "net-b", "2001:db8::/64"),
                            port("p-c", "net-c", "10.0.0.5")], full=True)

    async def found(query: str) -> set[tuple[str, str]]:
        return {(r.region, r.id) for r in (await v.ListAddresses(vpb.ListAddressesRequest(query=query))).records}

    await await_for(lambda: found("10.0.0.5"), what="the addresses indexed")
    for _ in range(100):
        if await found("10.0.0.5") == {("one", "p-a"), ("two", "p-b"), ("two", "p-c"), ("one", "s-a")}:
            break
        await asyncio.sleep(0.05)
    # The ports that hold it and the subnet that contains it (10.0.0.128/25 does not).
    assert await found("10.0.0.5") == {("one", "p-a"), ("two", "p-b"), ("two", "p-c"), ("one", "s-a")}
    assert await found("2001:DB8::0005") >= {("one", "p-a"), ("two", "p-b")}
    assert await found("fa:16:3e:00:00:01") == {("one", "p-a"), ("two", "p-b")}
    assert await found("10.0.0.128/26") == {("one", "s-a"), ("two", "s-b")}
    # No domain joins the networks: the same IP in unrelated networks is no conflict.
    assert list((await v.ListAddressConflicts(vpb.ListAddressConflictsRequest())).conflicts) == []
    # Bad input: nothing written.
    before, _ = await env.store.get_prefix(VIEWS + "domains/")
    for domain, code, field in [
            (vpb.RoutingDomain(name="corp", networks=[vpb.NetworkRef(region="mars", network="net-x")]),
             grpc.StatusCode.NOT_FOUND, "networks[0].region"),
            (vpb.RoutingDomain(name="corp"), grpc.StatusCode.INVALID_ARGUMENT, "networks"),
            (vpb.RoutingDomain(name="Corp!", networks=[vpb.NetworkRef(region="one", network="net-a")]),
             grpc.StatusCode.INVALID_ARGUMENT, "name")]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await v.CreateRoutingDomain(domain)
        assert (err.value.code(), err.value.details().split(":")[0]) == (code, field)
    assert (await env.store.get_prefix(VIEWS + "domains/"))[0] == before
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await v.ListAddresses(vpb.ListAddressesRequest(query="not-an-address"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # net-a and net-b in one routing domain: duplicate IPv4 and IPv6 address, duplicate MAC, overlapping subnets.
    await v.CreateRoutingDomain(vpb.RoutingDomain(name="corp", networks=[
        vpb.NetworkRef(region="one", network="net-a"), vpb.NetworkRef(region="two", network="net-b")]))
    conflicts = (await v.ListAddressConflicts(vpb.ListAddressConflictsRequest())).conflicts
    got = {(c.kind, c.value, c.domain, frozenset((r.region, r.id) for r in c.records)) for c in conflicts}
    pair = frozenset({("one", "p-a"), ("two", "p-b")})
    assert got == {
        ("duplicate_ip", "10.0.0.5", "corp", pair),
        ("duplicate_ip", "2001:db8::5", "corp", pair),
        ("duplicate_mac", "fa:16:3e:00:00:01", "corp", pair),
        ("overlapping_cidr", "10.0.0.0/24 ~ 10.0.0.128/25", "corp", frozenset({("one", "s-a"), ("two", "s-b")})),
        ("overlapping_cidr", "2001:db8::/64 ~ 2001:db8::/64", "corp", frozenset({("one", "s-a6"), ("two", "s-b6")})),
    }
    # net-c is in no domain with net-a: its 10.0.0.5 is not part of the clash. A delta removes p-b: its clashes go.
    await two.addresses(2, [], removes=[("port", "p-b")])
    for _ in range(100):
        conflicts = (await v.ListAddressConflicts(vpb.ListAddressConflictsRequest())).conflicts
        if {c.kind for c in conflicts} == {"overlapping_cidr"}:
            break
        await asyncio.sleep(0.05)
    assert {c.kind for c in conflicts} == {"overlapping_cidr"}


@with_env
async def test_floating_ips_are_one_global_domain_and_capacity_sums(env: Env) -> None:
    v = views(env)
    one, two = await view_agent(env, "one"), await view_agent(env, "two")
    fip = vpb.AddressRecord(kind="floating_ip", id="f1", network="ext", ips=["203.0.113.7"], project="p1")
    await one.addresses(1, [fip], full=True)
    fip2 = vpb.AddressRecord(kind="floating_ip", id="f2", network="ext2", ips=["203.0.113.7"], project="p2")
    await two.addresses(1, [fip2], full=True)
    for _ in range(100):
        conflicts = (await v.ListAddressConflicts(vpb.ListAddressConflictsRequest())).conflicts
        if conflicts:
            break
        await asyncio.sleep(0.05)
    assert [(c.kind, c.value, c.domain) for c in conflicts] == [("duplicate_ip", "203.0.113.7", "global")]
    for agent, n in ((one, 3), (two, 4)):
        cap = vpb.RegionCapacity(compute_known=False, source="unknown")
        cap.network_objects["networks"] = n
        await agent.call.write(spb.RegionUp(capacity=cap))
    for _ in range(100):
        cap = await v.GetCapacity(vpb.GetCapacityRequest())
        if len(cap.regions) == 2:
            break
        await asyncio.sleep(0.05)
    assert [r.region for r in cap.regions] == ["one", "two"]
    assert cap.total.network_objects["networks"] == 7 and not cap.total.compute_known
    # A deleted site's reports go with it (a region that no longer exists holds back no quota).
    await two.close()
    await env.sites.DeleteSite(api.DeleteSiteRequest(name="two"))
    left = [kv.key for kv in (await env.store.get_prefix(VIEWS))[0]]
    assert left and not [k for k in left if "/two" in k], left


async def test_two_coordinators_never_hand_out_the_same_headroom_twice(etcd: str, tmp_path: Path) -> None:
    """Regions attached to different coordinators grow at random moments: the applied limits stay within the
    hard limit at every step, and the grants converge to exactly the hard limit."""
    hard = 30
    async with running_coordinator(etcd, tmp_path / "a") as ca, running_coordinator(etcd, tmp_path / "b") as cb:
        async with grpc.aio.insecure_channel(ca.address) as cha, grpc.aio.insecure_channel(cb.address) as chb:
            sites = api_pb2_grpc.SiteServiceStub(cha)
            names = ["one", "two", "three"]
            for name in names:
                await sites.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION))
            agents = [await ViewAgent(ch, name).start() for ch, name in zip((cha, chb, cha), names, strict=True)]
            try:
                # Every region known to both coordinators first: a region never seen is outside any limit.
                await await_for(lambda: all(c.views is not None and set(c.views.state.regions) == set(names)
                                            for c in (ca, cb)), what="the three regions registered")
                await views_pb2_grpc.GlobalViewServiceStub(chb).SetQuota(
                    vpb.QuotaLimit(project="p1", resource="cores", hard=hard))
                key = ("p1", "cores")
                applied = dict.fromkeys(names, 10)  # OpenStack's defaults: 30 in all, at the limit already
                in_use = dict.fromkeys(names, 1)
                for a in agents:
                    await a.usage("p1", "cores", in_use[a.site], applied[a.site])
                rng = random.Random(7)
                deadline = time.monotonic() + 4
                steps = 0
                pos = dict.fromkeys(names, 0)
                grant = dict.fromkeys(names, 0)  # the number of the grant each region has in force
                while time.monotonic() < deadline:
                    a = rng.choice(agents)
                    # The region applies an assignment it received, in order, but maybe not the newest yet (it
                    # lags): the coordinators must have left room for every grant still in flight.
                    if len(a.history) > pos[a.site]:
                        pos[a.site] = rng.randrange(pos[a.site], len(a.history))
                        target, number = a.history[pos[a.site]].get(key, (-2, 0))
                        if target >= 0:
                            applied[a.site], grant[a.site] = target, number
                    assert sum(applied.values()) <= hard, (steps, applied)
                    if rng.random() < 0.5 and in_use[a.site] < applied[a.site]:
                        in_use[a.site] += 1  # someone creates an instance there
                    await a.usage("p1", "cores", in_use[a.site], applied[a.site], recent=float(in_use[a.site]),
                                  grant=grant[a.site])
                    steps += 1
                    await asyncio.sleep(rng.uniform(0, 0.03))
                assert steps > 50 and sum(in_use.values()) > 3  # it did grow

                async def settled() -> bool:  # every region applies its grant and reports it
                    for a in agents:
                        if a.targets.get(key, -2) >= 0:
                            applied[a.site], grant[a.site] = a.targets[key], a.grants[key]
                        assert sum(applied.values()) <= hard, applied
                        await a.usage("p1", "cores", in_use[a.site], applied[a.site], recent=1.0,
                                      grant=grant[a.site])
                    await asyncio.sleep(0.1)
                    return all(a.targets.get(key) == applied[a.site] for a in agents) and sum(applied.values()) == hard

                await await_for(settled, what="grants adding up to the hard limit")
            finally:
                for a in agents:
                    await a.close()
