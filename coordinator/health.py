"""The regions' health, as their agents report it: the last report of each site in etcd (``health/{site}``, one
small value rewritten each report), the HealthService that reads them back, and the Prometheus samples of the
reports held by this coordinator's agent sessions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from google.protobuf import json_format

from isthmus.coordinator import registry as r
from isthmus.coordinator.store import Put, Store
from isthmus.core import model as m
from isthmus.core.errors import IsthmusError
from isthmus.core.metrics import Sample
from isthmus.v1 import logs_pb2 as lpb
from isthmus.v1 import logs_pb2_grpc

log = logging.getLogger(__name__)

HEALTH = r.ROOT + "health/"
MAX_ITEMS = 1000  # items of one report kept (a region with more compute services and agents is cut, and says so)
STALE_INTERVALS = 3
RANK = {"DOWN": 0, "UNKNOWN": 1, "DISABLED": 2, "UP": 3}  # problems first


def health_key(site: str) -> str:
    return HEALTH + site


class HealthBook:
    """The reports of the sites whose agents are connected here; each written to etcd as it comes, the newest
    one per site when several wait for the same write."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.latest: dict[str, lpb.HealthReport] = {}
        self._dirty: dict[str, lpb.HealthReport] = {}
        self._task: asyncio.Task[None] | None = None

    def take(self, site: str, report: lpb.HealthReport) -> None:
        if len(report.items) > MAX_ITEMS:
            del report.items[MAX_ITEMS:]
            report.items.add(service="isthmus", kind="report", name="cut", state="UNKNOWN",
                             detail=f"only the first {MAX_ITEMS} items are kept")
        self.latest[site] = report
        self._dirty[site] = report
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write(), name="health-writer")

    def forget(self, site: str) -> None:
        """The site's session here ended: its metrics go (etcd keeps the last report, shown stale)."""
        self.latest.pop(site, None)

    async def _write(self) -> None:
        while self._dirty:
            batch, self._dirty = self._dirty, {}
            puts = [Put(health_key(site), json_format.MessageToJson(rep, indent=None).encode())
                    for site, rep in batch.items()]
            try:
                for start in range(0, len(puts), 100):
                    await self.store.txn([], puts[start:start + 100])
            except IsthmusError as exc:
                log.warning("cannot write the health of %s: %s; retrying", ", ".join(batch), exc)
                for site, rep in batch.items():
                    self._dirty.setdefault(site, rep)
                await asyncio.sleep(1)


def sort_items(items: Iterable[lpb.HealthItem]) -> list[lpb.HealthItem]:
    return sorted(items, key=lambda i: (RANK.get(i.state, 1), i.service, i.kind, i.name))


async def read_health(store: Store, site: str, sites: Iterable[str]) -> lpb.GetHealthResponse:
    """The last report of ``site`` (or of every defined site), problems first: stale regions, then by state."""
    if site:
        kv = await store.get(health_key(site))
        kvs = [kv] if kv is not None else []
    else:
        kvs, _ = await store.get_prefix(HEALTH)
    defined = set(sites)
    now = time.time() * 1000
    out = []
    for kv in kvs:
        name = kv.key[len(HEALTH):]
        if name not in defined:
            continue  # a deleted site's last report
        report = json_format.Parse(kv.value, lpb.HealthReport(), ignore_unknown_fields=True)
        items = sort_items(report.items)
        del report.items[:]
        report.items.extend(items)
        stale = now - report.checked_unix_ms > STALE_INTERVALS * max(report.interval_seconds, 1.0) * 1000
        out.append(lpb.RegionHealth(site=name, report=report, stale=stale))
    out.sort(key=lambda h: (not h.stale, min((RANK.get(i.state, 1) for i in h.report.items), default=3), h.site))
    return lpb.GetHealthResponse(regions=out)


class HealthService(logs_pb2_grpc.HealthServiceServicer):
    def __init__(self, store: Store, planner: Any) -> None:
        self.store = store
        self.planner = planner

    async def GetHealth(self, request: lpb.GetHealthRequest, context: Any) -> lpb.GetHealthResponse:  # noqa: N802
        if request.site:
            m.check_name(request.site, "site")
        return await read_health(self.store, request.site, self.planner.sites)


def health_samples(book: HealthBook) -> Iterable[Sample]:
    """Gauges of the reports of the agents connected to this coordinator (each coordinator exports its own)."""
    now = time.time()
    for site, report in sorted(book.latest.items()):
        region = {"site": site, "region": report.region}
        yield Sample("isthmus_openstack_health_age_seconds", region, max(0.0, now - report.checked_unix_ms / 1000),
                     help="Seconds since the region's health was last checked by its agent")
        for item in report.items:
            labels = {**region, "service": item.service, "kind": item.kind, "name": item.name}
            yield Sample("isthmus_openstack_up", labels, 0 if item.state in ("DOWN", "UNKNOWN") else 1,
                         help="1 when the endpoint, compute service or network agent is up (or disabled on purpose), "
                         "0 when down or unknown")
            if item.kind == "endpoint" and item.state == "UP":
                yield Sample("isthmus_openstack_endpoint_latency_seconds", labels, item.latency_seconds,
                             help="Seconds the endpoint took to answer the agent's last check")
        for figure, value in sorted(report.capacity.items()):
            yield Sample("isthmus_openstack_capacity", {**region, "figure": figure}, value,
                         help="The region's capacity figures as its agent last read them")
