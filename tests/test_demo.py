"""`make demo` end to end: the embedded default converges a real mesh and exits 0."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (Debian package etcd-server)")


def run_demo(*args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "isthmus.coordinator.demo", "--timeout", "60", *args],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "demo converged: every peering ESTABLISHED" in res.stdout
    leftover = subprocess.run(["pgrep", "-f", "isthmus-demo-"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "demo processes were left running"
    return res.stdout


def rows(out: str) -> dict[str, str]:
    status = out.split("status --wait-established", 1)[1]
    return {line.split()[0]: line for line in status.splitlines() if line.strip() and not line.startswith("SITE")}


def test_demo_with_the_fake_driver() -> None:
    out = run_demo("--fake")
    table = rows(out)
    for site, count in (("region-one", "4/4"), ("region-two", "3/3"), ("cell-two-a", "2/2")):
        assert "connected" in table[site] and count in table[site] and "fake" in table[site], table[site]


def test_demo_with_the_kernel_drivers_in_namespaces(netns_reason: str) -> None:
    if netns_reason:
        pytest.skip(netns_reason)
    out = run_demo()
    table = rows(out)
    for site in ("region-one", "region-two", "cell-two-a"):
        assert "connected" in table[site] and "4/4" in table[site] and "bgp,vxlan" in table[site], table[site]
    assert "ping 10.200.0.2: reachable" in out and "ping 10.200.0.3: reachable" in out
    # Each site receives the two other sites' prefixes over its BGP sessions.
    peerings = out.split("local --socket", 1)[1]
    bgp_rows = [line for line in peerings.splitlines() if " bgp " in line]
    assert len(bgp_rows) == 2, bgp_rows
    for row in bgp_rows:
        cells = row.split()
        received = cells[cells.index("established") + 1]
        assert int(received) >= 1, row
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.count("isd") == 0
