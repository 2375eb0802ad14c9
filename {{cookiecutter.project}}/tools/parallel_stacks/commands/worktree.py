"""A copy's life with its git worktree: create (`add`), set up one made by another tool (`setup`),
tear down (`teardown`) and remove (`remove`).

`add NAME` runs `git worktree add -b NAME ../<repo>.<NAME>` (worktrunk's layout;
WORKTREE_DIR/<NAME> when set), copies the gitignored files `.worktreeinclude`
lists (env/local.env without its secrets and offset: the new copy makes its
own), claims a PORT_OFFSET=auto slot for it and, with --up, starts its stack.
`remove NAME` nukes that worktree's copy (the same ownership checks as `make
nuke`), releases its claim and removes the worktree; a worktree with
uncommitted changes is refused unless --force. `setup PATH` and `teardown
PATH` are the middle steps alone, for tools that create and remove worktrees
themselves (worktrunk's pre-start and pre-remove hooks, git's post-checkout).
`claude-create` and `claude-remove` speak Claude Code's WorktreeCreate and
WorktreeRemove hook contract: a JSON payload on stdin (`name`, or
`worktree_path`), and for create only the new worktree's path on stdout.

Exit status: 0 done, 2 refused or bad input (one `error:` line, nothing
changed), 1 a step failed on the way (its output says which). `--json`
prints one JSON object on stdout: name, branch, path, project_dir, offset,
compose_project, urls.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import derive
from ..basics import StackError
from ..config import env_name_of
from ..model import Copy
from ..runner import run
from ..settings import COPY_SELECTORS, Settings

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,59}")
INCLUDE_FILE = ".worktreeinclude"
SELECTORS = (*COPY_SELECTORS, "COMPOSE_PROJECT_NAME")  # and a stale export of another copy's project name


def check_name(name: str) -> str:
    """`name` if it can be a git worktree and branch name; StackError naming the rule otherwise."""
    if not NAME.fullmatch(name) or ".." in name or name.endswith((".lock", ".")):
        raise StackError(
            f"NAME={name[:60]!r} is not a worktree name: use 1-60 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (no slash, space or '..')"
        )
    return name


def git(*args: str, cwd: Path) -> str:
    """Run git with `args` in `cwd`; its stdout, or StackError with git's last line."""
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise StackError(f"git {' '.join(args[:2])} failed: {err}")
    return proc.stdout


def repo_of(project: Path) -> tuple[Path, Path]:
    """(the worktree's top directory, the project's path inside it)."""
    top = Path(git("rev-parse", "--show-toplevel", cwd=project).strip())
    return top, project.resolve().relative_to(top.resolve())


def worktrees(top: Path) -> list[dict[str, str]]:
    """`git worktree list --porcelain` as [{worktree, branch, ...}]."""
    out: list[dict[str, str]] = []
    for block in git("worktree", "list", "--porcelain", cwd=top).strip().split("\n\n"):
        entry: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            entry[key] = value
        if entry:
            out.append(entry)
    return out


def clean_env(settings: Settings) -> dict[str, str]:
    """The caller's environment without what picks a copy: the new worktree's own settings decide."""
    return {k: v for k, v in settings.env.items() if k not in SELECTORS}


def copy_includes(source: Path, target: Path, secret_keys: list[str]) -> list[str]:
    """Copy what `.worktreeinclude` lists (globs, relative to the project) that the target lacks; never overwrite."""
    listing = source / INCLUDE_FILE
    if not listing.exists():
        return []
    copied = []
    for line in listing.read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            raise StackError(f"{INCLUDE_FILE}: {pattern!r} must be a path inside the project")
        for path in sorted(source.glob(pattern)):
            if not path.is_file():
                continue
            relative = path.relative_to(source)
            dest = target / relative
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            text = path.read_text(encoding="utf-8")
            if relative.as_posix() == "env/local.env":  # secrets and the offset are the new copy's own
                drop = set(secret_keys) | {"PORT_OFFSET"}
                text = "".join(ln for ln in text.splitlines(keepends=True) if ln.split("=", 1)[0].strip() not in drop)
            dest.write_text(text, encoding="utf-8")
            dest.chmod(path.stat().st_mode & 0o777)
            copied.append(relative.as_posix())
    return copied


