"""The helper package's layers (its docs/DESIGN.md): no module imports a higher layer, no cycle.

Every import counts, lazy ones inside functions included: a lazy import
upward is still a cycle waiting to happen.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import PACKAGE

# lowest first; a module may import its own layer's modules or lower ones
LAYERS = {
    1: {"basics", "root", "runner", "cache", "labels", "localroute", "route_site", "settings"},
    2: {"config", "formula", "kinds"},
    3: {"engine", "probe"},
    4: {"registry", "offsets", "proxy"},
    5: {"derive", "current", "localenv"},
    6: {"ownership", "oplock", "fleet"},
    7: {"commands", "pytest_plugin", "__main__"},
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}


def top(module: Path) -> str:
    """The package member a file belongs to: `kinds/postgres.py` -> kinds, `derive.py` -> derive."""
    parts = module.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported_members(path: Path) -> set[str]:
    """Package members `path` imports (absolute `parallel_stacks.x` or relative), anywhere in the file."""
    tree = ast.parse(path.read_text())
    depth = len(path.relative_to(PACKAGE).parts) - 1  # 0 for top-level modules, 1 inside kinds/ ...
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith("parallel_stacks"):
                rest = node.module.split(".")[1:]
                found |= {rest[0]} if rest else {a.name for a in node.names}
            elif node.level:
                up = node.level - 1  # levels above the file's own package
                if up > depth:
                    continue
                if up == depth:  # relative to the package root
                    found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
                # up < depth: a sibling inside the same subpackage: the same member
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("parallel_stacks.")}
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_member_has_a_layer():
    members = {top(p) for p in MODULES} - {"__init__"}
    assert members <= set(LAYER_OF), f"give these a layer: {sorted(members - set(LAYER_OF))}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_a_higher_layer(path):
    me = top(path)
    if me == "__init__":
        return
    for other in imported_members(path) - {me}:
        assert other in LAYER_OF, f"{path.name} imports unknown member {other}"
        assert LAYER_OF[other] <= LAYER_OF[me], f"{me} (layer {LAYER_OF[me]}) imports {other} (layer {LAYER_OF[other]})"


def test_the_check_can_fail(tmp_path, monkeypatch):
    """A lazy upward import is found."""
    fake = PACKAGE / "formula.py"
    text = fake.read_text() + "\n\ndef _f():\n    from . import derive\n"
    copy = tmp_path / "formula.py"
    copy.write_text(text)
    monkeypatch.setattr("test_layers.PACKAGE", tmp_path)
    assert "derive" in imported_members(copy)


def test_every_public_function_of_the_package_says_what_it_does():
    """Docstrings on every public function and method of the package (issue 25), except a kind's methods that
    only fill in what kinds/base.py's Kind documents, pytest's hooks, and closures."""
    import ast

    package = PACKAGE
    documented = set()
    for node in ast.walk(ast.parse((package / "kinds" / "base.py").read_text())):
        if isinstance(node, ast.ClassDef) and node.name == "Kind":
            documented = {n.name for n in node.body if isinstance(n, ast.FunctionDef) and ast.get_docstring(n)}
    missing = []
    for path in sorted(package.rglob("*.py")):
        for top in ast.parse(path.read_text()).body:
            functions = [top] if isinstance(top, ast.FunctionDef) else []
            if isinstance(top, ast.ClassDef):
                kind = any(isinstance(b, ast.Name) and b.id == "Kind" for b in top.bases)
                functions = [n for n in top.body if isinstance(n, ast.FunctionDef) and not (kind and n.name in documented)]
            missing += [f"{path.relative_to(package)}:{f.name}" for f in functions
                        if not f.name.startswith(("_", "pytest_")) and not ast.get_docstring(f)]
    assert missing == [], missing
