"""Every third-party package that fer_core/ or dashboard/ imports is in the pinned runtime list.

Why a test: a package that happens to be installed (as a dependency of a dev tool, or by hand)
makes the code work here and fail on a fresh ``pip install -r requirements.txt``. The checker
parses each module with ``ast`` (top-level and nested imports, including those inside functions
and ``try`` blocks), drops the standard library and first-party names, maps import names to
distributions with ``importlib.metadata.packages_distributions()`` and compares with
``requirements-runtime.txt`` -- the one list ``pyproject.toml`` reads.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = frozenset({"fer_core", "dashboard"})
RUNTIME = ROOT / "requirements-runtime.txt"


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def third_party_imports(source: str, filename: str = "<string>") -> set[str]:
    """Top-level names of the absolute imports in ``source`` that are neither stdlib nor ours."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in FIRST_PARTY and n != "__future__"}


def read_requirements(path: Path) -> set[str]:
    """Canonical distribution names pinned in a requirements file (``-r`` includes followed)."""
    out: set[str] = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            out |= read_requirements(path.parent / line.split(None, 1)[1])
        elif not line.startswith("-") and line != ".":
            out.add(canonical(re.split(r"[\s<>=!~;\[]", line, maxsplit=1)[0]))
    return out


def missing_requirements(sources: dict[str, str], required: set[str],
                         dists: dict[str, list[str]] | None = None) -> list[str]:
    """``"module: import (distribution)"`` for every third-party import no requirement covers."""
    dists = packages_distributions() if dists is None else dists
    problems = []
    for module, source in sorted(sources.items()):
        for name in sorted(third_party_imports(source, module)):
            candidates = [canonical(d) for d in dists.get(name, [])]
            if not candidates:
                problems.append(f"{module}: import {name} (no installed distribution provides it)")
            elif not set(candidates) & required:
                problems.append(f"{module}: import {name} (distribution {', '.join(sorted(set(candidates)))})")
    return problems


def project_sources() -> dict[str, str]:
    files = sorted([*(ROOT / "fer_core").rglob("*.py"), *(ROOT / "dashboard").rglob("*.py")])
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in files}


def test_every_imported_package_is_a_runtime_requirement():
    sources = project_sources()
    assert "fer_core/train.py" in sources and "dashboard/app.py" in sources
    problems = missing_requirements(sources, read_requirements(RUNTIME))
    assert not problems, "add to requirements-runtime.txt (pinned):\n" + "\n".join(problems)


def test_checker_catches_a_missing_package():
    src = ("import os, numpy\nfrom . import sibling\nfrom fer_core.train import fit\n"
           "def f():\n    try:\n        import not_a_real_pkg_xyz.sub\n    except ImportError:\n        pass\n"
           "    from cv2 import warpAffine\n")
    assert third_party_imports(src) == {"numpy", "not_a_real_pkg_xyz", "cv2"}
    dists = {"numpy": ["numpy"], "cv2": ["opencv-python-headless"]}
    problems = missing_requirements({"fake/mod.py": src}, {"numpy"}, dists)
    assert problems == ["fake/mod.py: import cv2 (distribution opencv-python-headless)",
                        "fake/mod.py: import not_a_real_pkg_xyz (no installed distribution provides it)"]
    assert missing_requirements({"fake/mod.py": src}, {"numpy", "opencv-python-headless"},
                                {**dists, "not_a_real_pkg_xyz": ["Not_A.Real-pkg"]}) == [
        "fake/mod.py: import not_a_real_pkg_xyz (distribution not-a-real-pkg)"]


def test_one_source_of_truth_for_the_pins():
    """pyproject reads the runtime list; requirements.txt = that list + the project itself."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dependencies" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == [RUNTIME.name]
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.lstrip().startswith("#")]
    assert f"-r {RUNTIME.name}" in lines and ("-e ." in lines or "." in lines)
    assert read_requirements(ROOT / "requirements.txt") == read_requirements(RUNTIME)
    for line in RUNTIME.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), f"not an exact pin: {line}"
    assert "scipy" in read_requirements(RUNTIME)
