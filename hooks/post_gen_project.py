"""Flat list of small steps that finish the generated project."""
import importlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")
ROOT = Path.cwd()


def remove_ui():
    if not ANSWERS["with_ui"]:
        shutil.rmtree(ROOT / "ui")


def remove_mqtt():
    if not ANSWERS["with_mqtt"]:
        shutil.rmtree(ROOT / "mqtt")
        (ROOT / "tests" / "test_events.py").unlink()


def generate_local_env():
    """Per-bake secrets into env/local.env (mode 600, gitignored), by the baked helper package itself.

    Loaded from its files under a private name: cookiecutter's Python has no
    virtualenv with the package yet, and a caller's own import stays untouched.
    """
    package = ROOT / "tools" / "parallel_stacks"
    spec = importlib.util.spec_from_file_location(
        "_baked_parallel_stacks", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        importlib.import_module(f"{spec.name}.localenv").ensure_local_env(ROOT)
    finally:
        for name in [n for n in sys.modules if n == spec.name or n.startswith(spec.name + ".")]:
            del sys.modules[name]


def make_scripts_executable():
    for path in (ROOT / "scripts").glob("*.sh"):
        path.chmod(0o755)


def remove_caches():
    """Bytecode the template's own test runs left beside the package: not part of a project."""
    for cache in list((ROOT / "tools").rglob("__pycache__")):
        shutil.rmtree(cache)


remove_ui()
remove_mqtt()
generate_local_env()
remove_caches()
make_scripts_executable()
