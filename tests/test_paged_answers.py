"""Every list answer is bounded: the border gateway's lists, the global views' lists, the event history and
the audit history come in pages of at most 1000 items and about 1 MiB, and isthmusctl and the Neutron side
read every page. Real gRPC against a real coordinator and etcd; isthmusctl as a process.

Also the request ids of the global views' writes (routing domains, global quotas) and of topology policies: a
retried create or delete that was in fact done answers what it did.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio
import pytest
from test_sync_api import Env, with_env

from conftest import ctl
from isthmus.coordinator.auth import AUDIT
from isthmus.coordinator.events import SiteEvent, cursor_key, event_key
from isthmus.coordinator.multisite.views_planner import VIEWS
from isthmus.coordinator.store import Put
from isthmus.core.wire import pieces
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc, events_pb2_grpc, l2gw_pb2_grpc, topology_pb2_grpc, views_pb2_grpc
from isthmus.v1 import events_pb2 as epb
from isthmus.v1 import l2gw_pb2 as l2
from isthmus.v1 import topology_pb2 as tpb
from isthmus.v1 import views_pb2 as vpb

KiB = 1024


async def every_page(call: Callable[..., Awaitable[Any]], request: Any, field: str) -> tuple[list[Any], int]:
    """The items of every page in order, and how many pages there were."""
    items: list[Any] = []
    pages = 0
    while True:
        reply = await call(request)
        assert reply.ByteSize() <= pieces.PAGE_BYTES + 64 * KiB
        items += list(getattr(reply, field))
        pages += 1
        if not reply.next_page_token:
            return items, pages
        request.page_token = reply.next_page_token


async def refused(call: Awaitable[Any], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in (exc.value.details() or ""), exc.value


@with_env
async def test_border_gateway_lists_are_paged(env: Env) -> None:
    border = l2gw_pb2_grpc.BorderGatewayServiceStub(env.channel)
    ids = []
    for i in range(5):
        dev = await border.CreateGatewayDevice(l2.GatewayDevice(
            site="one", name=f"gw{i}", type=l2.GATEWAY_DEVICE_TYPE_ROUTER_VTEP, tunnel_ips=[f"192.0.2.{i + 1}"]))
        ids.append(dev.id)
    gateways = []
    for i in range(3):
        gw = await border.CreateL2Gateway(l2.L2Gateway(name=f"gw{i}", project_id="p1", devices=[
            l2.L2GatewayDeviceRef(device_id=ids[i], segmentation_id=100 + i)]))
        gateways.append(gw.id)
    conns = []
    for i in range(3):
        c = await border.CreateL2GatewayConnection(l2.L2GatewayConnection(
            l2_gateway_id=gateways[0], network_id=f"net-{i}", project_id="p1", segmentation_id=200 + i))
        conns.append(c.id)

    devices, pages = await every_page(border.ListGatewayDevices, l2.ListGatewayDevicesRequest(page_size=2), "devices")
    assert [d.id for d in devices] == sorted(ids) and pages == 3
    found, pages = await every_page(border.ListL2Gateways, l2.ListL2GatewaysRequest(page_size=2), "l2_gateways")
    assert [g.id for g in found] == sorted(gateways) and pages == 2
    listed, pages = await every_page(border.ListL2GatewayConnections,
                                     l2.ListL2GatewayConnectionsRequest(page_size=1), "l2_gateway_connections")
    assert [c.id for c in listed] == sorted(conns) and pages == 3
    await refused(border.ListL2Gateways(l2.ListL2GatewaysRequest(page_size=1001)), "page_size")
    await refused(border.ListGatewayDevices(l2.ListGatewayDevicesRequest(page_token="%%%")), "page_token")

    # isthmusctl reads every page (it asks for the default page of 1000: all five come in one here, and the
    # page walk itself is the same code as the sites' list, tested with a page size of 1 in test_ctl_e2e).
    out = await asyncio.to_thread(ctl, "--coordinator", env.coordinator.address, "-o", "json", "gateway-device", "list")
    assert sorted(d["id"] for d in json.loads(out.stdout)) == sorted(ids)


@with_env
async def test_global_view_lists_are_paged_and_view_writes_take_request_ids(env: Env) -> None:
    views = views_pb2_grpc.GlobalViewServiceStub(env.channel)
    for resource in ("cores", "instances", "ram"):
        await views.SetQuota(vpb.QuotaLimit(project="p1", resource=resource, hard=10, soft=-1))
    limits, pages = await every_page(views.ListQuotas, vpb.ListQuotasRequest(page_size=2), "limits")
    assert [x.resource for x in limits] == ["cores", "instances", "ram"] and pages == 2
    for name in ("d1", "d2", "d3"):
        await views.CreateRoutingDomain(vpb.RoutingDomain(name=name, networks=[vpb.NetworkRef(region="one",
                                                                                          network=f"n-{name}")]))
    domains, pages = await every_page(views.ListRoutingDomains, vpb.ListRoutingDomainsRequest(page_size=1),
                                      "domains")
    assert [d.name for d in domains] == ["d1", "d2", "d3"] and pages == 3
    await refused(views.ListAddressConflicts(vpb.ListAddressConflictsRequest(page_size=-1)), "page_size")
    await refused(views.ListAddresses(vpb.ListAddressesRequest(query="10.0.0.1", page_token="@")), "page_token")

    # A retried write with its request id answers what the first did (the answer was lost, not the write).
    def rid(text: str) -> list[tuple[str, str]]:
        return [("x-isthmus-request-id", f"views-{text}-0001")]

    domain = vpb.RoutingDomain(name="d4", networks=[vpb.NetworkRef(region="two", network="n-d4")])
    first = await views.CreateRoutingDomain(domain, metadata=rid("a"))
    assert await views.CreateRoutingDomain(domain, metadata=rid("a")) == first
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # a new request for the same name: it exists
        await views.CreateRoutingDomain(domain, metadata=rid("b"))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    deleted = await views.DeleteRoutingDomain(vpb.DeleteRoutingDomainRequest(name="d4"), metadata=rid("c"))
    again = await views.DeleteRoutingDomain(vpb.DeleteRoutingDomainRequest(name="d4"), metadata=rid("c"))
    assert again.revision == deleted.revision
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await views.DeleteRoutingDomain(vpb.DeleteRoutingDomainRequest(name="d4"), metadata=rid("d"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
    quota = vpb.QuotaLimit(project="p2", resource="cores", hard=8, soft=4)
    made = await views.SetQuota(quota, metadata=rid("e"))
    stored, _ = await env.store.get_prefix(VIEWS + "quotas/p2/")
    assert await views.SetQuota(quota, metadata=rid("e")) == made
    assert (await env.store.get_prefix(VIEWS + "quotas/p2/"))[0] == stored  # not written again
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # the id of one request cannot answer another
        await views.DeleteRoutingDomain(vpb.DeleteRoutingDomainRequest(name="d1"), metadata=rid("e"))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@with_env
async def test_event_history_of_several_mib_comes_in_pages_back_in_time(env: Env) -> None:
    """400 events of 4000 characters (about 1.6 MB) at each of two sites: ListEvents gives the newest that fit
    in about 1 MiB and a token for the older ones, and every page walk yields each event once, in order."""
    now = int(time.time() * 1000) - 60_000
    for site in ("one", "two"):
        ops = [Put(event_key(site, seq), SiteEvent(site, seq, now + seq * 10 + (site == "two"), "agent", "info",
                                                   f"{site} {seq} ".ljust(4000, "x")).encode())
               for seq in range(1, 401)]
        for start in range(0, len(ops), 100):
            await env.store.txn([], ops[start:start + 100])
        await env.store.txn([], [Put(cursor_key(site), json.dumps({"seq": 400}).encode())])
    stub = events_pb2_grpc.EventServiceStub(env.channel)

    first = await stub.ListEvents(epb.ListEventsRequest(site="one", limit=400))
    assert 0 < len(first.events) < 400 and first.next_page_token
    assert [e.seq for e in first.events] == list(range(401 - len(first.events), 401))  # the newest, oldest first
    one, pages = await every_page(stub.ListEvents, epb.ListEventsRequest(site="one", limit=400), "events")
    assert pages == 2
    # Pages go back in time: the second holds the older events.
    assert sorted(e.seq for e in one) == list(range(1, 401)) and len(one) == 400
    both, pages = await every_page(stub.ListEvents, epb.ListEventsRequest(limit=700), "events")
    assert len(both) == 700 and len({(e.site, e.seq) for e in both}) == 700 and pages >= 3
    newest = sorted(both, key=lambda e: (e.time_unix_ms, e.site, e.seq))
    assert {(e.site, e.seq) for e in newest} == {(s, q) for s in ("one", "two") for q in range(51, 401)}
    await refused(stub.ListEvents(epb.ListEventsRequest(limit=10, page_token=first.next_page_token)), "page_token")

    # isthmusctl reads the pages and prints the whole, oldest first.
    out = await asyncio.to_thread(ctl, "--coordinator", env.coordinator.address, "-o", "json", "events", "--site",
                                  "one", "--limit", "400")
    printed = json.loads(out.stdout)
    assert [int(e["seq"]) for e in printed] == list(range(1, 401))


@with_env
async def test_audit_history_of_several_mib_comes_in_pages(env: Env) -> None:
    base = int(time.time() * 1000) - 60_000
    ops = [Put(f"{AUDIT}{base + i:013d}-{i:06d}", json.dumps({
        "time_unix_ms": base + i, "who": "test", "role": "admin", "method": "/isthmus.v1.SiteService/CreateSite",
        "allowed": True, "detail": f"{i} ".ljust(4000, "y")}).encode()) for i in range(600)]
    for start in range(0, len(ops), 100):
        await env.store.txn([], ops[start:start + 100])
    status = api_pb2_grpc.StatusServiceStub(env.channel)
    first = await status.ListAuditEvents(api.ListAuditEventsRequest(limit=600))
    assert first.next_page_token and 0 < len(first.events) < 600
    mine = [e for e in first.events if e.who == "test"]
    assert int(mine[-1].detail.split()[0]) == 599  # the newest are in the first answer
    found, pages = await every_page(status.ListAuditEvents, api.ListAuditEventsRequest(limit=600), "events")
    assert pages == 3 and len(found) == 600
    await refused(status.ListAuditEvents(api.ListAuditEventsRequest(limit=5, page_token=first.next_page_token)),
                  "page_token")
    out = await asyncio.to_thread(ctl, "--coordinator", env.coordinator.address, "-o", "json", "audit", "--limit",
                                  "600")
    printed = [int(e["detail"].split()[0]) for e in json.loads(out.stdout) if e["who"] == "test"]
    assert printed == sorted(printed) and printed[-1] == 599 and len(printed) >= 590


@with_env
async def test_a_retried_policy_write_with_its_request_id_answers_what_it_did(env: Env) -> None:
    policies = topology_pb2_grpc.PolicyServiceStub(env.channel)

    def rid(text: str) -> list[tuple[str, str]]:
        return [("x-isthmus-request-id", f"policy-{text}-0001")]

    policy = tpb.TopologyPolicy(name="mesh", kind=tpb.POLICY_KIND_FULL_MESH, endpoint="gw", sites=["one", "two"])
    made = await policies.CreatePolicy(policy, metadata=rid("a"))
    assert made.version > 0
    assert await policies.CreatePolicy(policy, metadata=rid("a")) == made
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await policies.CreatePolicy(policy, metadata=rid("b"))
    assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as exc:  # a stale version: nothing written
        await policies.UpdatePolicy(tpb.TopologyPolicy(name="mesh", kind=tpb.POLICY_KIND_FULL_MESH, endpoint="gw",
                                                       sites=["one"], version=made.version - 1))
    assert exc.value.code() == grpc.StatusCode.ABORTED
    gone = await policies.DeletePolicy(tpb.DeletePolicyRequest(name="mesh"), metadata=rid("c"))
    assert (await policies.DeletePolicy(tpb.DeletePolicyRequest(name="mesh"), metadata=rid("c"))).revision == (
        gone.revision)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await policies.DeletePolicy(tpb.DeletePolicyRequest(name="mesh"), metadata=rid("d"))
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND
