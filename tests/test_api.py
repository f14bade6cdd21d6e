"""The public API over real gRPC against a real etcd: CRUD, bad inputs, versions, concurrency, watch."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from conftest import running_coordinator
from isthmus.coordinator.registry import ROOT
from isthmus.coordinator.store import Delete, Store
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc
from isthmus.v1 import types_pb2 as pb

REGION, CELL = pb.SITE_KIND_REGION, pb.SITE_KIND_CELL
REMOTE = pb.ENDPOINT_ROLE_REMOTE
BGP, VXLAN = pb.CONNECTION_TYPE_BGP, pb.CONNECTION_TYPE_VXLAN


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.sites = api_pb2_grpc.SiteServiceStub(channel)
        self.endpoints = api_pb2_grpc.EndpointServiceStub(channel)
        self.connections = api_pb2_grpc.ConnectionServiceStub(channel)
        self.status = api_pb2_grpc.StatusServiceStub(channel)


def ref(text: str) -> pb.EndpointRef:
    site, name = text.split("/")
    return pb.EndpointRef(site=site, name=name)


def bgp(name: str, a: str, b: str, **kw: Any) -> pb.Connection:
    return pb.Connection(name=name, a=ref(a), b=ref(b), type=BGP, **kw)


def vxlan(name: str, a: str, b: str, vni: int, **kw: Any) -> pb.Connection:
    return pb.Connection(name=name, a=ref(a), b=ref(b), type=VXLAN, vxlan=pb.VxlanParams(vni=vni, **kw))


async def seed(c: Client) -> None:
    """Three regions, a cell, local and remote endpoints, one BGP and one VXLAN connection."""
    for name in ("r1", "r2", "r3"):
        await c.sites.CreateSite(pb.Site(name=name, kind=REGION))
    await c.sites.CreateSite(pb.Site(name="c1", kind=CELL, parent="r2"))
    await c.sites.CreateSite(pb.Site(name="c3", kind=CELL, parent="r3"))
    for site, addr, asn in (("r1", "192.0.2.1", 65001), ("r2", "192.0.2.2", 65002), ("c1", "192.0.2.3", 65003)):
        await c.endpoints.CreateEndpoint(pb.Endpoint(site=site, name="gw", address=addr, asn=asn))
    await c.endpoints.CreateEndpoint(pb.Endpoint(site="r2", name="v6", address="2001:db8::2", asn=65002))
    await c.endpoints.CreateEndpoint(pb.Endpoint(site="r1", name="dc", address="198.51.100.1", asn=64999, role=REMOTE))
    await c.endpoints.CreateEndpoint(pb.Endpoint(site="r2", name="dc", address="198.51.100.2", asn=64998, role=REMOTE))
    await c.connections.CreateConnection(bgp("r1-r2", "r1/gw", "r2/gw"))
    await c.connections.CreateConnection(vxlan("r1-r2-vx", "r1/gw", "r2/gw", 100))


@pytest.fixture
def env(etcd: str, tmp_path: Path) -> tuple[str, Path]:
    return etcd, tmp_path


async def with_api(env: tuple[str, Path], body: Callable[[Client, Store], Awaitable[None]]) -> None:
    etcd, tmp = env
    async with running_coordinator(etcd, tmp) as coord:
        async with grpc.aio.insecure_channel(coord.address) as ch:
            assert coord.store is not None
            await body(Client(ch), coord.store)


async def test_crud_round_trip(env: tuple[str, Path]) -> None:
    async def body(c: Client, store: Store) -> None:
        await seed(c)
        site = await c.sites.GetSite(api.GetSiteRequest(name="c1"))
        assert site.kind == CELL and site.parent == "r2" and site.version > 0
        sites = await c.sites.ListSites(api.ListSitesRequest())
        assert [s.name for s in sites.sites] == ["c1", "c3", "r1", "r2", "r3"]
        eps = await c.endpoints.ListEndpoints(api.ListEndpointsRequest(site="r2"))
        assert sorted(e.name for e in eps.endpoints) == ["dc", "gw", "v6"]
        conn = await c.connections.GetConnection(api.GetConnectionRequest(name="r1-r2"))
        assert conn.bgp.hold_time == 90 and list(conn.bgp.address_families) == ["ipv4-unicast"]
        vx = await c.connections.GetConnection(api.GetConnectionRequest(name="r1-r2-vx"))
        assert (vx.vxlan.vni, vx.vxlan.udp_port, vx.vxlan.mtu) == (100, 4789, 1450)
        by_site = await c.connections.ListConnections(api.ListConnectionsRequest(site="c1"))
        assert list(by_site.connections) == []

        updated = await c.connections.UpdateConnection(
            pb.Connection(name="r1-r2", admin_state=pb.ADMIN_STATE_DOWN,
                          bgp=pb.BgpParams(hold_time=30), version=conn.version))
        assert updated.admin_state == pb.ADMIN_STATE_DOWN and updated.bgp.hold_time == 30
        assert updated.version > conn.version and updated.type == BGP

        # A VNI freed by an update can be taken by another connection.
        await c.connections.UpdateConnection(pb.Connection(name="r1-r2-vx", vxlan=pb.VxlanParams(vni=101)))
        await c.connections.CreateConnection(vxlan("c1-r1-vx", "c1/gw", "r1/gw", 100))

        ep = await c.endpoints.UpdateEndpoint(
            pb.Endpoint(site="r1", name="gw", address="192.0.2.11", asn=65011, properties={"rack": "a1"}))
        assert ep.address == "192.0.2.11" and ep.router_id == "192.0.2.11" and ep.role == pb.ENDPOINT_ROLE_LOCAL

        await c.connections.DeleteConnection(api.DeleteConnectionRequest(name="c1-r1-vx"))
        await c.endpoints.DeleteEndpoint(api.DeleteEndpointRequest(site="c1", name="gw"))
        await c.sites.DeleteSite(api.DeleteSiteRequest(name="c1"))
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await c.sites.GetSite(api.GetSiteRequest(name="c1"))
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND
        # Deleting the connection freed its index keys: only r1-r2-vx's VNI is still claimed.
        kvs, _ = await store.get_prefix(ROOT + "index/vni/")
        assert sorted(kv.key.rsplit("/", 1)[1] for kv in kvs) == ["101"]
        kvs, _ = await store.get_prefix(ROOT + "refs/endpoint/c1/")
        assert kvs == []

    await with_api(env, body)


# (rpc name, request factory, expected code, text the message must contain)
BAD_INPUTS: list[tuple[str, str, Any, grpc.StatusCode, str]] = [
    ("sites", "CreateSite", pb.Site(name="Bad_Name", kind=REGION), grpc.StatusCode.INVALID_ARGUMENT, "name:"),
    ("sites", "CreateSite", pb.Site(name="r9"), grpc.StatusCode.INVALID_ARGUMENT, "kind:"),
    ("sites", "CreateSite", pb.Site(name="c9", kind=CELL), grpc.StatusCode.INVALID_ARGUMENT, "parent:"),
    ("sites", "CreateSite", pb.Site(name="c9", kind=CELL, parent="r9"), grpc.StatusCode.NOT_FOUND, "parent:"),
    ("sites", "CreateSite", pb.Site(name="c9", kind=CELL, parent="c1"), grpc.StatusCode.INVALID_ARGUMENT, "parent:"),
    ("sites", "CreateSite", pb.Site(name="r9", kind=REGION, parent="r1"), grpc.StatusCode.INVALID_ARGUMENT, "parent:"),
    ("sites", "CreateSite", pb.Site(name="r1", kind=REGION), grpc.StatusCode.ALREADY_EXISTS, "name:"),
    ("sites", "CreateSite", pb.Site(name="r9", kind=REGION, labels={"bad key": "x"}),
     grpc.StatusCode.INVALID_ARGUMENT, "labels:"),
    ("sites", "UpdateSite", pb.Site(name="c1", kind=REGION), grpc.StatusCode.INVALID_ARGUMENT, "kind:"),
    ("sites", "UpdateSite", pb.Site(name="r1", version=1), grpc.StatusCode.ABORTED, "version"),
    ("sites", "DeleteSite", api.DeleteSiteRequest(name="r1"), grpc.StatusCode.FAILED_PRECONDITION, "endpoints"),
    ("sites", "DeleteSite", api.DeleteSiteRequest(name="r3"), grpc.StatusCode.FAILED_PRECONDITION, "cells: c3"),
    ("sites", "DeleteSite", api.DeleteSiteRequest(name="r9"), grpc.StatusCode.NOT_FOUND, "r9"),
    ("endpoints", "CreateEndpoint", pb.Endpoint(site="r9", name="gw", address="192.0.2.9", asn=1),
     grpc.StatusCode.NOT_FOUND, "site:"),
    ("endpoints", "CreateEndpoint", pb.Endpoint(site="r1", name="x", address="300.1.1.1", asn=1),
     grpc.StatusCode.INVALID_ARGUMENT, "address:"),
    ("endpoints", "CreateEndpoint", pb.Endpoint(site="r1", name="x", asn=1),
     grpc.StatusCode.INVALID_ARGUMENT, "address:"),
    ("endpoints", "CreateEndpoint", pb.Endpoint(site="r1", name="x", address="192.0.2.9", asn=0),
     grpc.StatusCode.INVALID_ARGUMENT, "asn:"),
    ("endpoints", "CreateEndpoint", pb.Endpoint(site="r1", name="x", address="192.0.2.9", asn=23456),
     grpc.StatusCode.INVALID_ARGUMENT, "asn:"),
    ("endpoints", "CreateEndpoint", pb.Endpoint(site="r1", name="x", address="192.0.2.9", asn=1, router_id="r1"),
     grpc.StatusCode.INVALID_ARGUMENT, "router_id:"),
    ("endpoints", "CreateEndpoint", pb.Endpoint(site="r1", name="gw", address="192.0.2.9", asn=1),
     grpc.StatusCode.ALREADY_EXISTS, "name:"),
    ("endpoints", "UpdateEndpoint", pb.Endpoint(site="r1", name="gw", address="192.0.2.1", asn=1, role=REMOTE),
     grpc.StatusCode.INVALID_ARGUMENT, "role:"),
    ("endpoints", "UpdateEndpoint", pb.Endpoint(site="r1", name="gw", address="2001:db8::1", asn=1),
     grpc.StatusCode.INVALID_ARGUMENT, "address:"),
    ("endpoints", "DeleteEndpoint", api.DeleteEndpointRequest(site="r1", name="gw"),
     grpc.StatusCode.FAILED_PRECONDITION, "r1-r2"),
    ("connections", "CreateConnection", bgp("x", "r1/nope", "r2/gw"), grpc.StatusCode.NOT_FOUND, "a:"),
    ("connections", "CreateConnection", bgp("x", "r1/gw", "r2/nope"), grpc.StatusCode.NOT_FOUND, "b:"),
    ("connections", "CreateConnection", bgp("x", "r2/gw", "r2/v6"), grpc.StatusCode.INVALID_ARGUMENT, "b.site:"),
    ("connections", "CreateConnection", bgp("x", "r1/dc", "r2/dc"), grpc.StatusCode.INVALID_ARGUMENT, "REMOTE"),
    ("connections", "CreateConnection", bgp("x", "r2/gw", "r1/gw"), grpc.StatusCode.ALREADY_EXISTS, "r1-r2"),
    ("connections", "CreateConnection", vxlan("x", "c1/gw", "r1/gw", 100), grpc.StatusCode.ALREADY_EXISTS,
     "vxlan.vni:"),
    ("connections", "CreateConnection", vxlan("x", "c1/gw", "r1/gw", 0), grpc.StatusCode.INVALID_ARGUMENT,
     "vxlan.vni:"),
    ("connections", "CreateConnection", vxlan("x", "c1/gw", "r1/gw", 16777216), grpc.StatusCode.INVALID_ARGUMENT,
     "vxlan.vni:"),
    ("connections", "CreateConnection", vxlan("x", "c1/gw", "r1/gw", 7, mtu=100), grpc.StatusCode.INVALID_ARGUMENT,
     "vxlan.mtu:"),
    ("connections", "CreateConnection", bgp("x", "c1/gw", "r1/gw", bgp=pb.BgpParams(hold_time=2)),
     grpc.StatusCode.INVALID_ARGUMENT, "bgp.hold_time:"),
    ("connections", "CreateConnection", bgp("x", "c1/gw", "r1/gw", bgp=pb.BgpParams(password_ref="s3cret")),
     grpc.StatusCode.INVALID_ARGUMENT, "bgp.password_ref:"),
    ("connections", "CreateConnection", bgp("x", "c1/gw", "r1/gw", bgp=pb.BgpParams(address_families=["x"])),
     grpc.StatusCode.INVALID_ARGUMENT, "bgp.address_families:"),
    ("connections", "CreateConnection", pb.Connection(name="x", a=ref("c1/gw"), b=ref("r1/gw")),
     grpc.StatusCode.INVALID_ARGUMENT, "type:"),
    ("connections", "CreateConnection", bgp("x", "c1/gw", "r1/gw", vxlan=pb.VxlanParams(vni=5)),
     grpc.StatusCode.INVALID_ARGUMENT, "vxlan:"),
    ("connections", "CreateConnection", bgp("x", "r1/gw", "r2/v6"), grpc.StatusCode.INVALID_ARGUMENT, "IPv"),
    ("connections", "CreateConnection", bgp("r1-r2", "c1/gw", "r1/gw"), grpc.StatusCode.ALREADY_EXISTS, "name:"),
    ("connections", "UpdateConnection", pb.Connection(name="r1-r2", type=VXLAN, vxlan=pb.VxlanParams(vni=9)),
     grpc.StatusCode.INVALID_ARGUMENT, "type:"),
    ("connections", "UpdateConnection", pb.Connection(name="r1-r2", a=ref("c1/gw")),
     grpc.StatusCode.INVALID_ARGUMENT, "a:"),
    ("connections", "UpdateConnection", pb.Connection(name="r1-r2-vx", vxlan=pb.VxlanParams(vni=100), version=2),
     grpc.StatusCode.ABORTED, "version"),
    ("connections", "DeleteConnection", api.DeleteConnectionRequest(name="r1-r2", version=3),
     grpc.StatusCode.ABORTED, "version"),
    ("connections", "GetConnection", api.GetConnectionRequest(name="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
]


async def test_bad_inputs_give_the_right_code_name_the_field_and_write_nothing(env: tuple[str, Path]) -> None:
    etcd, tmp = env
    async with running_coordinator(etcd, tmp) as coord, grpc.aio.insecure_channel(coord.address) as ch:
        c, store, planner = Client(ch), coord.store, coord.planner
        assert store is not None and planner is not None
        await seed(c)
        # After the seed's writes the planner records each site's desired revision (desired/{site}): let it.
        config, _ = await store.get_prefix(ROOT + "config/")
        assert await planner.wait_for_revision(max(kv.mod_revision for kv in config), 10, reconciled=True)
        before, rev_before = await store.get_prefix(ROOT)
        failures = []
        for service, rpc, request, code, text in BAD_INPUTS:
            try:
                await getattr(getattr(c, service), rpc)(request)
                failures.append(f"{rpc}({request!r}) succeeded")
                continue
            except grpc.aio.AioRpcError as exc:
                if exc.code() != code or text not in (exc.details() or ""):
                    failures.append(f"{rpc}: got {exc.code().name} {exc.details()!r}, want {code.name} with {text!r}")
        after, rev_after = await store.get_prefix(ROOT)
        assert not failures, "\n".join(failures)
        assert rev_after == rev_before, "a rejected request wrote to etcd"
        assert after == before


async def test_concurrent_updates_with_one_version_exactly_one_wins(env: tuple[str, Path]) -> None:
    async def body(c: Client, store: Store) -> None:
        await c.sites.CreateSite(pb.Site(name="r1", kind=REGION))
        site = await c.sites.GetSite(api.GetSiteRequest(name="r1"))

        async def update(i: int) -> str:
            try:
                await c.sites.UpdateSite(pb.Site(name="r1", labels={"writer": str(i)}, version=site.version))
                return f"ok:{i}"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

        results = await asyncio.gather(*(update(i) for i in range(20)))
        winners = [r for r in results if r.startswith("ok:")]
        assert len(winners) == 1, results
        assert results.count("ABORTED") == 19, results
        final = await c.sites.GetSite(api.GetSiteRequest(name="r1"))
        assert final.labels["writer"] == winners[0][3:]

    await with_api(env, body)


async def test_concurrent_read_modify_write_loses_no_update(env: tuple[str, Path]) -> None:
    async def body(c: Client, store: Store) -> None:
        await c.sites.CreateSite(pb.Site(name="r1", kind=REGION))

        async def add_label(i: int) -> int:
            aborted = 0
            while True:
                cur = await c.sites.GetSite(api.GetSiteRequest(name="r1"))
                labels = dict(cur.labels)
                labels[f"k{i}"] = "v"
                try:
                    await c.sites.UpdateSite(pb.Site(name="r1", labels=labels, version=cur.version))
                    return aborted
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.ABORTED
                    aborted += 1

        retries = await asyncio.gather(*(add_label(i) for i in range(20)))
        final = await c.sites.GetSite(api.GetSiteRequest(name="r1"))
        assert set(final.labels) == {f"k{i}" for i in range(20)}
        assert sum(retries) > 0  # the writers did collide, and every collision was reported

    await with_api(env, body)


async def test_concurrent_creates_claiming_one_vni_exactly_one_wins(env: tuple[str, Path]) -> None:
    async def body(c: Client, store: Store) -> None:
        await seed(c)
        for i in range(10):
            await c.sites.CreateSite(pb.Site(name=f"s{i}", kind=REGION))
            await c.endpoints.CreateEndpoint(pb.Endpoint(site=f"s{i}", name="gw", address=f"192.0.2.{100 + i}",
                                                         asn=65100 + i))

        async def create(i: int) -> str:
            try:
                await c.connections.CreateConnection(vxlan(f"v{i}", f"s{i}/gw", "r1/gw", 5000))
                return "ok"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

        results = await asyncio.gather(*(create(i) for i in range(10)))
        assert results.count("ok") == 1 and results.count("ALREADY_EXISTS") == 9, results
        owner, _ = await store.get_prefix(ROOT + "index/vni/5000")
        assert len(owner) == 1

    await with_api(env, body)


async def test_concurrent_creates_at_a_sites_budget_never_pass_it(env: tuple[str, Path],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Near its budget a site's connections are counted in etcd and each create compares that none was added
    since: however many creates race, the site ends with its budget and the rest are refused."""
    from isthmus.core import checks
    monkeypatch.setattr(checks, "MAX_CONNECTIONS_PER_SITE", 3)

    async def body(c: Client, store: Store) -> None:
        await c.sites.CreateSite(pb.Site(name="hub", kind=REGION))
        await c.endpoints.CreateEndpoint(pb.Endpoint(site="hub", name="gw", address="192.0.2.1", asn=65001))
        for i in range(8):
            await c.sites.CreateSite(pb.Site(name=f"s{i}", kind=REGION))
            await c.endpoints.CreateEndpoint(pb.Endpoint(site=f"s{i}", name="gw", address=f"192.0.2.{10 + i}",
                                                         asn=65010 + i, role=pb.ENDPOINT_ROLE_REMOTE))

        async def create(i: int) -> str:
            try:
                await c.connections.CreateConnection(bgp(f"hub-s{i}", "hub/gw", f"s{i}/gw"))
                return "ok"
            except grpc.aio.AioRpcError as exc:
                return exc.code().name

        results = await asyncio.gather(*(create(i) for i in range(8)))
        assert results.count("ok") == 3 and results.count("INVALID_ARGUMENT") == 5, results
        assert await store.count(ROOT + "refs/endpoint/hub/") == 3
        assert await store.count(ROOT + "config/connections/") == 3

    await with_api(env, body)


