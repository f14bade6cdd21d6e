"""Logs and health of each region's OpenStack, read centrally on the real two-region OpenStack: neutron-server's
and nova-api's own log files read through the sites' agents (from the coordinator, and through the admin socket
with the coordinator stopped), secrets masked on the host, operators only (audited), and nova-api stopped and
started again showing in `isthmusctl health`, the metrics and the events."""

from __future__ import annotations

import contextlib
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keystoneauth1.exceptions
import openstack.exceptions
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import BIN, Proc, agent_cmd, coordinator_cmd, free_port, wait_for
from isthmus.core import pki
from openstack_cloud import ADMIN_CLOUD, TwoRegionCloud

pytestmark = [pytest.mark.filterwarnings(f"ignore::openstack.warnings.RemovedInSDK{v}0Warning:openstack")
              for v in (5, 6)]

SITES = {"one": ("RegionOne", "r1"), "two": ("RegionTwo", "r2")}


@dataclass
class Lab:
    cloud: TwoRegionCloud
    base: Path
    certs: Path
    address: str = ""
    metrics: int = 0
    coordinator: Proc | None = None
    agents: dict[str, Proc] = field(default_factory=dict)

    def tls(self, kind: str, name: str) -> list[str]:
        return ["--tls-ca", str(self.certs / "ca.pem"), "--tls-cert", str(self.certs / f"{kind}-{name}.pem"),
                "--tls-key", str(self.certs / f"{kind}-{name}.key")]

    def ctl(self, *args: str, role: str = "operator", check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([str(BIN / "isthmusctl"), "--coordinator", self.address, *self.tls("operator", role),
                              *args], capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            pytest.fail(f"isthmusctl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def local(self, site: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "isthmusctl"), "local", *args[:1], "--socket",
                               str(self.base / site / "admin.sock"), *args[1:]], capture_output=True, text=True,
                              timeout=120)

    def log_file(self, service: str, site: str) -> Path:
        assert self.cloud.base is not None
        return self.cloud.base / "logs" / f"{service}-{SITES[site][1]}.log"

    def health(self, site: str) -> dict[tuple[str, str], dict[str, Any]]:
        regions = json.loads(self.ctl("health", "--site", site, "-o", "json", role="viewer").stdout)
        return {(i["service"], i["kind"]): i for r in regions for i in r["report"].get("items", [])}

    def metric(self, name: str, site: str, **labels: str) -> float | None:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10).read().decode()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == name and s.labels.get("site") == site and \
                        all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def up_metric(self, site: str, service: str, kind: str) -> float | None:
        return self.metric("isthmus_openstack_up", site, service=service, kind=kind)


