"""The agent's part of the health view: its region's endpoints, compute services and network agents, checked each
--health-interval and sent up the coordinator link; a change of state is also a journal entry (an event)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from isthmus.cloud.health import region_health
from isthmus.cloud.session import CloudError, SpecError
from isthmus.v1 import logs_pb2 as lpb

log = logging.getLogger(__name__)

Note = Callable[..., None]  # Reconciler.note(kind, message, level=...)
CAPACITY = ("vcpus", "vcpus_used", "ram_mb", "ram_mb_used", "instances")


class RegionHealth:
    def __init__(self, site: str, region: str, conn: Callable[[], Any], interval: float = 30.0,
                 note: Note | None = None, capacity: Callable[[], Any] | None = None) -> None:
        self.site = site
        self.region = region
        self.conn = conn  # the region's connection of the calling thread (the sync worker's Region.conn)
        self.interval = interval
        self.note = note
        self.capacity = capacity  # the views' last capacity read (no API call of its own)
        self.report: lpb.HealthReport | None = None
        self.changed = asyncio.Event()
        self._since: dict[tuple[str, str, str], tuple[str, int]] = {}  # item -> (state, since ms)

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                items = await asyncio.to_thread(self._check)
            except (CloudError, SpecError) as exc:
                items = [{"service": "identity", "kind": "endpoint", "name": "token", "state": "DOWN",
                          "latency_seconds": 0.0, "detail": str(exc)[:300]}]
            self._take(items)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _check(self) -> list[dict[str, Any]]:
        return region_health(self.conn())

    def _take(self, items: list[dict[str, Any]]) -> None:
        now = int(time.time() * 1000)
        report = lpb.HealthReport(region=self.region, checked_unix_ms=now, interval_seconds=self.interval)
        seen = set()
        for d in items:
            key = (d["service"], d["kind"], d["name"])
            seen.add(key)
            before = self._since.get(key)
            if before is None or before[0] != d["state"]:
                self._since[key] = (d["state"], now)
                self._announce(d, before[0] if before else None)
            report.items.append(lpb.HealthItem(since_unix_ms=self._since[key][1], **d))
        for key in [k for k in self._since if k not in seen]:
            del self._since[key]
        cap = self.capacity() if self.capacity is not None else None
        if cap is not None:
            for name in CAPACITY:
                report.capacity[name] = int(getattr(cap, name))
            for name, n in cap.network_objects.items():
                report.capacity[name] = int(n)
        self.report = report
        self.changed.set()

    def _announce(self, d: dict[str, Any], before: str | None) -> None:
        """A state change is a journal entry; the first look only for what is not UP."""
        if before is None and d["state"] == "UP":
            return
        text = (f"region {self.region}: {d['service']} {d['kind']} {d['name']} is {d['state']}"
                + (f" (was {before})" if before else "") + (f": {d['detail']}" if d["detail"] else ""))
        level = "info" if d["state"] in ("UP", "DISABLED") else "warning"
        log.log(logging.INFO if level == "info" else logging.WARNING, "site %s: %s", self.site, text)
        if self.note is not None:
            self.note("health", text, level=level)
