"""The agent's part of the global views: its region's usage and quota limits, capacity, and addresses.

Runs next to the sync worker on the same stream. Usage is read for every
project the coordinator names (those with a global quota) and the limit the
coordinator assigns is applied through openstacksdk; while no coordinator
answers, the region keeps the limits last applied. Addresses go up as deltas:
a full list at the start of each stream, then only what changed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from isthmus.cloud.addresses import list_addresses
from isthmus.cloud.session import CloudError, SpecError
from isthmus.cloud.usage import capacity, project_usage, set_project_limits
from isthmus.v1 import sync_pb2 as spb
from isthmus.v1 import views_pb2 as vpb

log = logging.getLogger(__name__)

RECENT_WINDOW = 600.0  # seconds of usage history behind "recent growth"
REPORT_ONLY = -2  # a QuotaTarget limit that means: report usage, change nothing

Note = Callable[[str, str], None]  # (kind, message): an event of the site


class RegionViews:
    def __init__(self, site: str, conn: Callable[[], Any], wake: Callable[[], None], note: Note | None = None,
                 usage_interval: float = 30.0, address_interval: float = 30.0,
                 capacity_interval: float = 60.0) -> None:
        self.site = site
        self.conn = conn
        self.wake = wake
        self.note = note
        self.usage_interval = usage_interval
        self.address_interval = address_interval
        self.capacity_interval = capacity_interval
        self.targets: list[vpb.QuotaTarget] = []
        self._history: dict[tuple[str, str], collections.deque[tuple[float, int]]] = {}
        self._applied: dict[tuple[str, str], int] = {}  # (project, resource) -> number of the grant in force
        self._usage: vpb.UsageReport | None = None
        self._usage_sent: vpb.UsageReport | None = None
        self._capacity: vpb.RegionCapacity | None = None
        self._capacity_sent: vpb.RegionCapacity | None = None
        self._addresses: dict[tuple[str, str], vpb.AddressRecord] | None = None
        self._addresses_sent: dict[tuple[str, str], vpb.AddressRecord] | None = None
        self._seq = 0
        self._usage_wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ what the stream carries

    def assign_quotas(self, targets: list[vpb.QuotaTarget]) -> None:
        if list(targets) != self.targets:
            self.targets = list(targets)
            self._usage_wake.set()

    def new_stream(self) -> None:
        """Everything goes up again: a full address list, the last usage and capacity."""
        self._usage_sent = self._capacity_sent = None
        self._addresses_sent = None
        self._seq = 0

    def take(self) -> list[spb.RegionUp]:
        """The reports to send now (called by the stream's sender)."""
        out = []
        if self._usage is not None and self._usage != self._usage_sent:
            out.append(spb.RegionUp(usage=self._usage))
            self._usage_sent = self._usage
        if self._capacity is not None and self._capacity != self._capacity_sent:
            out.append(spb.RegionUp(capacity=self._capacity))
            self._capacity_sent = self._capacity
        if self._addresses is not None and self._addresses is not self._addresses_sent:
            current, before = self._addresses, self._addresses_sent
            self._seq += 1
            if before is None:
                out += self._chunks(list(current.values()), [], full=True)
            else:
                ups = [rec for key, rec in current.items() if before.get(key) != rec]
                gone = [vpb.AddressKey(kind=k, id=i) for (k, i) in before if (k, i) not in current]
                if ups or gone:
                    out += self._chunks(ups, gone, full=False)
            self._addresses_sent = current
        return out

    def _chunks(self, ups: list[vpb.AddressRecord], gone: list[vpb.AddressKey], full: bool) -> list[spb.RegionUp]:
        """One delta in parts well under the message size limit; every part has the delta's seq."""
        size = 2000
        starts = list(range(0, max(1, len(ups)), size))
        return [spb.RegionUp(addresses=vpb.AddressDelta(
            seq=self._seq, full=full, upserts=ups[start:start + size], removes=gone if i == 0 else [],
            more=i < len(starts) - 1)) for i, start in enumerate(starts)]

    # ------------------------------------------------------------ pollers

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.gather(self._every(self.address_interval, self._poll_addresses, "addresses"),
                             self._every(self.capacity_interval, self._poll_capacity, "capacity"),
                             self._usage_loop())

    async def _every(self, interval: float, poll: Callable[[], None], what: str) -> None:
        while True:
            try:
                await asyncio.to_thread(poll)
                self.wake()
            except (CloudError, SpecError) as exc:
                log.warning("site %s: cannot read the region's %s: %s", self.site, what, exc)
            await asyncio.sleep(interval)

    def _poll_addresses(self) -> None:
        records = {}
        for d in list_addresses(self.conn()):
            rec = vpb.AddressRecord(kind=d["kind"], id=d["id"], project=d.get("project", ""),
                                    network=d.get("network", ""), ips=list(d.get("ips", ())), mac=d.get("mac", ""),
                                    cidr=d.get("cidr", ""), device=d.get("device", ""), name=d.get("name", ""),
                                    network_name=d.get("network_name", ""))
            records[(rec.kind, rec.id)] = rec
        if records != self._addresses:
            self._addresses = records

    def last_capacity(self) -> vpb.RegionCapacity | None:
        """The capacity last read (for the health report: no API call of its own)."""
        return self._capacity

    def _poll_capacity(self) -> None:
        d = capacity(self.conn())
        cap = vpb.RegionCapacity(region=self.site, compute_known=bool(d.get("compute_known")),
                                 source=str(d.get("source", "unknown")))
        for name in ("vcpus", "vcpus_used", "ram_mb", "ram_mb_used", "instances"):
            setattr(cap, name, int(d.get(name, 0)))
        for k, v in d.get("network_objects", {}).items():
            cap.network_objects[k] = int(v)
        self._capacity = cap

    async def _usage_loop(self) -> None:
        while True:
            if self.targets:
                try:
                    self._usage = await asyncio.to_thread(self._poll_usage, list(self.targets))
                    self.wake()
                except (CloudError, SpecError) as exc:
                    log.warning("site %s: cannot read or apply quota usage: %s", self.site, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._usage_wake.wait(), self.usage_interval)
            self._usage_wake.clear()

    def _poll_usage(self, targets: list[vpb.QuotaTarget]) -> vpb.UsageReport:
        """Apply the assigned limits that differ from the region's, then read usage (in one pass per project)."""
        conn = self.conn()
        by_project: dict[str, dict[str, int]] = {}
        numbers = {(t.project, t.resource): t.grant for t in targets}
        for t in targets:
            by_project.setdefault(t.project, {})[t.resource] = t.limit
        report = vpb.UsageReport()
        now = time.monotonic()
        for project, wanted in sorted(by_project.items()):
            try:
                usage = project_usage(conn, project, wanted)
            except SpecError as exc:  # e.g. a project this region's Nova does not know: the others go on
                log.warning("site %s: no quota usage for project %s: %s", self.site, project, exc)
                continue
            change = {res: limit for res, limit in wanted.items()
                      if limit != REPORT_ONLY and res in usage and usage[res][1] != limit}
            if change:
                changed = set_project_limits(conn, project, change)
                if changed:
                    text = ", ".join(f"{res} {usage[res][1]} -> {limit}" for res, limit in sorted(changed.items()))
                    log.info("site %s: project %s quota limits set: %s", self.site, project, text)
                    if self.note is not None and self._loop is not None:
                        self._loop.call_soon_threadsafe(self.note, "quota",
                                                        f"project {project}: limits set ({text})")
                    usage = project_usage(conn, project, wanted)
            for res, limit in wanted.items():
                if limit != REPORT_ONLY and res in usage and usage[res][1] == limit:
                    self._applied[(project, res)] = numbers[(project, res)]  # this grant is in force
            entry = report.projects.add(project=project)
            for res, (in_use, limit) in sorted(usage.items()):
                history = self._history.setdefault((project, res), collections.deque())
                history.append((now, in_use))
                while history and history[0][0] < now - RECENT_WINDOW:
                    history.popleft()
                recent = max(0, in_use - history[0][1])
                entry.resources[res].CopyFrom(vpb.UsageEntry(in_use=in_use, limit=limit, recent=float(recent),
                                                             grant=self._applied.get((project, res), 0)))
        return report