@pytest.fixture(scope="module")
def lab(two_region_cloud: TwoRegionCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A coordinator with mutual TLS (viewer and operator certificates) and metrics, agents of sites one and two
    reading their region's neutron-server and nova-api log files and checking its health every second."""
    base = tmp_path_factory.mktemp("logs")
    certs = base / "pki"
    pki.init_ca(certs)
    pki.issue(certs, "coordinator", "c1", ips=["127.0.0.1"])
    for site in SITES:
        pki.issue(certs, "agent", site)
    for role in ("viewer", "operator", "admin"):
        pki.issue(certs, "operator", role, role=role)
    lab = Lab(two_region_cloud, base, certs, metrics=free_port())
    ready = base / "addr"
    lab.coordinator = Proc("coordinator", coordinator_cmd(base / "coord", ready) + [
        "--tls-cert", str(certs / "coordinator-c1.pem"), "--tls-key", str(certs / "coordinator-c1.key"),
        "--tls-ca", str(certs / "ca.pem"), "--refusal-window", "0.5", "--metrics-listen",
        f"127.0.0.1:{lab.metrics}"], base / "coord.log")
    try:
        lab.address = str(wait_for(lambda: ready.exists() and ready.read_text().strip(), 60, "the coordinator"))
        for site in SITES:
            lab.ctl("site", "create", site, "--kind", "region", role="admin")
        for site, (region, _) in SITES.items():
            args = agent_cmd(site, lab.address, base, "--os-cloud", ADMIN_CLOUD, "--os-region", region,
                             "--os-config", str(two_region_cloud.clouds_yaml), "--health-interval", "1",
                             "--capacity-interval", "2",
                             "--log-file", f"neutron-server={lab.log_file('neutron-server', site)}",
                             "--log-file", f"nova-api={lab.log_file('nova-api', site)}",
                             "--redact", r"it-private-[0-9a-f]+", *lab.tls("agent", site))
            lab.agents[site] = Proc(f"agent-{site}", args, base / f"agent-{site}.log")
        wait_for(lambda: all(lab.health(s) for s in SITES), 60, "both regions' first health reports")
        yield lab
    finally:
        for proc in [*lab.agents.values(), *([lab.coordinator] if lab.coordinator else [])]:
            proc.stop()


def _fail_in_region_two(lab: Lab, regions: dict[str, Any], marker: str) -> None:
    """A request region two's neutron-server answers 404 (its access log line holds the marker), and one carrying
    secrets in its query string."""
    with pytest.raises(openstack.exceptions.NotFoundException):
        regions["RegionTwo"].network.get_network(marker)
    # Neutron may refuse the unknown filter (400): its access log has the request line either way.
    with contextlib.suppress(openstack.exceptions.SDKException, keystoneauth1.exceptions.ClientException):
        regions["RegionTwo"].network.get("/networks?password=hunter2-" + marker + "&name=it-private-c0ffee")


def test_a_failed_request_in_region_two_is_found_from_the_coordinator(lab: Lab, regions: dict[str, Any]) -> None:
    marker = f"it-missing-{uuid.uuid4().hex[:8]}"
    _fail_in_region_two(lab, regions, marker)
    listed = lab.ctl("logs", "--site", "two", "--list").stdout
    assert "neutron-server" in listed and "nova-api" in listed and str(lab.log_file("neutron-server", "two")) in listed

    def found() -> list[str]:
        out = lab.ctl("logs", "--site", "two", "--service", "neutron-server", "--grep", f"{marker}.*status: 404",
                      "--since", "10m").stdout
        return [ln for ln in out.splitlines() if marker in ln]

    lines = wait_for(found, 30, "the 404 in region two's neutron-server log")
    assert all(ln.startswith("two neutron-server: ") and "404" in ln for ln in lines), lines
    # Region one's neutron-server never saw it; both sites at once merge, each line saying whose it is.
    both = lab.ctl("logs", "--site", "one", "--site", "two", "--service", "neutron-server", "--grep", marker,
                   "-o", "json").stdout
    records = [json.loads(x) for x in both.splitlines()]
    assert records and {r["site"] for r in records} == {"two"}
    assert [r["time_unix_ms"] for r in records] == sorted(r["time_unix_ms"] for r in records)

    # The secrets of the query string were masked on the host: the password (oslo's pattern) and the agent's own
    # --redact pattern; a --grep for them finds nothing, the line itself is there.
    secret = lab.ctl("logs", "--site", "two", "--service", "neutron-server", "--grep", "password=").stdout
    assert "password=***" in secret and "hunter2" not in secret and "it-private-c0ffee" not in secret, secret
    assert lab.ctl("logs", "--site", "two", "--grep", "hunter2").stdout == ""
    assert "c0ffee" not in lab.ctl("logs", "--site", "two", "--since", "10m").stdout


def test_reading_logs_needs_the_operator_role_and_is_audited(lab: Lab) -> None:
    res = lab.ctl("logs", "--site", "two", "--service", "nova-api", "--since", "1m", role="viewer", check=False)
    assert res.returncode == 1 and "PERMISSION_DENIED" in res.stderr and "needs the operator role" in res.stderr
    lab.ctl("logs", "--site", "two", "--service", "nova-api", "--grep", "GET", "--since", "1m")
    # A pattern that could run away is refused (naming the flag) before any agent reads a line.
    res = lab.ctl("logs", "--site", "two", "--grep", "(a+)+$", check=False)
    assert res.returncode == 1 and "--grep: a repeat inside a repeat" in res.stderr
    for pattern in (r"(\w+)\1", "(?=x)y", "x" * 300):
        res = lab.ctl("logs", "--site", "two", "--grep", pattern, check=False)
        assert res.returncode == 1 and "--grep" in res.stderr, res.stderr

    def audited() -> list[tuple[str, bool, str]]:
        events = json.loads(lab.ctl("audit", "-o", "json", role="viewer").stdout)
        return [(e["who"], bool(e.get("allowed")), e["detail"]) for e in events
                if e["method"] == "/isthmus.v1.LogService/ReadLogs"]

    def both() -> bool:
        seen = audited()
        return any(w == "user:viewer" and not ok for w, ok, _ in seen) and \
            any(w == "user:operator" and ok and "site=two services=nova-api grep='GET'" in d for w, ok, d in seen)

    wait_for(both, 15, "the refusal and the read in the audit history")


def test_nova_api_stopped_in_region_two_shows_in_health_metrics_and_events(lab: Lab) -> None:
    key = ("compute", "endpoint")
    assert lab.health("two")[key]["state"] == "UP"
    wait_for(lambda: lab.up_metric("two", "compute", "endpoint") == 1.0, 15, "the compute endpoint's metric at 1")
    latency = lab.metric("isthmus_openstack_endpoint_latency_seconds", "two", service="compute")
    assert latency is not None and 0 < latency < 5
    # The capacity figures the agent reads for the capacity view come along (no read of their own).
    wait_for(lambda: lab.metric("isthmus_openstack_capacity", "two", figure="networks") is not None, 15,
             "region two's capacity figures")
    report = json.loads(lab.ctl("health", "--site", "two", "-o", "json", role="viewer").stdout)[0]["report"]
    assert "networks" in report["capacity"] and report["region"] == "RegionTwo"
    lab.cloud.stop_service("nova-api", "RegionTwo")
    try:
        down = wait_for(lambda: (h := lab.health("two")[key])["state"] == "DOWN" and h, 15,
                        "region two's compute endpoint DOWN in isthmusctl health")
        assert "ConnectError" in down["detail"] or "refused" in down["detail"].lower(), down
        # Nova's compute services cannot be listed meanwhile: one UNKNOWN row says why.
        assert lab.health("two")[("compute", "compute-service")]["state"] == "UNKNOWN"
        assert lab.health("one")[key]["state"] == "UP"  # region one's nova-api runs on
        wait_for(lambda: lab.up_metric("two", "compute", "endpoint") == 0.0, 15, "the metric at 0")
        table = lab.ctl("health", role="viewer").stdout.splitlines()
        assert table[1].startswith("two ") and " compute " in table[1] and "DOWN" in table[1], table[:3]
        events = lab.ctl("events", "--site", "two", "--kind", "health", "-o", "json", role="viewer").stdout
        assert "compute endpoint" in events and "is DOWN" in events
    finally:
        lab.cloud.start_service("nova-api", "RegionTwo")
    wait_for(lambda: lab.health("two")[key]["state"] == "UP", 30, "the compute endpoint UP again")
    wait_for(lambda: lab.up_metric("two", "compute", "endpoint") == 1.0, 15, "the metric back at 1")
    assert "is UP (was DOWN)" in lab.ctl("events", "--site", "two", "--kind", "health", role="viewer").stdout


def test_logs_and_health_through_the_admin_socket_with_the_coordinator_stopped(lab: Lab,
                                                                                regions: dict[str, Any]) -> None:
    marker = f"it-missing-{uuid.uuid4().hex[:8]}"
    _fail_in_region_two(lab, regions, marker)
    assert lab.coordinator is not None
    lab.coordinator.stop()

    def found() -> str:
        res = lab.local("two", "logs", "--service", "neutron-server", "--grep", marker, "--since", "10m")
        assert res.returncode == 0, res.stderr
        return res.stdout if "status: 404" in res.stdout else ""

    out = wait_for(found, 30, "the 404 through region two's admin socket")
    assert "hunter2" not in out and "it-private-c0ffee" not in out
    res = lab.local("two", "health")
    assert res.returncode == 0 and "compute" in res.stdout and "UP" in res.stdout, res.stderr
    res = lab.local("two", "logs", "--list")
    assert res.returncode == 0 and "neutron-server" in res.stdout
