"""Remove this copy's containers, networks and volumes, and nothing else.

Only objects labelled with this copy's compose project are removed, by name,
and the containers and networks its tests started for themselves (labelled
with the copy and this worktree).
Asks for confirmation unless FORCE=1 or CI is set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from .. import derive, oplock, ownership
from .. import engine as docker_state
from ..basics import StackError
from ..model import Copy
from ..runner import run
from ..settings import Settings


def plan(settings: Settings, copy: Copy) -> tuple[list[dict[str, Any]], list[str], list[str], dict[str, str]]:
    """(containers, networks, volume names, {image reference: name}) carrying this copy's compose project label."""
    project = copy.env["COMPOSE_PROJECT_NAME"]
    records = ownership.check_ownership(settings, copy)
    vols = []
    for rec in docker_state.volumes(settings, project):
        tree = ownership.foreign_worktree(rec.get("Labels") or {}, copy.env["STACK_WORKTREE"])
        if tree:
            raise StackError(f"volume {rec['Name']} of {project} belongs to another worktree ({tree}); nothing removed")
        vols.append(rec["Name"])
    tests, test_networks = docker_state.test_objects(settings, project)  # containers tests started for themselves (worker_broker)
    for rec in tests:
        tree = ownership.foreign_worktree(rec["Config"].get("Labels") or {}, copy.env["STACK_WORKTREE"])
        if tree:
            raise StackError(f"test container {rec['Name'].lstrip('/')} of {project} belongs to another worktree ({tree}); nothing removed")
    return records + tests, docker_state.networks(settings, project) + test_networks, vols, docker_state.images(settings, project)


def data_directory(copy: Copy) -> Path | None:
    """The copy's bind-mounted data directories (an adopted project's `.stack-data/<copy>/`), if there are any:
    only ever a real directory inside this worktree, never a symbolic link or anything outside it."""
    root = Path(copy.env["STACK_WORKTREE"]).resolve()
    path = derive.copy_data_dir(root, copy.env["COMPOSE_PROJECT_NAME"])
    if path.is_symlink() or path.parent.is_symlink():
        raise StackError(f"{path} is a symbolic link; nuke removes nothing outside the worktree, nothing removed")
    if not path.is_dir():
        return None
    if root not in path.resolve().parents:
        raise StackError(f"{path} is not inside {root}; nothing removed")
    return path


def confirm(project: str, stdin: TextIO = sys.stdin) -> bool:
    """Ask on the terminal for the project name before removing; refuse without a terminal (FORCE=1 skips the question)."""
    if not stdin.isatty():
        raise StackError(f"refusing to remove {project} without confirmation: no terminal; run with FORCE=1")
    print(f"Remove these from {project}? Type the project name to confirm: ", end="", flush=True)
    return stdin.readline().strip() == project


def main(argv: list[str] | None = None) -> int:
    """`make nuke`: remove this copy's containers, networks, volumes and images, and nothing of another copy."""
    settings = Settings.read()
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks nuke", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--force",
        action="store_true",
        default=settings.flag("FORCE") or settings.flag("CI"),
        help="do not ask for confirmation (default when FORCE=1 or CI is set)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=settings.flag("DRY_RUN"),
        help="list what would be removed, remove nothing (default when DRY_RUN=1)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        copy = derive.copy_of(None, settings)
        with oplock.hold(copy.worktree, f"make nuke of {copy.compose_project}"):
            return remove(settings, copy, args)

    return run(command)


def remove(settings: Settings, copy: Copy, args: argparse.Namespace) -> int:
    """List, confirm and remove this copy's objects (under the operation lock)."""
    from .. import proxy

    project = copy.env["COMPOSE_PROJECT_NAME"]
    records, nets, vols, images = plan(settings, copy)
    port = copy.env.get("NAMED_URLS_PORT", "off")
    routes = sorted(proxy.table(settings, port).get(project, {}).get("routes", {})) if port != "off" else []
    data = data_directory(copy)
    if not (records or nets or vols or images or routes or data):
        print(f"nothing to remove for {project}")
        return 0
    print(f"{project}:")
    print("  containers: " + (", ".join(r["Name"].lstrip("/") for r in records) or "-"))
    print("  networks:   " + (", ".join(nets) or "-"))
    print("  volumes:    " + (", ".join(vols) or "-"))
    print("  images:     " + (", ".join(sorted(images.values())) or "-"))
    if routes:
        print("  named URLs: " + ", ".join(routes))
    if data:
        print(f"  data:       {data}")
    if args.dry_run:
        return 0
    if not args.force and not confirm(project):
        print("not confirmed; nothing removed")
        return 1
    if records:
        docker_state.docker(settings, "rm", "-f", "-v", *[r["Id"] for r in records])
    if nets:
        docker_state.docker(settings, "network", "rm", *nets)
    if vols:
        docker_state.docker(settings, "volume", "rm", *vols)
    kept = []
    for ref, name in images.items():
        try:
            docker_state.docker(settings, "image", "rm", ref)
        except StackError:
            kept.append(name)  # still used by a container outside this copy: not ours to stop
    if routes:
        proxy.withdraw(project, port, settings)
    if data:
        import shutil

        shutil.rmtree(data)
    from ..upstate import forget

    forget(copy, settings)  # the quick `make up`'s stamp of this copy (upstate.py): nothing of it is left
    if kept:
        print(f"kept image(s) {', '.join(kept)}: still in use by a container outside {project}", file=sys.stderr)
    print(
        f"removed {len(records)} container(s), {len(nets)} network(s), {len(vols)} volume(s), "
        f"{len(images) - len(kept)} image(s) of {project}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
