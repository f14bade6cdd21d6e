"""Prometheus metrics of a coordinator and an agent process, scraped over loopback HTTP while a mesh converges."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc

from conftest import BIN, Proc, agent_cmd, coordinator_cmd, free_port, wait_for
from isthmus.v1 import api_pb2 as api
from isthmus.v1 import api_pb2_grpc
from isthmus.v1 import types_pb2 as pb

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(port: int) -> dict[str, float]:
    """``name{labels}`` -> value, from one scrape (the text format, comments skipped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:  # noqa: S310 (loopback)
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


def test_coordinator_and_agent_metrics_follow_the_mesh(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    cport, aports = free_port(), {"one": free_port(), "two": free_port()}
    ready = tmp_path / "addr"
    procs("coordinator", [*coordinator_cmd(tmp_path / "coord", ready), "--metrics-listen", f"127.0.0.1:{cport}"],
          tmp_path / "coord.log")
    addr = wait_for(lambda: ready.exists() and ready.read_text().strip(), 30, "the coordinator")
    for site, port in aports.items():
        procs(f"agent-{site}", agent_cmd(site, addr, tmp_path, "--metrics-listen", f"127.0.0.1:{port}"),
              tmp_path / f"agent-{site}.log")
    channel = grpc.insecure_channel(addr)
    sites, eps = api_pb2_grpc.SiteServiceStub(channel), api_pb2_grpc.EndpointServiceStub(channel)
    for i, site in enumerate(aports, 1):
        sites.CreateSite(pb.Site(name=site, kind=pb.SITE_KIND_REGION))
        eps.CreateEndpoint(pb.Endpoint(site=site, name="gw", address=f"192.0.2.{i}", asn=64500 + i))
    wait_for(lambda: scrape(cport).get("isthmus_agents_connected") == 2, 30, "both agents counted")
    api_pb2_grpc.ConnectionServiceStub(channel).CreateConnection(pb.Connection(
        name="one-two", type=pb.CONNECTION_TYPE_BGP, a=pb.EndpointRef(site="one", name="gw"),
        b=pb.EndpointRef(site="two", name="gw")))

    established = 'isthmus_peerings{state="established"}'
    coord = wait_for(lambda: (got := scrape(cport)).get(established) == 2 and got, 30,
                     "both ends established in the coordinator's metrics")
    assert coord["isthmus_sites"] == 2 and coord["isthmus_connections"] == 1
    assert coord["isthmus_coordinator_push_seconds_count"] >= 2  # the delta to each agent was timed
    assert coord["isthmus_coordinator_leader"] == 1
    # The standard process series, next to isthmus's.
    assert coord["process_cpu_seconds_total"] > 0 and coord["process_resident_memory_bytes"] > 0
    assert coord["process_open_fds"] > 0
    for site, port in aports.items():
        key = f'isthmus_agent_peerings{{site="{site}",state="established"}}'
        agent = wait_for(lambda port=port, key=key: (got := scrape(port)).get(key) == 1 and got, 15,
                         f"{site} established")
        assert agent[f'isthmus_agent_connected{{site="{site}"}}'] == 1
        assert agent[f'isthmus_agent_desired_revision{{site="{site}"}}'] >= 1
        assert agent["isthmus_agent_reconcile_seconds_count"] >= 1
        count = agent["isthmus_agent_reconcile_seconds_count"]
        assert agent['isthmus_agent_reconcile_seconds_bucket{le="+Inf"}'] == count
        assert agent["process_cpu_seconds_total"] > 0 and agent["process_resident_memory_bytes"] > 0
        assert agent["process_open_fds"] > 0

    # A deleted connection leaves the gauges.
    api_pb2_grpc.ConnectionServiceStub(channel).DeleteConnection(api.DeleteConnectionRequest(name="one-two"))
    wait_for(lambda: scrape(cport).get(established) == 0, 15, "no peering left")


def test_a_bad_metrics_address_is_refused_at_start(tmp_path: Path) -> None:
    for binary, extra in (("isthmus-agent", ["--site", "one"]), ("isthmus-coordinator", [])):
        res = subprocess.run([str(BIN / binary), *extra, "--metrics-listen", "localhost:http"], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 2 and "--metrics-listen" in res.stderr, res.stderr
