"""Property-based abuse of every public create call: random and boundary values never crash the
coordinator, never write a partial object, and always answer with a documented status code."""

from __future__ import annotations

import grpc
import pytest
from aetcd import rpc as etcd_rpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.v1 import api_pb2_grpc, l2gw_pb2_grpc
from isthmus.v1 import l2gw_pb2 as l2
from isthmus.v1 import types_pb2 as pb

DOCUMENTED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED}

# Names: mostly plausible, sometimes hostile (unicode, separators, huge, empty).
names = st.one_of(st.sampled_from(["r1", "r2", "gw", "a-b", "x" * 63]), st.text(max_size=80),
                  st.from_regex(r"[a-z0-9-]{0,70}", fullmatch=True))
u32 = st.one_of(st.sampled_from([0, 1, 23456, 65535, 4094, 4095, 16777215, 16777216, 2**32 - 1]),
                st.integers(0, 2**32 - 1))
addresses = st.one_of(st.sampled_from(["192.0.2.1", "2001:db8::1", "0.0.0.0", "224.0.0.1", "::", "", "1.2.3",
                                       "192.0.2.1/24", "fe80::1%eth0"]),
                      st.ip_addresses().map(str), st.text(max_size=40))
maps = st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=3)
enums = st.integers(0, 5)


@pytest.fixture(scope="module")
def stubs(etcd_server: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    import subprocess
    import time

    from conftest import coordinator_cmd
    tmp = tmp_path_factory.mktemp("props")
    ready = tmp / "addr"
    with open(tmp / "c.log", "wb") as log:
        proc = subprocess.Popen(coordinator_cmd(tmp / "c", ready, etcd_endpoint=etcd_server) + ["--write-rate", "0"],
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None, (tmp / "c.log").read_text()
        time.sleep(0.05)
    ch = grpc.insecure_channel(ready.read_text().strip())
    etcd = grpc.insecure_channel(etcd_server)
    out = {"sites": api_pb2_grpc.SiteServiceStub(ch), "endpoints": api_pb2_grpc.EndpointServiceStub(ch),
           "connections": api_pb2_grpc.ConnectionServiceStub(ch), "border": l2gw_pb2_grpc.BorderGatewayServiceStub(ch),
           "kv": etcd_rpc.KVStub(etcd), "proc": proc}
    # A little real state for references to hit.
    for name in ("r1", "r2"):
        try:
            out["sites"].CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION), timeout=5)  # type: ignore[attr-defined]
        except grpc.RpcError:
            pass
    yield out
    proc.terminate()
    proc.wait(10)


def revision(stubs: dict[str, object]) -> int:
    kv = stubs["kv"]
    resp = kv.Range(etcd_rpc.RangeRequest(key=b"/isthmus/v1/config/", range_end=b"/isthmus/v1/config0",  # type: ignore[attr-defined]
                                          count_only=True), timeout=5)
    return int(resp.header.revision), int(resp.count)


def call(stubs: dict[str, object], service: str, method: str, request: object) -> None:
    before = revision(stubs)
    try:
        getattr(stubs[service], method)(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in DOCUMENTED, f"{method}: undocumented {exc.code()} {exc.details()!r} for {request!r}"
        assert exc.details(), f"{method}: an error without a message"
        after = revision(stubs)
        # Nothing written: no config key changed (other writers: only status keys, none here).
        assert after[1] == before[1], f"{method} failed with {exc.code().name} but the config changed"
    assert stubs["proc"].poll() is None, "the coordinator died"  # type: ignore[attr-defined]


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(name=names, kind=enums, parent=names, labels=maps, description=st.text(max_size=1100))
def test_create_site(stubs: dict[str, object], name: str, kind: int, parent: str, labels: dict[str, str],
                     description: str) -> None:
    call(stubs, "sites", "CreateSite", pb.Site(name=name, kind=kind, parent=parent, labels=labels,
                                               description=description))


@FAST
@given(site=names, name=names, address=addresses, asn=u32, role=enums, router_id=addresses, props=maps)
def test_create_endpoint(stubs: dict[str, object], site: str, name: str, address: str, asn: int, role: int,
                         router_id: str, props: dict[str, str]) -> None:
    call(stubs, "endpoints", "CreateEndpoint", pb.Endpoint(site=site, name=name, address=address, asn=asn, role=role,
                                                           router_id=router_id, properties=props))


@FAST
@given(name=names, a=st.tuples(names, names), b=st.tuples(names, names), ctype=enums,
       hold=st.one_of(st.none(), u32), ref=st.text(max_size=30), fams=st.lists(st.text(max_size=15), max_size=3),
       vni=u32, port=u32, mtu=u32, admin=enums, with_bgp=st.booleans(), with_vxlan=st.booleans())
def test_create_connection(stubs: dict[str, object], name: str, a: tuple[str, str], b: tuple[str, str], ctype: int,
                           hold: int | None, ref: str, fams: list[str], vni: int, port: int, mtu: int, admin: int,
                           with_bgp: bool, with_vxlan: bool) -> None:
    conn = pb.Connection(name=name, a=pb.EndpointRef(site=a[0], name=a[1]), b=pb.EndpointRef(site=b[0], name=b[1]),
                         type=ctype, admin_state=admin)
    if with_bgp:
        conn.bgp.CopyFrom(pb.BgpParams(password_ref=ref, address_families=fams))
        if hold is not None:
            conn.bgp.hold_time = hold
    if with_vxlan:
        conn.vxlan.CopyFrom(pb.VxlanParams(vni=vni, udp_port=port, mtu=mtu))
    call(stubs, "connections", "CreateConnection", conn)


@FAST
@given(site=names, name=names, dtype=enums, ips=st.lists(addresses, max_size=3), mgmt=maps,
       gw_name=st.text(max_size=300), project=names, segs=st.lists(st.tuples(st.text(max_size=40), u32), max_size=3),
       network=names, seg=u32)
def test_border_gateway_calls(stubs: dict[str, object], site: str, name: str, dtype: int, ips: list[str],
                              mgmt: dict[str, str], gw_name: str, project: str, segs: list[tuple[str, int]],
                              network: str, seg: int) -> None:
    call(stubs, "border", "CreateGatewayDevice", l2.GatewayDevice(site=site, name=name, type=dtype, tunnel_ips=ips,
                                                                  management=mgmt))
    call(stubs, "border", "CreateL2Gateway", l2.L2Gateway(name=gw_name, project_id=project, devices=[
        l2.L2GatewayDeviceRef(device_id=d, segmentation_id=s) for d, s in segs]))
    call(stubs, "border", "CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=gw_name,
                                                                              network_id=network, segmentation_id=seg))