def describe(project_dir: Path, copy: Copy, name: str, branch: str, worktree: Path) -> dict[str, Any]:
    """A worktree's copy as the worktree commands report it (name, branch, path, offset, URLs with secrets masked)."""
    return {
        "name": name,
        "branch": branch,
        "path": str(worktree),
        "project_dir": str(project_dir),
        "offset": copy.offset,
        "compose_project": copy.compose_project,
        "urls": derive.urls(copy.env),
    }


def setup(source: Path, project_dir: Path, settings: Settings, up: bool) -> Copy:
    """Copy the includes, claim an auto slot, start the stack if asked; the new copy."""
    secret_keys = derive.secret_keys(derive.services(source))
    copied = copy_includes(source, project_dir, secret_keys)
    if copied:
        print(f"copied {', '.join(copied)} (without secrets: the new copy makes its own)", file=sys.stderr)
    from ..localenv import ensure_local_env

    env = Settings({**clean_env(settings), "STACK_ROOT": str(project_dir), "PORT_OFFSET": "auto"})
    ensure_local_env(project_dir, env_name_of(env))  # its own secrets, before anything reads them
    copy = derive.copy_of(project_dir, env, claim=True)  # .env.dynamic remembers the slot
    if up:
        proc = subprocess.run(["make", "up"], cwd=project_dir, env=clean_env(settings), stdout=sys.stderr)
        if proc.returncode != 0:
            raise SystemExit(1)
    return copy


def add(project: Path, name: str, settings: Settings, up: bool) -> dict[str, Any]:
    """`make worktree NAME=...`: a git worktree with its own copy (slot claimed, secrets its own; started with UP=1)."""
    check_name(name)
    top, inside = repo_of(project)
    parent = Path(settings.get("WORKTREE_DIR")) if settings.get("WORKTREE_DIR") else top.parent
    path = parent / name if settings.get("WORKTREE_DIR") else parent / f"{top.name}.{name}"
    if subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{name}"], cwd=top, capture_output=True).returncode == 0:
        raise StackError(f"branch {name!r} exists already: pick another NAME (or `git worktree add` it yourself, then `worktree setup`)")
    if path.exists():
        raise StackError(f"{path} exists already: pick another NAME or remove it")
    git("worktree", "add", "-q", "-b", name, str(path), cwd=top)
    project_dir = path / inside
    return describe(project_dir, setup(project, project_dir, settings, up), name, name, path)


def find(top: Path, name_or_path: str) -> tuple[Path, str]:
    """(worktree path, branch) of the worktree whose branch is NAME or whose path is PATH."""
    for entry in worktrees(top):
        path, branch = Path(entry["worktree"]), entry.get("branch", "").removeprefix("refs/heads/")
        if branch == name_or_path or path.resolve() == Path(name_or_path).resolve():
            return path, branch
    raise StackError(f"no worktree of this repository has branch or path {name_or_path[:80]!r} (`git worktree list`)")


def teardown(project_dir: Path, settings: Settings) -> Copy:
    """Nuke the worktree's copy (refused, with nothing changed, when it is another worktree's) and release its claims."""
    from .. import oplock
    from ..registry import claims
    from .nuke import remove as nuke

    copy = derive.copy_of(project_dir, Settings({**clean_env(settings), "STACK_ROOT": str(project_dir)}))
    with oplock.hold(project_dir, f"teardown of {copy.compose_project}"):
        code = nuke(settings, copy, argparse.Namespace(force=True, dry_run=False))
    if code != 0:
        raise SystemExit(code)
    claims.release(project_dir, copy.env_name, settings)
    return copy


def remove(project: Path, name_or_path: str, settings: Settings, force: bool) -> dict[str, Any]:
    """`make worktree-remove NAME=...`: nuke the worktree's copy, release its slots, remove the worktree."""
    top, inside = repo_of(project)
    if not Path(name_or_path).is_absolute():
        check_name(name_or_path)
    path, branch = find(top, name_or_path)
    if path.resolve() == top.resolve():
        raise StackError(f"{path} is the worktree you are in: run this from another worktree of the repository")
    dirty = git("status", "--porcelain", cwd=path).strip()
    if dirty and not force:
        raise StackError(f"{path} has uncommitted changes ({len(dirty.splitlines())} file(s)); commit them, or FORCE=1 to lose them")
    project_dir = path / inside
    copy = teardown(project_dir, settings) if (project_dir / "stack.yml").exists() else None
    git("worktree", "remove", *(["--force"] if force else []), str(path), cwd=top)
    out: dict[str, Any] = {"name": branch, "branch": branch, "path": str(path), "removed": True}
    if copy:
        out.update(offset=copy.offset, compose_project=copy.compose_project)
    return out


