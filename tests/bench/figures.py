"""What a scenario reports: figures next to the reference measured in the same run, and their statistics."""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Figure:
    """One measured figure and the reference it is compared with (``ratio`` = value / reference)."""

    size: str  # what the scenario ran at: "64 clients", "100 sites", ...
    name: str  # what was measured, with its statistic: "convergence p99"
    unit: str
    value: float
    reference_name: str  # what the reference is, in words
    reference: float | None
    better: str = "lower"  # "lower" | "higher": which direction is good for value and ratio
    target: str = ""  # the goal, in words ("ratio >= 0.5"); a goal, never asserted
    met: bool | None = None  # whether the goal was met in this run (None: no goal)
    positive: bool = True  # value and reference are expected to be > 0 (the smoke test checks it)

    @property
    def ratio(self) -> float | None:
        if self.reference is None or self.reference == 0:
            return None
        return self.value / self.reference

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


@dataclass
class ScenarioResult:
    name: str
    title: str
    params: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)  # every sample, for whoever wants to look again
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # defects the scenario ran into (worked around)
    cpu_seconds: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> process -> CPU seconds
    duration_s: float = 0.0
    code: dict[str, Any] = field(default_factory=dict)  # the commit when the scenario started (code_version)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "params": self.params,
            "duration_s": round(self.duration_s, 3),
            "code": self.code,
            "figures": [f.to_json() for f in self.figures],
            "notes": self.notes,
            "problems": self.problems,
            "cpu_seconds": self.cpu_seconds,
            "raw": self.raw,
        }


# ---------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds, and the number of trials."""
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": max(seconds) * 1000,
    }


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def latency_figures(
    size: str, what: str, ours: Sequence[float], reference_name: str, ref: Sequence[float], target: str = "",
    p99_goal_ms: float | None = None, ratio_goal: float | None = None,
) -> list[Figure]:
    """Three figures, p50 / p99 / max, each against the same statistic of the reference."""
    a, b = latency_summary(ours), latency_summary(ref)
    out = []
    for stat in ("p50", "p99", "max"):
        fig = Figure(size, f"{what} {stat}", "ms", a[f"{stat}_ms"], f"{reference_name} {stat}", b[f"{stat}_ms"])
        if stat == "p99" and p99_goal_ms is not None:
            fig.target = target or f"p99 < {p99_goal_ms:g} ms"
            fig.met = fig.value < p99_goal_ms
        elif ratio_goal is not None and stat != "max":
            fig.target = target or f"ratio <= {ratio_goal:g}"
            fig.met = fig.ratio is not None and fig.ratio <= ratio_goal
        out.append(fig)
    return out


# ---------------------------------------------------------------- processes


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) of a process from /proc/PID/status (empty when it is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15 of stat)


def add_cpu(acc: dict[str, dict[str, float]], phase: str, used: dict[str, float]) -> None:
    """Add one measurement's CPU seconds (``CpuMeter.stop``) to the totals of ``phase``."""
    mine = acc.setdefault(phase, {})
    for k, v in used.items():
        mine[k] = round(mine.get(k, 0.0) + v, 3)


class CpuMeter:
    """CPU seconds each named process used between ``start`` and ``stop`` (pid 0: this process)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        self._wall = 0.0

    def _now(self) -> dict[str, float]:
        return {name: (time.process_time() if pid == 0 else proc_cpu_seconds(pid)) for name, pid in self.pids.items()}

    def start(self) -> CpuMeter:
        self._start = self._now()
        self._wall = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        end = self._now()
        out = {name: round(end[name] - self._start[name], 3) for name in self.pids}
        out["wall"] = round(time.monotonic() - self._wall, 3)
        return out


# ---------------------------------------------------------------- the code and the machine


def code_version(repo: Path) -> dict[str, Any]:
    """The commit measured, and the files that differed from it (other than the results themselves)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                                  timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
               if not line[3:].startswith("docs/performance.")]
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or "unknown", "modified_files": changed}



def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gb = 0.0
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        ram_gb = round(int(m.group(1)) / 1024 / 1024, 1) if m else 0.0
    except OSError:
        pass
    try:
        etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True, timeout=10).stdout
        etcd_version = etcd.splitlines()[0].split(":", 1)[1].strip() if etcd else "unknown"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        etcd_version = "unknown"
    import grpc

    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "etcd": etcd_version,
        "grpcio": grpc.__version__,
        "kernel": platform.release(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
