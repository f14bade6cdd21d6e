"""mypy --strict over the isthmus package as the import system sees it (`make lint`).

setuptools maps each import path to a top-level folder (``isthmus.core`` is ``core/``, see
``[tool.setuptools.package-dir]`` in pyproject.toml), a mapping mypy cannot read from an editable install.
This hands mypy every module of the packages pyproject.toml lists, named by its import path and found
through that same table, so no tree of links is needed; the rest of the configuration is ``[tool.mypy]``
in pyproject.toml. Every run checks everything (no incremental cache: about 4 s).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from mypy import build
from mypy.fscache import FileSystemCache
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def sources(packages: list[str], package_dirs: dict[str, str], exclude: list[str]) -> list[BuildSource]:
    """One BuildSource per module of every package pyproject.toml lists, named by its import path."""
    out = []
    for package in sorted(packages):
        # A package's folder: the longest mapped prefix, then the rest of the name as subfolders.
        mapped = max((p for p in package_dirs if package == p or package.startswith(p + ".")), key=len)
        folder = Path(package_dirs[mapped], *package[len(mapped):].split(".")[1:])
        if any(f"{folder.as_posix()}/".startswith(e) for e in exclude):
            continue
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            out.append(BuildSource(str(path.relative_to(ROOT)), name, None))
    return out


def main() -> int:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"]
    exclude = pyproject["tool"]["mypy"].get("exclude", [])
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), "-c", ""], fscache=FileSystemCache())
    options.incremental = False
    options.mypy_path = [str(ROOT / "proto")]  # the contract: isthmus.v1, found as a normal package
    modules = sources(packages, package_dirs, exclude)
    try:
        result = build.build(modules, options)
    except Exception as exc:  # mypy's CompileError: print its messages as mypy would
        messages = getattr(exc, "messages", None)
        if messages is None:
            raise
        print("\n".join(messages))
        return 2
    for line in result.errors:
        print(line)
    if result.errors:
        print(f"Found {len(result.errors)} errors in the isthmus package", file=sys.stderr)
        return 1
    print(f"Success: no issues found in {len(modules)} isthmus modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
