"""isthmusctl local against a real agent cut off from every coordinator: overrides and the journal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Proc, agent_cmd, ctl, wait_for
from isthmus.agent.state import DesiredState, StateFile
from isthmus.core import model as m

SITE = "region-one"
NOWHERE = "127.0.0.1:1"  # nothing listens there: the agent runs partitioned
ADD_DC = ["--type", "bgp", "--local-address", "192.0.2.1", "--local-asn", "64512",
          "--remote-address", "198.51.100.9", "--remote-asn", "64999"]


def start_agent(procs: Callable[..., Proc], base: Path, log: str = "agent") -> tuple[Proc, str]:
    """An agent of SITE with no coordinator to reach, and its admin socket once it answers."""
    proc = procs(log, agent_cmd(SITE, NOWHERE, base, "--reconcile-interval", "1"), base / f"{log}.log")
    sock = str(base / SITE / "admin.sock")
    wait_for(lambda: local(sock, "status", check=False).returncode == 0, 30, f"the agent's admin socket {sock}")
    return proc, sock


def local(sock: str, *args: str, check: bool = True) -> Any:
    return ctl("local", "--socket", sock, *args, check=check)


def peerings(sock: str) -> dict[str, dict[str, Any]]:
    listed = json.loads(local(sock, "peerings", "-o", "json").stdout)
    return {p.get("desired", p.get("observed", {})).get("connection", ""): p for p in listed}


def state_of(sock: str, name: str) -> str:
    return str(peerings(sock).get(name, {}).get("observed", {}).get("state", ""))


def table_row(text: str, first: str) -> str:
    return next((line for line in text.splitlines() if line.split()[:1] == [first]), "")


def status_fields(sock: str) -> dict[str, str]:
    lines = local(sock, "status").stdout.splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def persist_desired(base: Path) -> None:
    """What a coordinator sent before the partition: one BGP peering at revision 3."""
    peering = m.DesiredPeering(
        "one-two", m.ConnectionType.BGP,
        local=m.Endpoint(SITE, "gw", "192.0.2.1", 64512, router_id="192.0.2.1"),
        remote=m.Endpoint("region-two", "gw", "192.0.2.2", 64513, router_id="192.0.2.2"),
        bgp=m.BgpParams(address_families=("ipv4-unicast",)),
    )
    StateFile(base / SITE / "state").save(DesiredState(SITE, 3, {"one-two": peering}))


def test_a_cut_off_site_is_maintained_through_local_overrides(tmp_path: Path,
                                                               procs: Callable[..., Proc]) -> None:
    persist_desired(tmp_path)
    _, sock = start_agent(procs, tmp_path)
    fields = status_fields(sock)
    assert (fields["partitioned"], fields["desired-revision"], fields["overrides"]) == ("yes", "3", "0")
    assert fields["link-down-since"].endswith(" ago")
    wait_for(lambda: state_of(sock, "one-two") == "PEERING_STATE_ESTABLISHED", what="one-two established")

    # Disabling a peering the site does not have is one line, exit 1, naming what there is.
    res = local(sock, "disable", "nope", check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("isthmusctl: error: NOT_FOUND: ") and "one-two" in res.stderr

    out = local(sock, "disable", "one-two", "--ttl", "15m", "--reason", "new optics").stdout
    assert table_row(out, "one-two").split()[:2] == ["one-two", "disable"] and "in 15m" in out
    wait_for(lambda: state_of(sock, "one-two") == "PEERING_STATE_DOWN", what="one-two held down")
    assert "disabled (expires in 1" in table_row(local(sock, "peerings").stdout, "one-two")
    assert local(sock, "enable", "one-two").stdout.startswith("enabled one-two")
    wait_for(lambda: state_of(sock, "one-two") == "PEERING_STATE_ESTABLISHED", what="one-two up again")

    # A new remote endpoint while cut off: realized at once (the fake driver), marked as added here.
    out = local(sock, "add", "dc", *ADD_DC, "--reason", "dc link").stdout
    assert "bgp to 198.51.100.9 AS 64999" in out
    wait_for(lambda: state_of(sock, "dc") == "PEERING_STATE_ESTABLISHED", what="dc established")
    row = table_row(local(sock, "peerings").stdout, "dc")
    assert "added locally" in row and "198.51.100.9 AS 64999" in row and "established" in row
    clash = local(sock, "add", "one-two", *ADD_DC, check=False)
    assert clash.returncode == 1 and "ALREADY_EXISTS" in clash.stderr
    bad = local(sock, "add", "bad", *ADD_DC, "--type", "vxlan", check=False)
    assert bad.returncode == 1 and "INVALID_ARGUMENT: vxlan.vni" in bad.stderr

    assert table_row(local(sock, "overrides").stdout, "dc").split()[:2] == ["dc", "add"]
    assert status_fields(sock)["overrides"] == "1"
    journal = local(sock, "journal").stdout
    assert table_row(journal, "TIME").split() == ["TIME", "KIND", "CONNECTION", "MESSAGE"]
    assert any("override" in line and " dc " in line and "added locally" in line for line in journal.splitlines())
    assert len(local(sock, "journal", "--limit", "2").stdout.splitlines()) == 3

    assert local(sock, "remove-override", "dc").stdout.strip() == "removed the local add override of dc"
    wait_for(lambda: "dc" not in peerings(sock), what="dc gone from the peerings")
    assert json.loads(local(sock, "overrides", "-o", "json").stdout) == []

    # An override with a TTL ends by itself, and the journal says so.
    local(sock, "add", "short", *ADD_DC, "--ttl", "1s")
    wait_for(lambda: "short" not in peerings(sock) and local(sock, "overrides", "-o", "json").stdout.strip() == "[]",
             timeout=15, what="the 1s override to expire")
    wait_for(lambda: "override expired" in local(sock, "journal").stdout, what="the expiry in the journal")


def test_overrides_survive_an_agent_restart(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    agent, sock = start_agent(procs, tmp_path)
    local(sock, "add", "dc", *ADD_DC, "--ttl", "1h", "--reason", "dc link")
    wait_for(lambda: state_of(sock, "dc") == "PEERING_STATE_ESTABLISHED", what="dc established")

    assert agent.stop() == 0
    _, sock = start_agent(procs, tmp_path, "agent-again")
    row = table_row(local(sock, "overrides").stdout, "dc")
    assert row.split()[:2] == ["dc", "add"] and "dc link" in row
    assert "in 1h" in row or "in 59m" in row
    wait_for(lambda: state_of(sock, "dc") == "PEERING_STATE_ESTABLISHED", what="dc realized after the restart")
    assert status_fields(sock)["overrides"] == "1"
    assert "1 local overrides" in local(sock, "journal").stdout


def test_local_add_errors_name_the_end_and_ttl_is_bounded(tmp_path: Path, procs: Callable[..., Proc]) -> None:
    procs("agent", agent_cmd("region-one", "127.0.0.1:1", tmp_path), tmp_path / "agent.log")
    sock = str(tmp_path / "region-one" / "admin.sock")
    wait_for(lambda: Path(sock).exists(), 20, "the admin socket")
    bad = ctl("local", "--socket", sock, "add", "x", "--type", "bgp", "--local-address", "192.0.2.1",
              "--local-asn", "65001", "--remote-address", "192.0.2.9", "--remote-asn", "23456", check=False)
    assert bad.returncode == 1 and "peering.remote.asn:" in bad.stderr
    ok = ctl("local", "--socket", sock, "add", "y", "--type", "vxlan", "--local-address", "192.0.2.1",
             "--local-asn", "65001", "--remote-address", "192.0.2.9", "--remote-asn", "65009", "--vni", "77",
             "-o", "json")
    assert '"site": "region-one"' in ok.stdout
    dis = ctl("local", "--socket", sock, "disable", "y", check=False)
    assert dis.returncode == 1 and "FAILED_PRECONDITION" in dis.stderr and "added locally" in dis.stderr