def report(result: Mapping[str, Any], as_json: bool) -> None:
    """Print a worktree command's result, as JSON or as lines for people."""
    if as_json:
        print(json.dumps(result, indent=2))
        return
    if result.get("removed"):
        print(
            f"removed worktree {result['path']} (branch {result['branch']} kept)"
            + (f" and copy {result['compose_project']}" if "compose_project" in result else "")
        )
        return
    print(f"worktree {result['path']} (branch {result['branch']}), copy {result['compose_project']} at PORT_OFFSET={result['offset']}")
    for key, url in result["urls"].items():
        print(f"  {key}={url}")


def main(argv: list[str] | None = None) -> int:
    """`python -m parallel_stacks worktree {add,remove,setup,teardown}`."""
    settings = Settings.read()
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks worktree", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("action", choices=["add", "remove", "setup", "teardown", "claude-create", "claude-remove"])
    parser.add_argument(
        "target", nargs="?", default=None, help="add/remove: NAME (default $NAME); setup/teardown: the worktree's project directory"
    )
    parser.add_argument("--up", action="store_true", default=settings.flag("UP"), help="add/setup: start the stack too (UP=1)")
    parser.add_argument(
        "--force", action="store_true", default=settings.flag("FORCE"), help="remove: even with uncommitted changes (FORCE=1)"
    )
    parser.add_argument(
        "--json", action="store_true", default=settings.get("FORMAT") == "json", help="one JSON object on stdout (FORMAT=json)"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        here = Path(settings.get("STACK_ROOT") or Path.cwd())
        target = args.target if args.target is not None else settings.get("NAME")
        if args.action.startswith("claude-"):
            return claude_hook(here, args.action, sys.stdin.read(), args.up, settings)
        if args.action in ("add", "remove") and not target:
            raise StackError(f"which worktree? `make worktree{'-remove' if args.action == 'remove' else ''} NAME=<name>`")
        if args.action == "add":
            result = add(here, target, settings, args.up)
        elif args.action == "remove":
            result = remove(here, target, settings, args.force)
        else:
            project_dir = Path(target or Path.cwd()).resolve()
            if not (project_dir / "stack.yml").exists():
                raise StackError(f"{project_dir} has no stack.yml: give the worktree's project directory")
            if args.action == "setup":
                copy = setup(here if here.resolve() != project_dir else _main_worktree_project(project_dir), project_dir, settings, args.up)
                result = describe(project_dir, copy, project_dir.name, "", project_dir)
            else:
                copy = teardown(project_dir, settings)
                result = {"path": str(project_dir), "removed": False, "compose_project": copy.compose_project}
                print(f"nuked copy {copy.compose_project} and released its claim", file=sys.stderr)
                if args.json:
                    print(json.dumps(result))
                return 0
        report(result, args.json)
        return 0

    return run(command)


def claude_hook(here: Path, action: str, payload: str, up: bool, settings: Settings) -> int:
    """Claude Code's WorktreeCreate (stdin {"name"| "worktree_name", "cwd"}; stdout: the path) and
    WorktreeRemove (stdin {"worktree_path"}) hooks; progress on stderr."""
    try:
        data = json.loads(payload or "{}")
    except ValueError:
        raise StackError("the hook's stdin is not JSON") from None
    if not isinstance(data, dict):
        raise StackError("the hook's stdin is not a JSON object")
    project = Path(str(data.get("cwd") or here))
    if action == "claude-create":
        name = str(data.get("name") or data.get("worktree_name") or "")
        if not name:
            raise StackError('the WorktreeCreate payload names no worktree ("name")')
        result = add(project if (project / "stack.yml").exists() else here, name, settings, up)
        print(result["path"])
        return 0
    path = str(data.get("worktree_path") or "")
    if not path:
        raise StackError('the WorktreeRemove payload names no worktree ("worktree_path")')
    result = remove(here, path, settings, force=False)
    print(f"removed worktree {result['path']}", file=sys.stderr)
    return 0


def _main_worktree_project(project_dir: Path) -> Path:
    """The main worktree's project directory (where `.worktreeinclude`'s files come from), for a hook run inside the new one."""
    top, inside = repo_of(project_dir)
    main_tree = Path(worktrees(top)[0]["worktree"])
    return main_tree / inside