async def test_a_create_validated_on_the_cache_still_meets_what_only_etcd_holds(env: tuple[str, Path]) -> None:
    """Creates validate against the planner's view and compare what they relied on: keys the view does not
    hold (index keys written by another coordinator, say) fail the compare, and the read path names them."""
    etcd, tmp = env
    async with running_coordinator(etcd, tmp) as coord:
        async with grpc.aio.insecure_channel(coord.address) as ch:
            c, store, registry = Client(ch), coord.store, coord.registry
            assert store is not None and registry is not None
            await seed(c)
            hits = registry.cache_hits
            await c.connections.CreateConnection(bgp("fresh", "r1/gw", "c1/gw"))
            assert registry.cache_hits == hits + 1, "a plain create is validated on the cache, with no read"
            await store.put(ROOT + "index/vni/7777", b"elsewhere")
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await c.connections.CreateConnection(vxlan("v7777", "r2/gw", "c1/gw", 7777))
            assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert exc.value.details() == "vxlan.vni: VNI 7777 is used by connection elsewhere"
            assert await store.get(ROOT + "config/connections/v7777") is None
            # The view is behind etcd: an endpoint deleted behind its back is not used.
            await store.txn([], [Delete(ROOT + "config/endpoints/c1/gw")])
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await c.connections.CreateConnection(bgp("late", "r2/gw", "c1/gw"))
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
            assert await store.get(ROOT + "config/connections/late") is None


