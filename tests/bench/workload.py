"""The API side of the load: typed helpers that create sites, endpoints and connections through the public API.

Names and addresses are derived from an index so that every scenario builds
the same topology on every run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

import grpc.aio

from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc
from isthmus.v1 import types_pb2 as pb

from .cluster import Cluster, RawEtcd


def site_name(prefix: str, i: int) -> str:
    return f"{prefix}{i:04d}"


def address(i: int) -> str:
    """A distinct IPv4 address for endpoint number ``i`` (10.0.0.0/8)."""
    n = 0x0A000001 + i
    return ".".join(str((n >> s) & 0xFF) for s in (24, 16, 8, 0))


def asn(i: int) -> int:
    return 4_200_000_000 + i  # private 4-byte AS numbers


def spread_pairs(n: int) -> list[tuple[int, int]]:
    """Every pair of ``n`` sites once, in rounds that give each site one more connection per round."""
    out = []
    for d in range(1, n // 2 + 1):
        for i in range(n if 2 * d != n else n // 2):
            out.append((i, (i + d) % n))
    return out


class Api:
    """The coordinator's public API on one channel (one client)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.sites = api_pb2_grpc.SiteServiceStub(channel)
        self.endpoints = api_pb2_grpc.EndpointServiceStub(channel)
        self.connections = api_pb2_grpc.ConnectionServiceStub(channel)
        self.status = api_pb2_grpc.StatusServiceStub(channel)

    async def create_site(self, name: str) -> int:
        site = await self.sites.CreateSite(pb.Site(name=name, kind=pb.SITE_KIND_REGION), timeout=60)
        return int(site.version)

    async def create_endpoint(self, site: str, name: str, index: int, remote: bool = False) -> int:
        ep = await self.endpoints.CreateEndpoint(pb.Endpoint(
            site=site, name=name, address=address(index), asn=asn(index),
            role=pb.ENDPOINT_ROLE_REMOTE if remote else pb.ENDPOINT_ROLE_LOCAL,
        ), timeout=60)
        return int(ep.version)

    async def update_endpoint_asn(self, site: str, name: str, index: int, new_asn: int, remote: bool) -> int:
        ep = await self.endpoints.UpdateEndpoint(pb.Endpoint(
            site=site, name=name, address=address(index), asn=new_asn,
            role=pb.ENDPOINT_ROLE_REMOTE if remote else pb.ENDPOINT_ROLE_LOCAL,
        ), timeout=120)
        return int(ep.version)

    async def create_connection(self, name: str, a: tuple[str, str], b: tuple[str, str],
                                vni: int = 0) -> int:
        conn = pb.Connection(name=name, a=pb.EndpointRef(site=a[0], name=a[1]),
                             b=pb.EndpointRef(site=b[0], name=b[1]))
        if vni:
            conn.type = pb.CONNECTION_TYPE_VXLAN
            conn.vxlan.vni = vni
        else:
            conn.type = pb.CONNECTION_TYPE_BGP
        created = await self.connections.CreateConnection(conn, timeout=60)
        return int(created.version)

    async def delete_connection(self, name: str) -> int:
        resp = await self.connections.DeleteConnection(api.DeleteConnectionRequest(name=name), timeout=60)
        return int(resp.revision)


@dataclass
class RunTiming:
    ops: int
    seconds: float
    revisions: list[int]

    @property
    def per_second(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else 0.0


async def run_clients(clients: int, ops: Sequence[Callable[[int], Awaitable[int]]]) -> RunTiming:
    """Run ``ops`` with ``clients`` concurrent clients (client ``c`` takes ops c, c+clients, ...).

    Each op gets its client number and returns a revision. The timing runs from
    the first call to the last answer; any error fails the run.
    """
    revisions: list[int] = []

    async def client(c: int) -> None:
        for op in ops[c::clients]:
            revisions.append(await op(c))

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(min(clients, len(ops)))))
    return RunTiming(len(ops), time.perf_counter() - t0, revisions)


class ApiPool:
    """``n`` API clients, each on a channel (and TCP connection) of its own."""

    def __init__(self, cluster: Cluster, n: int) -> None:
        self.clients = [Api(cluster.channel()) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.clients)

    async def run(self, ops: Sequence[Callable[[Api], Awaitable[int]]]) -> RunTiming:
        """Run each op with one of the clients (op(Api) -> revision), all clients at once."""
        return await run_clients(len(self.clients), [partial(_with_client, self.clients, op) for op in ops])


async def _with_client(clients: list[Api], op: Callable[[Api], Awaitable[int]], c: int) -> int:
    return await op(clients[c])


async def build_sites(pool: ApiPool, prefix: str, count: int, start: int = 0, endpoint: str = "gw",
                      first_index: int = 0) -> list[str]:
    """Sites ``prefix{start..start+count-1}``, each with one LOCAL endpoint ``endpoint``."""
    names = [site_name(prefix, i) for i in range(start, start + count)]
    await pool.run([partial(Api.create_site, name=s) for s in names])
    await pool.run([partial(Api.create_endpoint, site=s, name=endpoint, index=first_index + start + i)
                    for i, s in enumerate(names)])
    return names


async def raw_txn(raw: list[RawEtcd], items: list[tuple[str, bytes]], client: int) -> int:
    """One etcd transaction of ``items`` puts on client ``client``: a reference's write."""
    return await raw[client].txn_puts(items)


def connection_keys(root: str, name: str, a: str, b: str, value: bytes,
                    audit: bytes | None = None) -> list[tuple[str, bytes]]:
    """What a connection create writes under ``root``: the connection, its pair index, a reference per end (each
    end the site's endpoint gw), and with ``audit`` an audit event."""
    keys = [(f"{root}config/connections/{name}", value), (f"{root}index/pair/bgp/{a}/gw/{b}/gw", name.encode()),
            (f"{root}refs/endpoint/{a}/gw/{name}", b""), (f"{root}refs/endpoint/{b}/gw/{name}", b"")]
    return keys if audit is None else [*keys, (f"{root}audit/{name}", audit)]
