"""The border-gateway API over real gRPC and etcd: rules, the global segmentation-id scope, planning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from conftest import await_for, running_coordinator
from isthmus.coordinator.registry import ROOT
from isthmus.core import border as b
from isthmus.v1 import api_pb2_grpc, l2gw_pb2_grpc
from isthmus.v1 import l2gw_pb2 as l2
from isthmus.v1 import types_pb2 as pb

VTEP, VLAN = l2.GATEWAY_DEVICE_TYPE_ROUTER_VTEP, l2.GATEWAY_DEVICE_TYPE_NETWORK_VLAN


async def seed(api: l2gw_pb2_grpc.BorderGatewayServiceStub, sites: api_pb2_grpc.SiteServiceStub) -> dict[str, str]:
    for name in ("s1", "s2", "s3"):
        await sites.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION))
    ids = {}
    for i, name in enumerate(("s1", "s2", "s3")):
        dev = await api.CreateGatewayDevice(l2.GatewayDevice(site=name, name="gw", type=VTEP,
                                                             tunnel_ips=[f"192.0.2.{i + 1}"]))
        ids[name] = dev.id
    vlan = await api.CreateGatewayDevice(l2.GatewayDevice(site="s1", name="tor", type=VLAN, tunnel_ips=["192.0.2.9"]))
    ids["vlan"] = vlan.id
    return ids


def gateway(name: str, *devices: tuple[str, int], project: str = "p1") -> l2.L2Gateway:
    return l2.L2Gateway(name=name, project_id=project,
                        devices=[l2.L2GatewayDeviceRef(device_id=d, segmentation_id=s) for d, s in devices])


async def with_api(etcd: str, tmp: Path, body: Any) -> None:
    async with running_coordinator(etcd, tmp) as coord:
        async with grpc.aio.insecure_channel(coord.address) as ch:
            await body(l2gw_pb2_grpc.BorderGatewayServiceStub(ch), api_pb2_grpc.SiteServiceStub(ch),
                       api_pb2_grpc.ConnectionServiceStub(ch), api_pb2_grpc.EndpointServiceStub(ch), coord)


async def test_validation_table_codes_fields_and_nothing_written(etcd: str, tmp_path: Path) -> None:
    async def body(api: Any, sites: Any, conns: Any, eps: Any, coord: Any) -> None:
        ids = await seed(api, sites)
        gw = await api.CreateL2Gateway(gateway("blue", (ids["s1"], 100), (ids["s2"], 100)))
        await api.CreateL2GatewayConnection(l2.L2GatewayConnection(l2_gateway_id=gw.id, network_id="net-blue"))
        mixed = await api.CreateL2Gateway(gateway("mixed", (ids["s1"], 300), (ids["s3"], 301)))
        await eps.CreateEndpoint(pb.Endpoint(site="s1", name="e", address="192.0.2.101", asn=65001))
        await eps.CreateEndpoint(pb.Endpoint(site="s2", name="e", address="192.0.2.102", asn=65002))
        await eps.CreateEndpoint(pb.Endpoint(site="s3", name="e", address="192.0.2.103", asn=65003))
        await conns.CreateConnection(pb.Connection(name="infra", type=pb.CONNECTION_TYPE_VXLAN,
                                                   a=pb.EndpointRef(site="s1", name="e"),
                                                   b=pb.EndpointRef(site="s2", name="e"),
                                                   vxlan=pb.VxlanParams(vni=5000)))
        named = await api.CreateGatewayDevice(l2.GatewayDevice(site="s3", name="nt", type=VTEP,
                                                               tunnel_ips=["192.0.2.33"],
                                                               management={"segment_bridge": "n{network_id}"}))
        by_network = await api.CreateL2Gateway(gateway("by-network", (named.id, 400)))
        c = grpc.StatusCode
        table: list[tuple[str, Any, grpc.StatusCode, str]] = [
            # Templates: plain {name} only, rendered with the worst case, and with each network id they meet.
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="x", type=VTEP, tunnel_ips=["192.0.2.7"],
                                                     management={"segment_bridge": "{segmentation_id:>999999999}"}),
             c.INVALID_ARGUMENT, "management.segment_bridge: '{segmentation_id:>999999999}' is not one of"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="x", type=VTEP, tunnel_ips=["192.0.2.7"],
                                                     management={"segment_bridge": "b{{segmentation_id}}"}),
             c.INVALID_ARGUMENT, "management.segment_bridge:"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="x", type=VTEP, tunnel_ips=["192.0.2.7"],
                                                     management={"segment_bridge": "br {segmentation_id}"}),
             c.INVALID_ARGUMENT, "management.segment_bridge:"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="x", type=VTEP, tunnel_ips=["127.0.0.1"]),
             c.INVALID_ARGUMENT, "tunnel_ips[0]: 127.0.0.1 is loopback"),
            ("CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=by_network.id, network_id="ab:cd"),
             c.INVALID_ARGUMENT, "network_id: the segment_bridge template of device"),
            ("CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=by_network.id, network_id="n" * 15),
             c.INVALID_ARGUMENT, "network_id: the segment_bridge template of device"),
            ("UpdateGatewayDevice", l2.GatewayDevice(id=ids["s1"], tunnel_ips=["192.0.2.1"],
                                                     management={"segment_bridge": "abcdefgh{network_id}"}),
             c.INVALID_ARGUMENT, "network_id: the segment_bridge template of device"),
            ("CreateL2Gateway", gateway("tab\tname", (ids["s1"], 10)), c.INVALID_ARGUMENT, "name:"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="nope", name="gw", type=VTEP, tunnel_ips=["192.0.2.7"]),
             c.NOT_FOUND, "site:"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="gw", type=VTEP, tunnel_ips=["192.0.2.7"]),
             c.ALREADY_EXISTS, "name:"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="x", type=VTEP), c.INVALID_ARGUMENT,
             "tunnel_ips:"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="x", tunnel_ips=["192.0.2.7"]),
             c.INVALID_ARGUMENT, "type:"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="x", type=VTEP, tunnel_ips=["1.2.3"]),
             c.INVALID_ARGUMENT, "tunnel_ips[0]:"),
            ("CreateGatewayDevice", l2.GatewayDevice(site="s1", name="x", type=VTEP, tunnel_ips=["192.0.2.7"],
                                                     management={"segment_bridge": "bridge-for-{segmentation_id}"}),
             c.INVALID_ARGUMENT, "management.segment_bridge:"),
            ("CreateL2Gateway", gateway("g", ("missing", 10)), c.NOT_FOUND, "devices[0].device_id:"),
            ("CreateL2Gateway", gateway("g", (ids["vlan"], 5000)), c.INVALID_ARGUMENT, "devices[0].segmentation_id:"),
            ("CreateL2Gateway", gateway("g", (ids["s1"], 16777216)), c.INVALID_ARGUMENT,
             "devices[0].segmentation_id:"),
            ("CreateL2Gateway", gateway("g", (ids["s1"], 10), (ids["s1"], 11)), c.INVALID_ARGUMENT,
             "devices[1].segmentation_id: device"),
            ("CreateL2Gateway", gateway("g", (ids["s1"], 0)), c.INVALID_ARGUMENT, "devices[0].segmentation_id:"),
            ("CreateL2Gateway", gateway("g", (ids["s1"], 10), (ids["vlan"], 10)), c.INVALID_ARGUMENT,
             "devices[1].device_id: devices"),
            ("UpdateGatewayDevice", l2.GatewayDevice(id=ids["s1"], type=VLAN, tunnel_ips=["192.0.2.1"]),
             c.INVALID_ARGUMENT, "type:"),
            ("CreateL2Gateway", gateway("g", (ids["s1"], 10), project=""), c.INVALID_ARGUMENT, "project_id:"),
            ("CreateL2Gateway", gateway("", (ids["s1"], 10)), c.INVALID_ARGUMENT, "name:"),
            ("CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id="nope", network_id="n"),
             c.NOT_FOUND, "l2_gateway_id:"),
            ("CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=gw.id), c.INVALID_ARGUMENT,
             "network_id:"),
            ("CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=gw.id, network_id="net-red"),
             c.ALREADY_EXISTS, "segmentation_id: segmentation id 100 is bound to network net-blue"),
            ("CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=gw.id, network_id="n",
                                                                 project_id="p2"), c.INVALID_ARGUMENT, "project_id:"),
            ("CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=mixed.id, network_id="n"),
             c.INVALID_ARGUMENT, "segmentation_id: the devices"),
            ("CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=mixed.id, network_id="n",
                                                                 segmentation_id=5000), c.ALREADY_EXISTS,
             "segmentation_id: 5000 is the VNI of infrastructure connection infra"),
            ("DeleteL2Gateway", l2.DeleteByIdRequest(id=gw.id), c.FAILED_PRECONDITION, "has connections"),
            ("DeleteGatewayDevice", l2.DeleteByIdRequest(id=ids["s1"]), c.FAILED_PRECONDITION, "used by l2-gateways"),
            ("UpdateL2Gateway", l2.L2Gateway(id=gw.id, devices=[l2.L2GatewayDeviceRef(device_id=ids["s1"],
                                                                                       segmentation_id=200)]),
             c.FAILED_PRECONDITION, "uses segmentation id 100"),
            ("GetL2GatewayConnection", l2.GetByIdRequest(id="nope"), c.NOT_FOUND, "nope"),
        ]
        store = coord.store
        before, rev = await store.get_prefix(ROOT + "config/")
        idx_before, _ = await store.get_prefix(ROOT + "index/")
        failures = []
        for rpc, req, code, text in table:
            try:
                await getattr(api, rpc)(req)
                failures.append(f"{rpc} succeeded")
            except grpc.aio.AioRpcError as exc:
                if exc.code() != code or text not in (exc.details() or ""):
                    failures.append(f"{rpc}: {exc.code().name} {exc.details()!r}, want {code.name} {text!r}")
        # An infrastructure VNI cannot take a bound segmentation id either.
        try:
            await conns.CreateConnection(pb.Connection(name="clash", type=pb.CONNECTION_TYPE_VXLAN,
                                                       a=pb.EndpointRef(site="s3", name="e"),
                                                       b=pb.EndpointRef(site="s1", name="e"),
                                                       vxlan=pb.VxlanParams(vni=100)))
            failures.append("infra VNI 100 accepted")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != c.ALREADY_EXISTS or "vxlan.vni:" not in (exc.details() or ""):
                failures.append(f"clash: {exc.details()}")
        assert not failures, "\n".join(failures)
        after, _ = await store.get_prefix(ROOT + "config/")
        idx_after, _ = await store.get_prefix(ROOT + "index/")
        assert after == before and idx_after == idx_before

    await with_api(etcd, tmp_path, body)


async def test_segment_binding_is_shared_and_released(etcd: str, tmp_path: Path) -> None:
    async def body(api: Any, sites: Any, conns: Any, eps: Any, coord: Any) -> None:
        ids = await seed(api, sites)
        g1 = await api.CreateL2Gateway(gateway("g1", (ids["s1"], 100), (ids["s2"], 100)))
        g2 = await api.CreateL2Gateway(gateway("g2", (ids["s2"], 100), (ids["s3"], 100)))
        c1 = await api.CreateL2GatewayConnection(l2.L2GatewayConnection(l2_gateway_id=g1.id, network_id="blue"))
        c2 = await api.CreateL2GatewayConnection(l2.L2GatewayConnection(l2_gateway_id=g2.id, network_id="blue"))
        assert c1.segmentation_id == c2.segmentation_id == 100 and c1.project_id == "p1"
        await api.DeleteL2GatewayConnection(l2.DeleteByIdRequest(id=c1.id))
        # Still bound (c2 holds it): another network cannot take 100.
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await api.CreateL2GatewayConnection(l2.L2GatewayConnection(l2_gateway_id=g1.id, network_id="red"))
        assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
        await api.DeleteL2GatewayConnection(l2.DeleteByIdRequest(id=c2.id))
        red = await api.CreateL2GatewayConnection(l2.L2GatewayConnection(l2_gateway_id=g1.id, network_id="red"))
        assert red.segmentation_id == 100
        # Adding a device with the connection's id is fine; the planner gives the new site its tunnels.
        await api.UpdateL2Gateway(l2.L2Gateway(id=g1.id, name="g1", devices=[
            l2.L2GatewayDeviceRef(device_id=ids[s], segmentation_id=100) for s in ("s1", "s2", "s3")]))
        planner = coord.planner
        await await_for(lambda: len(planner.desired("s3")[0]) == 2, 10, "s3 to get tunnels to s1 and s2")
        tunnels = planner.desired("s3")[0]
        assert {p.remote.site for p in tunnels.values()} == {"s1", "s2"}
        assert all(p.vxlan.vni == 100 and p.local.properties["vxlan.bridge"] == "brs100" for p in tunnels.values())
        status = await api.GetL2GatewayConnectionStatus(l2.GetByIdRequest(id=red.id))
        assert [s.site for s in status.sites] == ["s1", "s2", "s3"]
        assert list(status.missing_sites) == ["s1", "s2", "s3"]  # no agents: no tunnel is up anywhere
        assert all(len(s.tunnels) == 2 and not s.agent_connected for s in status.sites)

    await with_api(etcd, tmp_path, body)


def test_tunnels_of_connections_with_similar_ids_do_not_collide() -> None:
    devs = {d: b.GatewayDevice(d, s, "gw", b.DeviceType.ROUTER_VTEP, (ip,))
            for d, s, ip in (("a", "s1", "192.0.2.1"), ("b", "s2", "192.0.2.2"))}
    gws = {"g1": b.L2Gateway("g1", "g1", "p", (b.DeviceRef("a", 100), b.DeviceRef("b", 100))),
           "g2": b.L2Gateway("g2", "g2", "p", (b.DeviceRef("a", 300), b.DeviceRef("b", 300)))}
    conns = [b.L2GatewayConnection("tenant-01", "g1", "blue", 100, "p"),
             b.L2GatewayConnection("tenant-02", "g2", "red", 300, "p")]
    tunnels = b.plan_tunnels("s1", devs, gws, conns)
    assert sorted(p.vxlan.vni for p in tunnels.values() if p.vxlan) == [100, 300]


def test_plan_tunnels_mesh_and_bridge_template() -> None:
    devs = {
        "a": b.GatewayDevice("a", "s1", "gw", b.DeviceType.ROUTER_VTEP, ("192.0.2.1",),
                             {"segment_bridge": "t{network_id}"}),
        "b": b.GatewayDevice("b", "s2", "gw", b.DeviceType.ROUTER_VTEP, ("192.0.2.2",)),
        "c": b.GatewayDevice("c", "s3", "gw", b.DeviceType.HW_VTEP, ("192.0.2.3",)),
    }
    gw = b.L2Gateway("g", "g", "p", tuple(b.DeviceRef(d, 42) for d in devs))
    conn = b.L2GatewayConnection("0123456789", "g", "blue", 42, "p")
    s1 = b.plan_tunnels("s1", devs, {"g": gw}, [conn])
    assert sorted(p.remote.address for p in s1.values()) == ["192.0.2.2", "192.0.2.3"]
    assert {p.local.properties["vxlan.bridge"] for p in s1.values()} == {"tblue"}
    assert all(p.vxlan is not None and p.vxlan.vni == 42 and p.local.address == "192.0.2.1" for p in s1.values())
    assert b.plan_tunnels("s4", devs, {"g": gw}, [conn]) == {}


async def test_owner_is_kept_fixed_at_creation_and_checked(etcd: str, tmp_path: Path) -> None:
    async def body(api: Any, sites: Any, conns: Any, eps: Any, coord: Any) -> None:
        ids = await seed(api, sites)
        made = gateway("g1", (ids["s1"], 100), (ids["s2"], 100))
        made.id, made.owner = "0b6c9a52-8f8e-4f55-9d7c-1f3c1f1d2a10", "neutron"
        g1 = await api.CreateL2Gateway(made)
        assert g1.id == made.id and g1.owner == "neutron"
        # An update through isthmus' own API keeps the owner (it is fixed at creation).
        g1 = await api.UpdateL2Gateway(l2.L2Gateway(id=g1.id, name="renamed", devices=made.devices))
        assert g1.owner == "neutron" and (await api.GetL2Gateway(l2.GetByIdRequest(id=g1.id))).owner == "neutron"
        c = await api.CreateL2GatewayConnection(l2.L2GatewayConnection(l2_gateway_id=g1.id, network_id="blue",
                                                                       owner="neutron"))
        assert (await api.GetL2GatewayConnection(l2.GetByIdRequest(id=c.id))).owner == "neutron"
        bad = gateway("g2", (ids["s3"], 200))
        bad.owner = "Neutron Server"
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await api.CreateL2Gateway(bad)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.value.details().startswith("owner: ")
        assert [g.name for g in (await api.ListL2Gateways(l2.ListL2GatewaysRequest())).l2_gateways] == ["renamed"]

    await with_api(etcd, tmp_path, body)