async def test_watch_streams_changes_filtered_by_site(env: tuple[str, Path]) -> None:
    async def body(c: Client, store: Store) -> None:
        await seed(c)
        _, seeded = await store.get_prefix(ROOT)
        # From the revision after the seed: the writes below are seen however late the watch registers.
        call = c.status.Watch(api.WatchRequest(kinds=["connection", "endpoint"], site="c1", start_revision=seeded + 1))
        events: list[api.WatchEvent] = []

        async def collect() -> None:
            async for ev in call:
                events.append(ev)
                if len(events) == 3:
                    return

        task = asyncio.create_task(collect())
        await c.connections.CreateConnection(bgp("r1-c1", "r1/gw", "c1/gw"))
        await c.endpoints.CreateEndpoint(pb.Endpoint(site="r3", name="gw", address="192.0.2.30", asn=65030))
        await c.connections.DeleteConnection(api.DeleteConnectionRequest(name="r1-c1"))
        await c.endpoints.UpdateEndpoint(pb.Endpoint(site="c1", name="gw", address="192.0.2.33", asn=65003))
        await asyncio.wait_for(task, 10)
        call.cancel()
        got = [(api.EventType.Name(e.type), e.WhichOneof("object")) for e in events]
        assert got == [("PUT", "connection"), ("DELETE", "connection"), ("PUT", "endpoint")]
        assert events[1].connection.name == "r1-c1" and events[1].connection.b.site == "c1"
        assert events[2].endpoint.address == "192.0.2.33"
        assert events[0].revision < events[1].revision < events[2].revision

    await with_api(env, body)


