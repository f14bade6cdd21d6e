"""Every benchmark scenario (tests/bench, `make bench`) runs at a tiny size and produces its figures.

Only that figures come out, positive where they must be, each next to its
reference: timings are `make bench`'s business, never asserted here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench.run import SCENARIOS

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None,
                                reason="etcd is not installed (Debian package etcd-server)")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario_produces_figures_with_references(scenario: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--tiny", "--quiet", "--scenario", scenario,
         "--output-dir", str(out), "--work-dir", str(tmp_path / "work"),
         "--agent-state-dir", str(tmp_path / "agents")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, f"the {scenario} scenario failed:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    doc = json.loads((out / "performance.json").read_text())
    assert doc["failures"] == {}
    assert doc["machine"]["cores"] > 0 and doc["machine"]["python"]
    (result,) = doc["scenarios"]
    assert result["name"] == scenario
    figures = result["figures"]
    assert figures, f"{scenario} produced no figures"
    for f in figures:
        assert f["reference_name"], f
        if f["positive"]:
            assert f["value"] > 0 and f["reference"] is not None and f["reference"] > 0, f
            assert f["ratio"] == pytest.approx(f["value"] / f["reference"]), f
        else:
            assert f["value"] >= 0, f
    if scenario in ("fanout", "coordinators"):  # the agents and the reference's watchers live in 2 load processes
        assert result["params"]["load_processes"] == 2
        for phase in ("isthmus trials", "etcd trials"):
            assert {"load 1", "load 2"} <= set(result["cpu_seconds"][phase]), result["cpu_seconds"]
        assert any("2 load processes" in note for note in result["notes"]), result["notes"]
    table = (out / "performance.md").read_text()
    assert "| scenario | size | figure |" in table and result["title"] in table
