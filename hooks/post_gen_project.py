"""Flat list of small steps that finish the generated project."""
import json
import shutil
import sys
from pathlib import Path

ANSWERS = json.loads(r"""{{ cookiecutter | tojson }}""")
ROOT = Path.cwd()


def remove_ui():
    if not ANSWERS["with_ui"]:
        shutil.rmtree(ROOT / "ui")


def generate_local_env():
    """Per-bake secrets into env/local.env (mode 600, gitignored)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import stack_config

    stack_config.ensure_local_env(ROOT)


def make_scripts_executable():
    for path in (ROOT / "scripts").glob("*.py"):
        path.chmod(0o755)


remove_ui()
generate_local_env()
make_scripts_executable()
