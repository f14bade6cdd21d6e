"""Property-based abuse of every public create call: random, boundary and oversized values never crash the
coordinator, never write anything when refused (etcd's keys and values byte-identical), always answer with a
documented status code and a short message naming the field, and leave status answering and the site's agent
up to date; the coordinator's memory stays bounded under a stream of pathological requests."""

from __future__ import annotations

import grpc
import pytest
from aetcd import rpc as etcd_rpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from isthmus.v1 import api_pb2, api_pb2_grpc, l2gw_pb2_grpc
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
maps = st.one_of(
    st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=3),
    # over the budgets: too many entries, too long values, too many bytes in all
    st.integers(60, 70).map(lambda n: {f"k{i}": "v" for i in range(n)}),
    st.integers(1000, 1100).map(lambda n: {"k": "v" * n}),
    st.integers(7, 10).map(lambda n: {f"k{i}": "v" * 1024 for i in range(n)}),
)
templates = st.one_of(st.sampled_from(["brs{segmentation_id}", "{segmentation_id:>99999}", "{network_id}",
                                       "b{{x}}", "{0}", "{segmentation_id!r}", "a" * 16, "x{network_id}y" * 5]),
                      st.text(max_size=30))
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
           "status": api_pb2_grpc.StatusServiceStub(ch), "kv": etcd_rpc.KVStub(etcd), "proc": proc,
           "address": ready.read_text().strip()}
    # A little real state for references to hit.
    for name in ("r1", "r2"):
        try:
            out["sites"].CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION), timeout=5)  # type: ignore[attr-defined]
        except grpc.RpcError:
            pass
    yield out
    proc.terminate()
    proc.wait(10)


def contents(stubs: dict[str, object]) -> list[tuple[bytes, bytes]]:
    """Every key and value of the objects isthmus holds in etcd, with their indexes and references (status,
    audit and event keys are written by others meanwhile)."""
    kv = stubs["kv"]
    out = []
    for prefix in (b"/isthmus/v1/config/", b"/isthmus/v1/index/", b"/isthmus/v1/refs/"):
        end = prefix[:-1] + bytes([prefix[-1] + 1])
        resp = kv.Range(etcd_rpc.RangeRequest(key=prefix, range_end=end), timeout=5)  # type: ignore[attr-defined]
        out += [(k.key, k.value) for k in resp.kvs]
    return out


def call(stubs: dict[str, object], service: str, method: str, request: object) -> None:
    before = contents(stubs)
    try:
        getattr(stubs[service], method)(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in DOCUMENTED, f"{method}: undocumented {exc.code()} {exc.details()!r} for {request!r}"
        details = exc.details() or ""
        assert details, f"{method}: an error without a message"
        assert len(details) < 600, f"{method}: a message of {len(details)} characters"
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert ": " in details and " " not in details.split(": ", 1)[0], f"{method}: no field named: {details!r}"
        # Nothing written: every key and value as it was.
        assert contents(stubs) == before, f"{method} failed with {exc.code().name} but etcd changed"
    else:
        # Accepted: status still answers for every site.
        stubs["status"].ListSiteStatus(api_pb2.ListSiteStatusRequest(), timeout=10)  # type: ignore[attr-defined]
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
       network=names, seg=u32, template=st.one_of(st.none(), templates))
def test_border_gateway_calls(stubs: dict[str, object], site: str, name: str, dtype: int, ips: list[str],
                              mgmt: dict[str, str], gw_name: str, project: str, segs: list[tuple[str, int]],
                              network: str, seg: int, template: str | None) -> None:
    if template is not None:
        mgmt = {**mgmt, "segment_bridge": template}
    call(stubs, "border", "CreateGatewayDevice", l2.GatewayDevice(site=site, name=name, type=dtype, tunnel_ips=ips,
                                                                  management=mgmt))
    call(stubs, "border", "CreateL2Gateway", l2.L2Gateway(name=gw_name, project_id=project, devices=[
        l2.L2GatewayDeviceRef(device_id=d, segmentation_id=s) for d, s in segs]))
    call(stubs, "border", "CreateL2GatewayConnection", l2.L2GatewayConnection(l2_gateway_id=gw_name,
                                                                              network_id=network, segmentation_id=seg))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# Growth allowed under the stream below (measured: under 20 MiB; a template bomb once took 500).
MEMORY_BOUND = 48 * 1024 * 1024


def test_memory_stays_bounded_under_pathological_requests(stubs: dict[str, object]) -> None:
    pid = stubs["proc"].pid  # type: ignore[attr-defined]
    big = "v" * 1000

    def requests() -> list[tuple[str, str, object]]:
        return [
            ("endpoints", "CreateEndpoint", pb.Endpoint(site="r1", name="big", address="192.0.2.50", asn=65001,
                                                        properties={f"k{i}": big for i in range(3800)})),
            ("sites", "CreateSite", pb.Site(name="n" * 1_000_000, kind=pb.SITE_KIND_REGION)),
            ("sites", "CreateSite", pb.Site(name="r9", kind=pb.SITE_KIND_REGION,
                                            labels={f"k{i}": "v" for i in range(100_000)})),
            ("border", "CreateGatewayDevice", l2.GatewayDevice(
                site="r1", name="bomb", type=l2.GATEWAY_DEVICE_TYPE_ROUTER_VTEP, tunnel_ips=["192.0.2.51"],
                management={"segment_bridge": "{segmentation_id:>999999999}"})),
            ("sites", "CreateSite", pb.Site(name="r8", kind=pb.SITE_KIND_REGION, description="\x00" * 3_000_000)),
        ]

    for service, method, request in requests():  # warm up: what the first calls allocate once
        call(stubs, service, method, request)
    before = rss_bytes(pid)
    for _ in range(20):
        for service, method, request in requests():
            call(stubs, service, method, request)
    grown = rss_bytes(pid) - before
    assert grown < MEMORY_BOUND, f"the coordinator grew by {grown / 2**20:.0f} MiB"


def test_the_sites_agent_still_gets_its_state(stubs: dict[str, object],
                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """After every kind of abuse above, an agent for r1 still connects, applies its desired state, and status
    answers for it."""
    import subprocess

    from conftest import agent_cmd, wait_for
    tmp = tmp_path_factory.mktemp("agent")
    address = stubs["address"]  # type: ignore[index]
    with open(tmp / "agent.log", "wb") as log:
        agent = subprocess.Popen(agent_cmd("r1", str(address), tmp), stdout=log, stderr=subprocess.STDOUT)
    try:
        def caught_up() -> bool:
            st = stubs["status"].GetSiteStatus(api_pb2.GetSiteStatusRequest(site="r1"), timeout=10)  # type: ignore[attr-defined]
            return bool(st.connected and st.applied_revision >= st.desired_revision)
        wait_for(caught_up, 30, "r1's agent to apply its desired state")
    finally:
        agent.terminate()
        agent.wait(10)
