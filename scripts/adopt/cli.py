"""`make adopt TARGET=path/to/repo`: plan every change, show it, write it (or refuse in one line, writing nothing)."""

from __future__ import annotations

import argparse
import difflib
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import composefiles, convert, makeinclude, stackfile, suite
from .common import Refused

GITIGNORED = ("env/local.env", ".env.dynamic", ".venv-stack/", ".stack-data/")


@dataclass
class Plan:
    project: str
    stack: dict[str, Any]
    files: dict[Path, str]  # path -> new text (only files whose text changes or is new)
    notes: list[str] = field(default_factory=list)
    suite: suite.Suite | None = None


def legacy_names(existing: dict[str, Any], names: set[str]) -> dict[str, str]:
    """The variables an adoption before `compose.variables` existed wrote (they are ours, not the team's)."""
    if not existing or "compose" in existing:
        return dict((existing.get("compose") or {}).get("variables") or {})
    return {n: n for n in names if n in ("BIND_ADDRESS", "STACK_WORKTREE") or re.fullmatch(r"[A-Z0-9_]+_(PORT|VOLUME)", n)}


def plan(root: Path, check_compose: bool = True) -> Plan:
    root = root.resolve()
    repo = composefiles.read(root)
    existing = stackfile.previous(root)
    project = existing.get("project") if isinstance(existing.get("project"), str) else stackfile.project_name(root, repo.files[0].data)
    namer = convert.Namer(repo.names, legacy_names(existing, repo.names))
    conv = convert.Conversion(repo, namer, stackfile.compose_project(root, repo.files[0].data, repo.env))
    convert.run(conv)  # its refusals name the construct; then compose's own verdict on the files as they are
    if check_compose:
        composefiles.compose_accepts(repo)
    stack = stackfile.build(project, repo, conv)
    files: dict[Path, str] = dict(conv.texts)
    files[root / "stack.yml"] = stackfile.text(stack)
    files[root / makeinclude.MK_FILE] = makeinclude.MK_SOURCE.read_text(encoding="utf-8")
    has_postgres = any(s["kind"] == "postgres" for s in stack["services"].values())
    files[root / makeinclude.ALIASES_FILE] = makeinclude.aliases_text(makeinclude.user_targets(root / "Makefile"), has_postgres)
    makefile = root / "Makefile"
    new_makefile = makeinclude.makefile_text(makefile.read_text(encoding="utf-8") if makefile.is_file() else "")
    if new_makefile is not None:
        files[makefile] = new_makefile
    tests = suite.find(repo, stack)
    files[root / suite.REQUIREMENTS] = suite.requirements_text(s["kind"] for s in stack["services"].values())
    if tests is not None:
        files[root / suite.SUITE_MK] = suite.suite_mk(tests)
        if tests.isolation_env and not (root / suite.ISOLATION_ENV).exists():  # the team's edits stay
            files[root / suite.ISOLATION_ENV] = suite.isolation_env_text(tests.isolation_env)
    public, private = stackfile.captured_settings(repo, stack)
    dev_env = root / "env" / "dev.env"
    if not dev_env.exists():
        files[dev_env] = (
            "# Committed settings for ENV=dev (parallel-stacks). env/local.env (gitignored)\n"
            "# overrides them per machine; PORT_OFFSET=<n> there gives this worktree its own ports.\n"
            + "".join(f"{k}={v}\n" for k, v in public.items())
        )
    local_env = root / "env" / "local.env"
    if private and not local_env.exists():
        files[local_env] = "# Per-machine settings and secrets for this worktree. Gitignored; never commit.\n" + "".join(f"{k}={v}\n" for k, v in private.items())
    gitignore = root / ".gitignore"
    ignored = gitignore.read_text(encoding="utf-8") if gitignore.is_file() else ""
    wanted = [p for p in GITIGNORED if p not in ignored.splitlines()]
    if wanted:
        files[gitignore] = ignored + ("\n" if ignored and not ignored.endswith("\n") else "") + "# parallel-stacks\n" + "\n".join(wanted) + "\n"
    changed = {p: t for p, t in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != t}
    for path in changed:
        if root not in path.resolve().parents:
            raise Refused(f"{path} is outside the repository; adopt writes nothing outside it")
    notes = list(conv.notes)
    if conv.shared_binds:
        notes.append("shared by every copy (bind mounts of config or code): " + ", ".join(dict.fromkeys(conv.shared_binds)))
    return Plan(project, stack, changed, notes, tests)


