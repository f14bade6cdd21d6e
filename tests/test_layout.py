"""The folder layout is the architecture: the map that opens docs/architecture.md holds for the code.

Each row of the map names a folder, its import name and what it may import; every import of every module
of the installed package is checked against it, the import graph is checked for circles, and
``proto/isthmus`` for holding the contract only.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 800


@dataclass(frozen=True)
class Part:
    folder: str
    names: tuple[str, ...]  # import names of the part
    may_import: tuple[str, ...]


def the_map() -> list[Part]:
    """The rows of the first table of docs/architecture.md: | `folder/` | `import.name` | what | `may`, `import` |."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## ", 2)[1]
    assert section.startswith("The map"), "docs/architecture.md must open with '## The map'"
    parts = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        names = tuple(re.findall(r"`([a-z0-9_.]+)`", cells[1]))
        may = tuple(re.findall(r"`([a-z0-9_.]+)`", cells[3]))
        parts.append(Part(cells[0].strip("`"), names, may))
    assert parts, "no rows in the map"
    return parts


def modules() -> Iterator[tuple[str, Path]]:
    """(import name, file) of every hand-written module of the package pyproject.toml installs."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = setup["package-dir"]
    for package in setup["packages"]:
        if package.startswith("isthmus.v1"):
            continue  # generated stubs
        mapped = max((p for p in dirs if package == p or package.startswith(p + ".")), key=len)
        folder = ROOT.joinpath(dirs[mapped], *package[len(mapped):].split(".")[1:])
        for path in sorted(folder.glob("*.py")):
            yield (package if path.stem == "__init__" else f"{package}.{path.stem}"), path


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The isthmus modules ``name`` imports, anywhere in the file (function-local imports included)."""
    out = set()
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                above = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(above + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t == "isthmus" or t.startswith("isthmus."))
    return out


def covers(name: str, module: str) -> bool:
    """``name`` is ``module`` or a package above it; the root package ``isthmus`` covers only itself."""
    return module == name or (name != "isthmus" and module.startswith(name + "."))


def part_of(module: str, parts: list[Part]) -> Part:
    matches = [(len(n), p) for p in parts for n in p.names if covers(n, module)]
    assert matches, f"{module} belongs to no folder of the map in docs/architecture.md"
    return max(matches, key=lambda m: m[0])[1]


def allowed(target: str, part: Part) -> bool:
    return any(covers(n, target) for n in part.names + part.may_import)


def graph() -> dict[str, set[str]]:
    mods = dict(modules())
    known = set(mods) | {"isthmus.v1"}
    return {name: imports(name, path, known) for name, path in mods.items()}


def test_every_folder_of_the_map_exists_and_every_package_is_on_it() -> None:
    parts = the_map()
    for part in parts:
        assert (ROOT / part.folder).is_dir(), f"the map names {part.folder}, which does not exist"
    for name, _ in modules():
        part_of(name, parts)


def test_every_import_is_one_the_map_allows() -> None:
    parts = the_map()
    wrong = []
    for name, targets in graph().items():
        part = part_of(name, parts)
        wrong += [f"{name} imports {t}" for t in sorted(targets) if not allowed(t, part)]
    assert not wrong, "imports the map in docs/architecture.md does not allow:\n" + "\n".join(wrong)


def test_no_import_circle() -> None:
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            visit(v)
    assert not circles, f"modules that import each other in a circle: {circles}"


def test_proto_holds_the_contract_only() -> None:
    here = {p.name for p in (ROOT / "proto" / "isthmus").iterdir() if p.name != "__pycache__"}
    assert here == {"__init__.py", "py.typed", "v1"}, f"proto/isthmus holds more than the contract: {sorted(here)}"


def test_no_hand_written_module_is_over_the_size_limit() -> None:
    big = [f"{path.relative_to(ROOT)} ({n} lines)" for _, path in modules()
           if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES]
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_the_checks_catch_what_they_forbid(tmp_path: Path) -> None:
    """The map parser and the import reader see a forbidden import, a function-local one included."""
    parts = [Part("core/", ("isthmus.core",), ("isthmus.v1",)), Part("ctl/", ("isthmus.ctl",), ("isthmus.core",))]
    bad = tmp_path / "model.py"
    bad.write_text("def f():\n    from isthmus.ctl import main\n")
    found = imports("isthmus.core.model", bad, {"isthmus.ctl.main"})
    assert found == {"isthmus.ctl.main"}
    assert not allowed("isthmus.ctl.main", part_of("isthmus.core.model", parts))
    assert allowed("isthmus.core.model", part_of("isthmus.ctl.main", parts))
