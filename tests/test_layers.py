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
    2: {"config", "formula", "kinds", "model"},
    3: {"engine", "probe"},
    4: {"registry", "offsets", "proxy", "composecli"},
    5: {"derive", "current", "localenv", "upstate"},
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


# ---------------------------------------------------------------- the environment, read once (issue 25)
# route_site/sitecustomize.py is the site hook Python subprocesses of a test load (not a module of the package:
# it runs before any package import and only hands PARALLEL_STACKS_ROUTES to localroute)
SITE_HOOK = Path("route_site") / "sitecustomize.py"


def environ_uses(path: Path) -> list[tuple[int, str]]:
    """(line, 'read' | 'write') of every use of os.environ / os.getenv / os.putenv in `path`."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in ("getenv", "environb"):
                uses.append((node.lineno, "read"))
            elif node.attr in ("putenv", "unsetenv"):
                uses.append((node.lineno, "write"))
            elif node.attr == "environ":
                parent = parents.get(node)
                written = (
                    isinstance(parent, ast.Subscript) and isinstance(parent.ctx, (ast.Store, ast.Del))
                    or isinstance(parent, ast.Attribute) and parent.attr in ("update", "pop", "setdefault", "clear", "__setitem__")
                )
                uses.append((node.lineno, "write" if written else "read"))
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in ("environ", "getenv") for a in node.names):
            uses.append((node.lineno, "read"))
    return uses


def test_only_settings_reads_the_environment_and_only_the_plugin_writes_it():
    """No module but settings.py reads os.environ (a command reads a Settings once and passes it down); nothing
    writes it but the pytest plugin, setting each worker's variables (its job)."""
    wrong = []
    for path in MODULES:
        rel = path.relative_to(PACKAGE)
        if rel in (Path("settings.py"), SITE_HOOK):
            continue
        for line, use in environ_uses(path):
            if use == "read" or rel.parts[0] != "pytest_plugin":
                wrong.append(f"{rel}:{line} {use}s os.environ")
    assert wrong == [], wrong


def test_the_environment_check_can_fail(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("import os\nx = os.environ.get('A')\nos.environ['B'] = '1'\nos.environ.update({})\nfrom os import getenv\n")
    assert sorted(environ_uses(sample)) == [(2, "read"), (3, "write"), (4, "write"), (5, "read")]


def settings_names_used() -> dict[str, list[str]]:
    """{variable: [where]} of every literal name the package asks a Settings for (get, flag, replace keywords)."""
    found: dict[str, list[str]] = {}
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "flag", "replace"):
                names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                if node.func.attr == "replace":
                    names = [k.arg for k in node.keywords if k.arg]
                receiver = ast.unparse(node.func.value)
                if receiver.split(".")[-1] == "settings" or receiver.startswith("settings_of("):
                    for name in names:
                        found.setdefault(name, []).append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_every_variable_the_package_honours_is_listed_once_used_and_documented():
    """settings.VARIABLES is the one list: each name the code asks for is on it, each name on it is asked for
    somewhere (or by a kind's data: the server images), and the baked docs/VARIABLES.md documents each."""
    from parallel_stacks import settings

    names = [name for name, _ in settings.VARIABLES]
    assert len(names) == len(set(names)), "a variable listed twice"
    used = settings_names_used()
    unlisted = {n: where for n, where in used.items() if n not in settings.NAMES}
    assert unlisted == {}, f"asked for but not in settings.VARIABLES: {unlisted}"
    own = (PACKAGE / "settings.py").read_text()
    own = own[: own.index("VARIABLES: tuple")] + own[own.index("NAMES = ") :]  # the list itself does not count as a use
    code = "\n".join(p.read_text() for p in MODULES if p.name != "settings.py") + own
    unused = [n for n in names if n not in used and f'"{n}"' not in code]
    assert unused == [], f"listed in settings.VARIABLES but read nowhere: {unused}"
    doc = (PACKAGE.parent.parent / "docs" / "VARIABLES.md").read_text()
    undocumented = [n for n in names if f"`{n}`" not in doc]
    assert undocumented == [], f"not in docs/VARIABLES.md: {undocumented}"


def test_an_unlisted_variable_is_refused():
    from parallel_stacks.settings import Settings

    with pytest.raises(KeyError, match="NOT_A_SETTING is not among"):
        Settings({"NOT_A_SETTING": "1"}).get("NOT_A_SETTING")
    assert Settings({"NOT_A_SETTING": "1"}).layer("NOT_A_SETTING") == "1"  # a name stack.yml declares: data


def test_the_variables_that_select_a_copy_are_one_list():
    """What picks a copy's offset (offsets.py), what the env cache never stores (cache.py) and what a new worktree
    drops from the caller's environment (commands/worktree.py) all come from settings' one list."""
    from parallel_stacks import cache, offsets, settings
    from parallel_stacks.commands import worktree

    assert offsets.TASK_VARS + offsets.CI_NUMBER_VARS == settings.SLOT_SOURCES
    assert cache.REGISTRY_SOURCES == ("auto", *settings.SLOT_SOURCES)
    assert set(settings.SLOT_SOURCES) <= set(settings.NAMES) and "PORT_OFFSET" in settings.COPY_SELECTORS
    assert set(settings.COPY_SELECTORS) <= set(worktree.SELECTORS)


def test_no_copy_travels_as_a_string_mapping_named_values():
    """A copy is a model.Copy (typed ports, services, names), not a dict[str, str] called `values` (issue 25):
    no function of the package takes a parameter named `values`."""
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"
        for path in MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and any(a.arg == "values" for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs)
    ]
    assert found == [], found


def test_every_image_variable_a_kind_declares_is_a_listed_setting():
    """A kind's server image is overridable by a variable (REDIS_IMAGE ...) the plugin reads through settings: it
    must be on settings.VARIABLES (a name computed at run time, so the test above cannot see it)."""
    from parallel_stacks import kinds, settings
    from parallel_stacks.kinds import Service, Worker

    service = Service("svc", "SVC", "127.0.0.1", 1)
    worker = Worker("gw0", 0, "gw0", True, {})
    declared = set()
    for name in kinds.names():
        kind = kinds.get(name)
        copy = type("FakeCopy", (), {"service": lambda self, _n: type("S", (), {"container_port": 1})(), "env": {}})()
        route = kind.local_route(service, copy, worker)
        if route is not None and route.server is not None:
            declared.add(route.server.image_variable)
    assert declared, "no kind declares a server of the worker's own: the check would check nothing"
    assert declared <= settings.NAMES, f"not in settings.VARIABLES: {sorted(declared - settings.NAMES)}"


def test_commands_take_library_code_from_below_not_from_each_other():
    """A command module imports the library (fleet, composecli, upstate ...), not another command, except where one
    command runs another: `make worktree-remove` runs `make nuke`'s removal."""
    allowed = {("worktree", "nuke")}
    found = []
    for path in sorted((PACKAGE / "commands").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                others = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                found += [(path.stem, o) for o in others if (path.stem, o) not in allowed]
    assert found == [], f"commands importing commands: {found}"