def package_changes(root: Path) -> dict[Path, bytes]:
    return {
        root / makeinclude.HELPERS_DIR / rel: data
        for rel, data in makeinclude.helper_files().items()
        if not (root / makeinclude.HELPERS_DIR / rel).is_file() or (root / makeinclude.HELPERS_DIR / rel).read_bytes() != data
    }


def tracked(root: Path, path: Path) -> bool:
    """In git's index: `git checkout -- <file>` gives it back (its uncommitted changes, if any, are in the diff shown)."""
    return subprocess.run(["git", "-C", str(root), "ls-files", "--error-unmatch", str(path)], capture_output=True).returncode == 0


def apply(root: Path, out: Any = sys.stdout, dry_run: bool = False) -> int:
    root = root.resolve()
    result = plan(root)
    stackfile.validate(result.files.get(root / "stack.yml", (root / "stack.yml").read_text() if (root / "stack.yml").is_file() else ""))
    package = package_changes(root)
    if not result.files and not package:
        print(f"{root}: already adopted; nothing to change", file=out)
        return 0
    for path, text in result.files.items():
        old = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.is_file() else []
        rel = path.relative_to(root)
        out.writelines(difflib.unified_diff(old, text.splitlines(keepends=True), f"a/{rel}" if old else "/dev/null", f"b/{rel}"))
    if package:
        print(f"{'would write' if dry_run else 'writing'} {len(package)} file(s) of the helper package under {makeinclude.HELPERS_DIR}/", file=out)
    if dry_run:
        return 0
    import shutil

    for path in result.files:
        if path.is_file() and not tracked(root, path):
            backup = path.with_name(path.name + ".orig")
            if not backup.exists():
                shutil.copy2(path, backup)
                print(f"kept the original as {backup.relative_to(root)}", file=out)
    for path, text in result.files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if path.name == "local.env":
            path.chmod(0o600)
    for path, data in package.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if path.suffix == ".sh":
            path.chmod(0o755)
    services = ", ".join(f"{n} ({s['kind']}, {s['host_port']})" for n, s in result.stack["services"].items())
    files = " + ".join(result.stack["compose"]["files"])
    print(f"adopted {root} ({files}) as project {result.project}: {services}", file=out)
    for note in result.notes:
        print(note if note.startswith("warning:") else f"note: {note}", file=out)
    if result.suite is not None:
        runs = {"uv": "uv run", "poetry": "poetry run", "venv": ".venv/bin/python -m pytest", "python": "python3 -m pytest"}
        print(
            f"your test suite ({result.suite.config}, run with {runs[result.suite.runner]}): `make stack-test-parallel` runs it "
            "against this copy on isolated workers (the plugin and pytest-xdist go into its environment on first use)",
            file=out,
        )
        if result.suite.isolation_env:
            print(f"its settings read these from each worker ({suite.ISOLATION_ENV}, the plugin's isolation_env lines):", file=out)
            for line in result.suite.isolation_env:
                print(f"  {line}", file=out)
    print("next: `make stack-up` (as before), `PORT_OFFSET=10000 make stack-up` (a second copy beside it); `make stack-help`", file=out)
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make adopt", description="Give an existing compose project parallel copies.")
    parser.add_argument("target", help="the repository to adopt (its compose file at the top)")
    parser.add_argument("--dry-run", action="store_true", help="show the diff, write nothing")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        return apply(Path(args.target), dry_run=args.dry_run)
    except Refused as exc:
        print(f"error: {exc}; nothing changed", file=sys.stderr)
        return 2
