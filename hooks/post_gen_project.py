"""Flat list of small steps that finish the generated project."""
import importlib
import importlib.util
import json
import shutil
import subprocess
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


def record_template_for_cruft():
    """`.cruft.json` (cruft's own format) naming the template and its commit, so `cruft check`
    and `cruft update` work for a project baked with plain cookiecutter. Skipped when cruft itself
    renders (its context carries `_commit`; it writes the file) or the template is not a git checkout."""
    if "_commit" in ANSWERS or (ROOT / ".cruft.json").exists():
        return
    repo = ANSWERS.get("_repo_dir") or ANSWERS.get("_template", "")
    try:
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return
    if commit.returncode != 0:
        return
    template = ANSWERS.get("_template", "")
    if Path(template).exists():
        template = str(Path(template).resolve())  # a local checkout: absolute, as cruft records it
    context = {k: v for k, v in ANSWERS.items() if k not in ("_output_dir", "_repo_dir", "_checkout")}
    context.update({"_template": template, "_commit": commit.stdout.strip()})
    state = {"template": template, "commit": commit.stdout.strip(), "checkout": ANSWERS.get("_checkout"), "context": {"cookiecutter": context}, "directory": None}
    (ROOT / ".cruft.json").write_text(json.dumps(state, indent=2) + "\n")


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
record_template_for_cruft()
make_scripts_executable()
