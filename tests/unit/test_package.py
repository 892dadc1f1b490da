"""The package's boundaries: no import cycles, MONAI Label only under ``server/``, one pinned version."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from brain_tumor_mri.server.compat import TESTED_MONAILABEL

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "lib" / "brain_tumor_mri"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``brain_tumor_mri`` module ``path`` imports, at module level or inside functions."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # "from pkg import module"
    return {m for m in found if m.startswith("brain_tumor_mri")}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None (package __init__ edges to children ignored)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if node.startswith(nxt + "."):  # a module importing its own package's __init__
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    graph = _graph()
    assert len(graph) > 40, "the scan found too few modules"
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_cycle_detector_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_runtime_package_never_imports_dev_tooling():
    offenders = [p.name for p in PACKAGE.rglob("*.py") if "brain_tumor_dev" in p.read_text(encoding="utf-8")]
    assert not offenders


def test_library_imports_without_monailabel_and_fastapi():
    """Every module outside ``server/`` imports in a process where monailabel and fastapi cannot load."""
    outside = sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if "server" not in p.relative_to(PACKAGE).parts)
    assert "brain_tumor_mri.training.run" in outside
    script = f"""
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("monailabel", "fastapi", "starlette"):
            raise ImportError(f"blocked: {{name}}")
        return None
sys.meta_path.insert(0, Block())
for name in {outside!r}:
    importlib.import_module(name)
print("imported", len({outside!r}))
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"imported {len(outside)}" in res.stdout


def test_server_modules_are_the_only_monailabel_users():
    pattern = re.compile(r"^\s*(from|import)\s+(monailabel|fastapi|starlette)\b", re.M)
    users = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if pattern.search(p.read_text()))
    assert users and all(u.startswith("server/") for u in users), users


@pytest.mark.parametrize(
    "path, pattern",
    [
        ("pyproject.toml", r'"monailabel==([\d.]+)"'),
        ("dev.sh", r"monailabel==([\d.]+)"),
    ],
)
def test_monailabel_pin_is_the_tested_version(path, pattern):
    pins = re.findall(pattern, (REPO / path).read_text(encoding="utf-8"))
    assert pins and set(pins) == {TESTED_MONAILABEL}, (path, pins)
