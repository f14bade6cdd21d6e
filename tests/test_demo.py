"""`make demo` end to end: the embedded default converges a real mesh and exits 0."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (Debian package etcd-server)")
def test_demo_converges_and_cleans_up() -> None:
    res = subprocess.run([sys.executable, "-m", "isthmus.coordinator.demo", "--timeout", "60"],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "demo converged: every peering ESTABLISHED" in res.stdout
    status = res.stdout.split("status --wait-established", 1)[1]
    for site, count in (("region-one", "4/4"), ("region-two", "3/3"), ("cell-two-a", "2/2")):
        row = next(line for line in status.splitlines() if line.startswith(site + " "))
        assert "connected" in row and count in row, row
    leftover = subprocess.run(["pgrep", "-f", "isthmus-demo-"], capture_output=True, text=True)
    assert leftover.stdout.strip() == "", "demo processes were left running"
