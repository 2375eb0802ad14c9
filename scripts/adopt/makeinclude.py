"""The make targets: the static `parallel-stacks.mk` shipped with the template, included from the Makefile, and
the short aliases (`make up`) this repository's Makefile leaves free."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent.parent
PROJECT_TEMPLATE = TEMPLATE / ("{" * 2 + "cookiecutter.project" + "}" * 2)  # spelled apart: no template tag in this file
HELPERS_DIR = "parallel-stacks"
MK_FILE = "parallel-stacks.mk"
MK_SOURCE = Path(__file__).resolve().parent / MK_FILE  # static: the same bytes in every adopted repository
ALIASES_FILE = f"{HELPERS_DIR}/aliases.mk"
INCLUDE_LINE = f"include {MK_FILE}"
NO_ALIAS = {"setup", "help"}


def targets() -> list[str]:
    """The `stack-<name>` targets the static file defines (with a `## help` text)."""
    return re.findall(r"^stack-([a-z][a-z0-9-]*):[^\n]*## ", MK_SOURCE.read_text(encoding="utf-8"), re.M)


def user_targets(makefile: Path) -> set[str]:
    if not makefile.is_file():
        return set()
    found = set()
    for line in makefile.read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"^([A-Za-z0-9_./-]+(?:\s+[A-Za-z0-9_./-]+)*)\s*::?(?!=)", line)
        if match:
            found.update(match.group(1).split())
    return found


def aliases_text(taken: set[str], has_postgres: bool) -> str:
    names = [t for t in targets() if t not in taken and t not in NO_ALIAS and (has_postgres or t != "psql")]
    return (
        "# Written by `make adopt`: the short names this repository's Makefile leaves free\n"
        "# (`make up` runs `make stack-up`); parallel-stacks.mk defines them.\n"
        f"STACK_ALIASES := {' '.join(names)}\n"
    )


def makefile_text(current: str) -> str | None:
    """The Makefile with the include line appended (None: it has it already)."""
    if INCLUDE_LINE in current.splitlines():
        return None
    if not current:
        return f"# isolated copies of the stack (parallel-stacks): make stack-help\n{INCLUDE_LINE}\n"
    return current + ("\n" if not current.endswith("\n") else "") + f"\n# isolated copies of the stack (parallel-stacks)\n{INCLUDE_LINE}\n"


def helper_files() -> dict[str, bytes]:
    """{path under parallel-stacks/: bytes} of the helper package and its scripts, from this template."""
    files: dict[str, bytes] = {}
    tools = PROJECT_TEMPLATE / "tools"
    for path in sorted(tools.rglob("*")):
        rel = path.relative_to(tools)
        if path.is_file() and not any(p.startswith(".") or p == "__pycache__" or p.endswith(".egg-info") for p in rel.parts):
            files[f"tools/{rel}"] = path.read_bytes()
    scripts = PROJECT_TEMPLATE / "scripts"
    for name in ("helpers.py", "bootstrap-venv.sh", "worktree.sh"):
        files[name] = (scripts / name).read_bytes()
    requirements = [ln for ln in (PROJECT_TEMPLATE / "requirements-dev.txt").read_text().splitlines() if ln.split("==")[0] in ("python-dotenv", "PyYAML", "psutil")]
    files["requirements.txt"] = ("# The stack helpers' dependencies (parallel-stacks). Pinned.\n" + "\n".join(requirements) + "\n").encode()
    return files
