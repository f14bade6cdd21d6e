"""docs/performance.md (the table a reader wants) and docs/performance.json (every raw number)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .figures import Figure, ScenarioResult


def _num(x: float | None) -> str:
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _goal(f: Figure) -> str:
    if not f.target:
        return ""
    mark = {True: "met", False: "**missed**", None: ""}[f.met]
    return f"{f.target}: {mark}" if mark else f.target


def markdown(doc: dict[str, Any], results: list[ScenarioResult], failures: dict[str, str]) -> str:
    mach = doc["machine"]
    lines = [
        "# isthmus performance",
        "",
        "Written by `make bench` (`python -m tests.bench`, code in `tests/bench/`); the raw numbers of every",
        "trial and run are in `docs/performance.json`. Each figure is compared with a reference measured in the",
        "same run on the same machine; *ratio* = figure / reference. Targets are goals, not assertions.",
        "",
        f"Measured {doc['started']} in {doc['duration_s']:.0f} s on: {mach['cpu']}, {mach['cores']} cores, "
        f"{mach['ram_gb']} GB RAM, Python {mach['python']}, etcd {mach['etcd']}, grpcio {mach['grpcio']}, "
        f"Linux {mach['kernel']} (load average at start: {', '.join(str(x) for x in mach['load_average_at_start'])}).",
        "",
    ]
    code = doc.get("code") or {}
    if code:
        dirty = code.get("modified_files") or []
        lines += [f"Code: commit {code.get('commit')}" + (f" with uncommitted changes to {', '.join(dirty)}."
                                                          if dirty else ".")]
        moved = [f"{r.title} started at {r.code.get('commit')}" + (" (with uncommitted changes)"
                                                                  if r.code.get("modified_files") else "")
                 for r in results if r.code and r.code != code]
        if moved:
            lines.append("The code changed while the benchmark ran: " + "; ".join(moved) + ".")
        lines.append("")
    if doc.get("caveat"):
        lines += [f"> {doc['caveat']}", ""]
    lines += [
        "| scenario | size | figure | value | reference (same run) | reference value | ratio | target |",
        "| --- | --- | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for r in results:
        for f in r.figures:
            ratio = f.ratio
            lines.append(
                f"| {r.title} | {f.size} | {f.name} | {_num(f.value)} {f.unit} | {f.reference_name} | "
                f"{_num(f.reference)} {f.unit if f.reference is not None else ''} | "
                f"{_num(ratio) if ratio is not None else 'n/a'} | {_goal(f)} |"
            )
    for name, error in failures.items():
        lines.append(f"| {name} | | **failed**: {error.splitlines()[0][:200] if error else ''} | | | | | |")
    lines.append("")
    for r in results:
        lines += [f"## {r.title}", ""]
        params = ", ".join(f"{k} {v}" for k, v in r.params.items())
        lines.append(f"Parameters: {params}; took {r.duration_s:.0f} s.")
        lines.append("")
        for note in r.notes:
            lines.append(f"- {note}")
        for problem in r.problems:
            lines.append(f"- **Problem found:** {problem}")
        if r.cpu_seconds:
            lines.append("- CPU seconds used during the measured phases (load = the harness, with the API clients "
                         "and the simulated agents that no load process holds; load k = load process k): "
                         + "; ".join(
                             f"{phase}: " + ", ".join(f"{k} {v:g}" for k, v in used.items())
                             for phase, used in r.cpu_seconds.items()))
        lines.append("")
    if doc.get("how"):
        lines += ["## How it is measured", ""] + [f"- {h}" for h in doc["how"]] + [""]
    return "\n".join(lines)


def write(out_dir: Path, doc: dict[str, Any], results: list[ScenarioResult], failures: dict[str, str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    body = {**doc, "scenarios": [r.to_json() for r in results], "failures": failures}
    (out_dir / "performance.json").write_text(json.dumps(body, indent=1, sort_keys=False) + "\n")
    (out_dir / "performance.md").write_text(markdown(doc, results, failures))
