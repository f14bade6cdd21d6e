"""One region's health as its agent sees it: every endpoint of the region in the catalog (does it answer, how
fast), Nova's compute services and Neutron's agents with their state. Reads only; each probe is bounded."""

from __future__ import annotations

import time
from typing import Any

import httpx
from openstack.connection import Connection

from isthmus.cloud.session import CloudError, SpecError, calls, field_text, has_service, request

PROBE_TIMEOUT = 5.0  # seconds an endpoint has to answer


def _item(service: str, kind: str, name: str, state: str, latency: float = 0.0, detail: str = "") -> dict[str, Any]:
    return {"service": service, "kind": kind, "name": name, "state": state, "latency_seconds": latency,
            "detail": detail[:300]}


def catalog_endpoints(conn: Connection) -> list[tuple[str, str, str]]:
    """(service type, interface, URL) of every endpoint of the connection's region in the token's catalog."""
    with calls(conn, "service catalog"):
        auth: Any = conn.session.auth
        access = auth.get_access(conn.session)
    region = conn.config.region_name
    out = []
    for service in access.service_catalog.catalog or []:
        for ep in service.get("endpoints", []):
            if region and (ep.get("region_id") or ep.get("region")) != region:
                continue
            out.append((str(service.get("type", "?")), str(ep.get("interface", "public")), str(ep.get("url", ""))))
    return sorted(set(out))


def probe(url: str, verify: Any = True) -> tuple[str, float, str]:
    """An unauthenticated GET of the endpoint (its version document): UP if it answers below 500."""
    started = time.monotonic()
    try:
        resp = httpx.get(url, timeout=PROBE_TIMEOUT, verify=verify, follow_redirects=False)
    except httpx.HTTPError as exc:
        return "DOWN", time.monotonic() - started, f"{type(exc).__name__}: {exc}"
    latency = time.monotonic() - started
    if resp.status_code >= 500:
        return "DOWN", latency, f"HTTP {resp.status_code}"
    return "UP", latency, ""


def region_health(conn: Connection) -> list[dict[str, Any]]:
    """``[{"service", "kind", "name", "state", "latency_seconds", "detail"}]``.

    kind ``endpoint`` (name "INTERFACE URL"): UP when the URL answers (any HTTP status below 500), else DOWN.
    kind ``compute-service`` and ``network-agent`` (name "BINARY@HOST"): UP, DOWN (Nova's state down, Neutron's
    agent not alive) or DISABLED (Nova's status disabled, Neutron's admin_state_up false). A service whose list
    cannot be read gives one UNKNOWN row saying why. Raises SpecError when the region refuses the credentials.
    """
    items = []
    try:
        endpoints = catalog_endpoints(conn)
    except CloudError as exc:
        return [_item("identity", "endpoint", "token", "DOWN", detail=str(exc))]
    verify = conn.session.verify
    for service, interface, url in endpoints:
        state, latency, detail = probe(url, verify)
        items.append(_item(service, "endpoint", f"{interface} {url}", state, latency, detail))
    items += _compute_services(conn) + _network_agents(conn)
    return items


def _compute_services(conn: Connection) -> list[dict[str, Any]]:
    if not has_service(conn, "compute"):
        return []
    try:
        with calls(conn, "compute services"):
            services = request(conn, "compute", "GET", "/os-services").get("services") or []
    except (CloudError, SpecError) as exc:
        return [_item("compute", "compute-service", "(all)", "UNKNOWN", detail=str(exc))]
    out = []
    for s in services:
        state = "DISABLED" if s.get("status") == "disabled" else ("UP" if s.get("state") == "up" else "DOWN")
        out.append(_item("compute", "compute-service", f"{field_text(s, 'binary')}@{field_text(s, 'host')}", state,
                         detail=field_text(s, "disabled_reason") if state == "DISABLED" else
                         ("" if state == "UP" else f"last seen {field_text(s, 'updated_at') or 'never'}")))
    return out


def _network_agents(conn: Connection) -> list[dict[str, Any]]:
    if not has_service(conn, "network"):
        return []
    try:
        with calls(conn, "network agents"):
            agents = request(conn, "network", "GET", "/v2.0/agents").get("agents") or []
    except SpecError:
        return []  # a Neutron without the agent extension has no agents to show
    except CloudError as exc:
        return [_item("network", "network-agent", "(all)", "UNKNOWN", detail=str(exc))]
    out = []
    for a in agents:
        state = "DISABLED" if a.get("admin_state_up") is False else ("UP" if a.get("alive") else "DOWN")
        out.append(_item("network", "network-agent", f"{field_text(a, 'binary')}@{field_text(a, 'host')}", state,
                         detail="" if state == "UP" else f"last heartbeat {field_text(a, 'heartbeat_timestamp')}"))
    return out
