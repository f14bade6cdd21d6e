"""The coordinator's Prometheus metrics: computed from its state at every scrape (names in docs/operations.md)."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Histogram

import isthmus
from isthmus.coordinator.health import health_samples
from isthmus.core.metrics import LoopCollector, Sample, new_registry

PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class CoordinatorMetrics:
    """Collectors over the coordinator's parts; ``push_seconds`` is observed by the agent sessions."""

    def __init__(self, coordinator: Any) -> None:
        self.c = coordinator
        self.registry = new_registry()
        self.push_seconds = Histogram(
            "isthmus_coordinator_push_seconds",
            "Seconds from a configuration change reaching this coordinator to the delta sent to a site's agent",
            buckets=PUSH_BUCKETS, registry=self.registry)
        self.refusals = Counter(
            "isthmus_coordinator_refusals", "Calls refused before they ran, by reason (unauthenticated, "
            "permission_denied, rate_limited)", ["reason"], registry=self.registry)
        auth = getattr(coordinator, "auth", None)
        if auth is not None:
            for reason, n in auth.refused.items():
                self.refusals.labels(reason).inc(n)
            auth.on_refusal = lambda reason: self.refusals.labels(reason).inc()
        LoopCollector(self._collect, registry=self.registry)

    def _collect(self) -> Iterable[Sample]:
        c = self.c
        yield Sample("isthmus_coordinator_info", {"version": isthmus.__version__, "address": c.address}, 1,
                     help="This coordinator's version and address")
        membership = getattr(c, "membership", None)
        if membership is not None:
            yield Sample("isthmus_coordinator_leader", {}, 1 if membership.is_leader.is_set() else 0,
                         help="1 while this coordinator is the leader (garbage collection, trimming)")
        planner = c.planner
        if planner is not None:
            yield Sample("isthmus_config_revision", {}, planner.revision, help="etcd revision of the planner's view")
            yield Sample("isthmus_sites", {}, len(planner.sites), help="Sites defined")
            yield Sample("isthmus_connections", {}, len(planner.connections), help="Connections defined")
        agents = c.agents
        if agents is not None:
            yield Sample("isthmus_agents_connected", {}, len(agents.sessions),
                         help="Agents whose stream is held by this coordinator")
            states: collections.Counter[str] = collections.Counter()
            for session in list(agents.sessions.values()):
                states.update(o.state.value for o in session.record.observed)
            for state in ("established", "connecting", "down", "error"):
                yield Sample("isthmus_peerings", {"state": state}, states.get(state, 0),
                             help="Peerings by observed state, as reported by the agents connected here")
            yield from health_samples(agents.health)
        sync = c.sync_planner
        if sync is not None:
            by_state = collections.Counter(st.state.value for st in sync.view.statuses.values())
            for state in ("PENDING", "IN_PROGRESS", "IN_SYNC", "CONFLICT", "FAILED", "HELD", "REMOVED"):
                yield Sample("isthmus_sync_statuses", {"state": state}, by_state.get(state, 0),
                             help="Synced resources per region, by state")
            rollouts = collections.Counter(ro.state.value for ro, _ in sync.view.rollouts.values())
            for state, n in sorted(rollouts.items()):
                yield Sample("isthmus_sync_rollouts", {"state": state}, n, help="Controlled image rollouts by state")
        views = c.views
        if views is not None:
            from isthmus.coordinator.multisite.views_planner import usage_of

            for (project, resource), (hard, soft) in sorted(views.state.quotas.items()):
                total = sum(u for u, _, _ in usage_of(views.state, project, resource).values())
                labels = {"project": project, "resource": resource}
                yield Sample("isthmus_quota_usage", labels, total, help="Usage summed over the regions")
                if hard > 0:
                    yield Sample("isthmus_quota_usage_ratio", labels, total / hard,
                                 help="Usage summed over the regions / the global hard limit")
                if soft > 0:
                    yield Sample("isthmus_quota_soft_ratio", labels, total / soft,
                                 help="Usage summed over the regions / the global soft limit")
            for kind, n in sorted(views.index.stats().items()):
                if kind in ("port", "floating_ip", "router_gateway", "subnet"):
                    yield Sample("isthmus_address_records", {"kind": kind}, n,
                                 help="Address records indexed, by kind")