async def test_watch_rejects_unknown_kinds(env: tuple[str, Path]) -> None:
    async def body(c: Client, store: Store) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            async for _ in c.status.Watch(api.WatchRequest(kinds=["sites"])):
                pass
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "kinds" in (exc.value.details() or "")

    await with_api(env, body)


async def test_lists_are_paged(env: tuple[str, Path]) -> None:
    async def body(c: Client, store: Store) -> None:
        for i in range(5):
            await c.sites.CreateSite(pb.Site(name=f"s{i}", kind=REGION))
        seen, token, pages = [], "", 0
        while True:
            resp = await c.sites.ListSites(api.ListSitesRequest(page_size=2, page_token=token))
            seen += [s.name for s in resp.sites]
            pages += 1
            token = resp.next_page_token
            if not token:
                break
        assert seen == [f"s{i}" for i in range(5)] and pages == 3
        for req, field in ((api.ListSitesRequest(page_size=1001), "page_size"),
                           (api.ListSitesRequest(page_token="%%%"), "page_token")):
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await c.sites.ListSites(req)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in (exc.value.details() or "")

    await with_api(env, body)


async def test_a_repeated_request_id_gets_the_first_answer(env: tuple[str, Path]) -> None:
    """A write repeated with its request id (a client retrying after a lost answer) is not done twice."""

    def rid(text: str) -> list[tuple[str, str]]:
        return [("x-isthmus-request-id", f"req-{text}-0001")]

    async def body(c: Client, store: Store) -> None:
        first = await c.sites.CreateSite(pb.Site(name="r1", kind=REGION), metadata=rid("a"))
        again = await c.sites.CreateSite(pb.Site(name="r1", kind=REGION), metadata=rid("a"))
        assert again == first
        with pytest.raises(grpc.aio.AioRpcError) as exc:  # another request (no id, or another id): name taken
            await c.sites.CreateSite(pb.Site(name="r1", kind=REGION), metadata=rid("b"))
        assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
        # The answer is the object as it is now.
        updated = await c.sites.UpdateSite(pb.Site(name="r1", description="changed"), metadata=rid("c"))
        assert (await c.sites.CreateSite(pb.Site(name="r1", kind=REGION), metadata=rid("a"))) == updated
        assert (await c.sites.UpdateSite(pb.Site(name="r1", description="changed"), metadata=rid("c"))) == updated

        await c.endpoints.CreateEndpoint(pb.Endpoint(site="r1", name="gw", address="192.0.2.1", asn=65001))
        deleted = await c.endpoints.DeleteEndpoint(api.DeleteEndpointRequest(site="r1", name="gw", version=0),
                                                   metadata=rid("d"))
        repeated = await c.endpoints.DeleteEndpoint(api.DeleteEndpointRequest(site="r1", name="gw"),
                                                    metadata=rid("d"))
        assert repeated.revision == deleted.revision

        # The id of one request cannot answer another, and a malformed id is refused; nothing is written.
        before = [await store.get_prefix(ROOT + part) for part in ("config/", "requests/")]
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await c.endpoints.CreateEndpoint(pb.Endpoint(site="r1", name="x", address="192.0.2.9", asn=65009),
                                             metadata=rid("a"))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "was used for another request (SiteService.CreateSite)" in (exc.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await c.sites.CreateSite(pb.Site(name="r2", kind=REGION), metadata=[("x-isthmus-request-id", "bad id!")])
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (exc.value.details() or "").startswith("x-isthmus-request-id: must be")
        assert [kvs for kvs, _ in [await store.get_prefix(ROOT + p) for p in ("config/", "requests/")]] == [
            kvs for kvs, _ in before]
        records = before[1][0]
        assert len(records) == 3 and all(kv.lease for kv in records)  # a, c, d

    await with_api(env, body)


async def test_a_site_has_a_budget_of_connections(env: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """What a site's agent reports about its connections must fit in one message and one etcd value: past the
    budget (3 here, 5000 by default) a connection with a local end at the site is refused naming that end."""
    from isthmus.core import checks
    monkeypatch.setattr(checks, "MAX_CONNECTIONS_PER_SITE", 3)

    async def body(c: Client, store: Store) -> None:
        await c.sites.CreateSite(pb.Site(name="hub", kind=REGION))
        await c.endpoints.CreateEndpoint(pb.Endpoint(site="hub", name="gw", address="192.0.2.1", asn=65001))
        for i in range(5):
            await c.sites.CreateSite(pb.Site(name=f"s{i}", kind=REGION))
            await c.endpoints.CreateEndpoint(pb.Endpoint(site=f"s{i}", name="gw", address=f"192.0.2.{10 + i}",
                                                         asn=65010 + i))
        for i in range(3):
            await c.connections.CreateConnection(bgp(f"hub-s{i}", "hub/gw", f"s{i}/gw"))
        before, _ = await store.get_prefix(ROOT + "config/")
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await c.connections.CreateConnection(bgp("hub-s3", "s3/gw", "hub/gw"))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert exc.value.details() == "b: site hub has 3 connections; the budget is 3 per site"
        assert (await store.get_prefix(ROOT + "config/"))[0] == before
        # Sites below the budget are not held back by a full one.
        await c.connections.CreateConnection(bgp("s3-s4", "s3/gw", "s4/gw"))

    await with_api(env, body)


async def test_a_writes_audit_record_is_committed_in_the_writes_own_transaction(env: tuple[str, Path]) -> None:
    """Audit and write cannot part: the record of an allowed write has the write's revision; a refused write
    leaves no record of an allowed one."""
    import json

    async def body(c: Client, store: Store) -> None:
        site = await c.sites.CreateSite(pb.Site(name="r9", kind=REGION))
        ep = await c.endpoints.CreateEndpoint(pb.Endpoint(site="r9", name="gw", address="192.0.2.9", asn=65009))
        with pytest.raises(grpc.aio.AioRpcError):
            await c.sites.CreateSite(pb.Site(name="r9", kind=REGION))
        audit, _ = await store.get_prefix(ROOT + "audit/")
        allowed = [(json.loads(kv.value)["method"].rsplit("/", 1)[1], kv.mod_revision) for kv in audit
                   if json.loads(kv.value)["allowed"]]
        assert allowed == [("CreateSite", site.version), ("CreateEndpoint", ep.version)], allowed

    await with_api(env, body)
