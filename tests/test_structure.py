"""The code's shape: no private names across modules, small files, no Streamlit in the core,
no cache decorators outside dashboard/resources.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450


def _modules(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def private_imports(source: str) -> list[str]:
    """``from our.module import _name`` and ``our_module._name`` uses (our packages only)."""
    found = []
    tree = ast.parse(source)
    aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("fer_core", "dashboard"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"from {node.module} import {a.name}")
                else:
                    aliases.add(a.asname or a.name)
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in ("fer_core", "dashboard"):
                    aliases.add((a.asname or a.name).split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases and base.id not in ("self", "cls"):
                found.append(f"{ast.unparse(node)}")
    return found


def test_the_checker_finds_private_imports() -> None:
    src = "from fer_core.models.cnn import _init\nimport fer_core.runs as r\nx = r._cache\nfrom os import _exit\n"
    assert private_imports(src) == ["from fer_core.models.cnn import _init", "r._cache"]


def test_no_module_imports_a_private_name_of_another() -> None:
    bad = {str(p.relative_to(ROOT)): private_imports(p.read_text()) for p in _modules("fer_core", "dashboard")}
    assert not {k: v for k, v in bad.items() if v}


def test_files_are_small_or_say_why() -> None:
    """Over ~450 lines a file's docstring must say why it is one file."""
    long = []
    for p in _modules("fer_core"):
        n = len(p.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(p.read_text())) or ""
        if n > MAX_LINES and "one file" not in doc.lower():
            long.append(f"{p.relative_to(ROOT)}: {n} lines")
    assert not long


def test_core_never_imports_streamlit_and_caches_live_in_one_place() -> None:
    for p in _modules("fer_core"):
        tree = ast.parse(p.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                 for a in (n.names if isinstance(n, ast.Import) else [ast.alias(n.module or "")])]
        assert not any(n.split(".")[0] == "streamlit" for n in names), p
    for p in _modules("dashboard"):
        if p.name != "resources.py":
            text = p.read_text()
            assert "cache_data" not in text and "cache_resource" not in text.replace("cache_resource.clear", ""), p
