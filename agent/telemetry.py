"""The agent's Prometheus metrics: computed from its state at every scrape (names in docs/operations.md)."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from prometheus_client import Histogram

import isthmus
from isthmus.core.metrics import LoopCollector, Sample, new_registry

RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class AgentMetrics:
    def __init__(self, site: str, reconciler: Any, link: Any, worker: Any = None) -> None:
        self.site = site
        self.reconciler = reconciler
        self.link = link
        self.worker = worker
        self.registry = new_registry()
        self.reconcile_seconds = Histogram(
            "isthmus_agent_reconcile_seconds", "Seconds one reconcile pass takes (observe, apply, report)",
            buckets=RECONCILE_BUCKETS, registry=self.registry)
        LoopCollector(self._collect, registry=self.registry)

    def _collect(self) -> Iterable[Sample]:
        site = {"site": self.site}
        yield Sample("isthmus_agent_info", {**site, "version": isthmus.__version__}, 1, help="The agent's version")
        r, link = self.reconciler, self.link
        yield Sample("isthmus_agent_connected", site, 1 if link.connected else 0,
                     help="1 while the agent's stream to a coordinator is up")
        yield Sample("isthmus_agent_desired_revision", site, r.desired.revision,
                     help="Revision of the desired state the agent holds")
        yield Sample("isthmus_agent_applied_revision", site, r.applied_revision,
                     help="Revision of the desired state applied through the drivers")
        states = collections.Counter(o.state.value for o in r.observed.values())
        for state in ("established", "connecting", "down", "error"):
            yield Sample("isthmus_agent_peerings", {**site, "state": state}, states.get(state, 0),
                         help="The site's peerings by observed state")
        yield Sample("isthmus_agent_overrides", site, len(r.overrides.items), help="Local overrides in force")
        # A gauge: prometheus-client would write a counter's samples as isthmus_agent_journal_seq_total.
        yield Sample("isthmus_agent_journal_seq", site, r.journal.seq,
                     help="Events the agent has journaled (sequence number of the last)")
        w = self.worker
        if w is not None:
            yield Sample("isthmus_agent_sync_connected", site, 1 if w.connected else 0,
                         help="1 while the sync stream to a coordinator is up")
            by_state = collections.Counter(st.state.value for st in w.statuses.values())
            for state in ("PENDING", "IN_PROGRESS", "IN_SYNC", "CONFLICT", "FAILED", "HELD", "REMOVED"):
                yield Sample("isthmus_agent_sync_statuses", {**site, "state": state}, by_state.get(state, 0),
                             help="Synced resources of this region by state")
