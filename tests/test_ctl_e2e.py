"""isthmusctl against a real coordinator process and agent: the operator's view end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Proc, agent_cmd, ctl, wait_for


def test_create_show_update_delete_with_json_output(coordinator: str) -> None:
    c = ("--coordinator", coordinator)
    ctl(*c, "site", "create", "region-one", "--kind", "region", "--label", "dc=fra1")
    ctl(*c, "site", "create", "region-two", "--kind", "region")
    ctl(*c, "endpoint", "create", "region-one/gw", "--address", "192.0.2.1", "--asn", "65001",
        "--property", "rack=r1")
    ctl(*c, "endpoint", "create", "region-two/gw", "--address", "192.0.2.2", "--asn", "4200000000")
    out = ctl(*c, "connection", "create", "one-two", "--a", "region-one/gw", "--b", "region-two/gw",
              "--type", "vxlan", "--vni", "5001", "-o", "json").stdout
    conn = json.loads(out)
    assert conn["vxlan"]["vni"] == 5001 and conn["type"] == "CONNECTION_TYPE_VXLAN"

    table = ctl(*c, "endpoint", "list").stdout
    assert "4200000000" in table and "rack=r1" in table and table.splitlines()[0].split()[:3] == [
        "SITE", "NAME", "ADDRESS"]

    ctl(*c, "connection", "update", "one-two", "--mtu", "1400", "--admin-state", "down")
    got = json.loads(ctl(*c, "connection", "get", "one-two", "-o", "json").stdout)
    assert got["vxlan"]["mtu"] == 1400 and got["admin_state"] == "ADMIN_STATE_DOWN"
    assert got["vxlan"]["vni"] == 5001

    # A stale --version is refused with ABORTED and changes nothing.
    stale = ctl(*c, "connection", "update", "one-two", "--mtu", "1300", "--version", str(int(conn["version"])),
                check=False)
    assert stale.returncode == 1 and "ABORTED" in stale.stderr
    assert json.loads(ctl(*c, "connection", "get", "one-two", "-o", "json").stdout)["vxlan"]["mtu"] == 1400

    ctl(*c, "connection", "delete", "one-two")
    ctl(*c, "endpoint", "delete", "region-one/gw")
    listed = json.loads(ctl(*c, "endpoint", "list", "-o", "json").stdout)
    assert [e["name"] for e in listed] == ["gw"] and listed[0]["site"] == "region-two"


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["endpoint", "create", "nowhere/gw", "--address", "192.0.2.1", "--asn", "1"], "NOT_FOUND", "site:"),
        (["site", "create", "x", "--kind", "cell"], "INVALID_ARGUMENT", "parent:"),
        (["site", "get", "missing"], "NOT_FOUND", "missing"),
        (["connection", "delete", "missing"], "NOT_FOUND", "missing"),
    ],
)
def test_errors_are_one_line_and_exit_1(coordinator: str, args: list[str], code: str, text: str) -> None:
    res = ctl("--coordinator", coordinator, *args, check=False)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"isthmusctl: error: {code}: ") and text in lines[0]


def test_unreachable_coordinator_says_where_it_tried(port: int) -> None:
    res = ctl("--coordinator", f"127.0.0.1:{port}", "--timeout", "2", "site", "list", check=False)
    assert res.returncode == 1 and "UNAVAILABLE" in res.stderr and f"127.0.0.1:{port}" in res.stderr


def test_status_and_local_views_of_a_converged_site(coordinator: str, tmp_path: Path,
                                                    procs: Callable[..., Proc]) -> None:
    c = ("--coordinator", coordinator)
    for site in ("region-one", "region-two"):
        procs(site, agent_cmd(site, coordinator, tmp_path), tmp_path / f"{site}.log")
    ctl(*c, "site", "create", "region-one", "--kind", "region")
    ctl(*c, "site", "create", "region-two", "--kind", "region")
    ctl(*c, "endpoint", "create", "region-one/gw", "--address", "2001:db8::1", "--asn", "65001",
        "--router-id", "10.0.0.1")
    ctl(*c, "endpoint", "create", "region-two/gw", "--address", "2001:db8::2", "--asn", "65002",
        "--router-id", "10.0.0.2")
    ctl(*c, "connection", "create", "one-two", "--a", "region-one/gw", "--b", "region-two/gw", "--type", "bgp")
    out = ctl(*c, "status", "--wait-established", "--wait-timeout", "30").stdout
    assert "region-one" in out and "1/1" in out
    statuses = json.loads(ctl(*c, "status", "-o", "json").stdout)
    one = next(s for s in statuses if s["site"] == "region-one")
    assert one["connected"] and one["peerings"][0]["observed"]["state"] == "PEERING_STATE_ESTABLISHED"
    assert one["peerings"][0]["desired"]["bgp"]["address_families"] == ["ipv6-unicast"]

    sock = str(tmp_path / "region-one" / "admin.sock")
    local = ctl("local", "--socket", sock, "status").stdout
    assert "region-one" in local and "connected" in local
    peerings = ctl("local", "--socket", sock, "peerings").stdout
    assert "one-two" in peerings and "established" in peerings and "2001:db8::2" in peerings
    resync = ctl("local", "--socket", sock, "resync", "-o", "json").stdout
    assert json.loads(resync)["peerings"] == 1


def test_an_external_site_holds_remote_endpoints_and_expects_no_agent(coordinator: str, tmp_path: Path,
                                                                      procs: Callable[..., Proc]) -> None:
    c = ("--coordinator", coordinator)
    procs("region-one", agent_cmd("region-one", coordinator, tmp_path), tmp_path / "region-one.log")
    ctl(*c, "site", "create", "region-one", "--kind", "region")
    ctl(*c, "site", "create", "dc-east", "--kind", "external", "--description", "datacenter router")
    ctl(*c, "endpoint", "create", "region-one/gw", "--address", "192.0.2.1", "--asn", "65001")
    refused = ctl(*c, "endpoint", "create", "dc-east/rtr", "--address", "198.51.100.7", "--asn", "64999",
                  check=False)
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT: role: site dc-east is external" in refused.stderr
    assert "dc-east/rtr" not in ctl(*c, "endpoint", "list").stdout, "a refused endpoint was stored"
    ctl(*c, "endpoint", "create", "dc-east/rtr", "--address", "198.51.100.7", "--asn", "64999", "--role", "remote")
    ctl(*c, "connection", "create", "one-dc", "--a", "region-one/gw", "--b", "dc-east/rtr", "--type", "bgp")

    out = ctl(*c, "status", "--wait-established", "--wait-timeout", "30").stdout
    dc_row = next(line for line in out.splitlines() if line.startswith("dc-east"))
    assert "external (no agent)" in dc_row and "disconnected" not in dc_row
    statuses = {s["site"]: s for s in json.loads(ctl(*c, "status", "-o", "json").stdout)}
    assert statuses["dc-east"].get("external") is True and not statuses["dc-east"].get("connected")
    assert statuses["region-one"].get("external") is not True
    peering = statuses["region-one"]["peerings"][0]
    assert peering["desired"]["remote"]["address"] == "198.51.100.7"
    assert peering["observed"]["state"] == "PEERING_STATE_ESTABLISHED"

    rogue = procs("dc-east", agent_cmd("dc-east", coordinator, tmp_path), tmp_path / "dc-east.log")
    wait_for(lambda: "is external: it runs no isthmus agent" in rogue.output(), 20, "the agent's refusal")
    assert not json.loads(ctl(*c, "status", "dc-east", "-o", "json").stdout).get("connected")
