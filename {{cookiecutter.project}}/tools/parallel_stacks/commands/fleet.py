"""See every copy on this machine (`slots`) and free stale auto claims (`gc`).

Copies are found in the slot registry and in Docker's labels (volumes this
template labels with their worktree, containers of their compose project),
so copies with a fixed PORT_OFFSET show up too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .. import engine as docker_state
from .. import registry
from ..basics import StackError, truthy
from ..runner import run

GRACE_SECONDS = 600  # a fresh claim may not have started its stack yet


def docker_copies() -> dict[str, dict[str, Any]]:
    """{compose project: {worktree, volumes, containers: [(name, state)], ports}} from Docker labels."""
    copies: dict[str, dict[str, Any]] = {}
    names = docker_state.docker("volume", "ls", "-q", "--filter", f"label={docker_state.WORKTREE_LABEL}").split()
    for rec in docker_state.json_list("volume", "inspect", *names) if names else []:
        labels = rec.get("Labels") or {}
        project = labels.get(docker_state.PROJECT_LABEL)
        if project:
            copy = copies.setdefault(
                project, {"worktree": labels.get(docker_state.WORKTREE_LABEL), "volumes": [], "containers": [], "ports": set()}
            )
            copy["volumes"].append(rec["Name"])
    for project, copy in copies.items():
        for rec in docker_state.containers(project):
            copy["containers"].append((rec["Name"].lstrip("/"), rec["State"].get("Status", "?")))
            copy["ports"] |= docker_state.published_ports([rec])
    return copies


def stale_claims(
    claims: Mapping[str, dict[str, Any]], copies: Mapping[str, Any] | None, now: float
) -> list[tuple[str, dict[str, Any], str]]:
    """[(key, claim, why)] for claims whose worktree is gone, or whose copy left nothing in Docker."""
    stale = []
    for key, claim in sorted(claims.items()):
        tree = Path(claim["worktree"])
        if not tree.is_dir():
            stale.append((key, claim, "worktree directory is gone"))
            continue
        if copies is None:
            continue  # engine down: cannot tell, keep it
        project = claim.get("compose_project")
        young = now - float(claim.get("claimed_at") or 0) < GRACE_SECONDS
        if project and project not in copies and not docker_state.containers(project) and not young:
            stale.append((key, claim, "no containers or volumes left"))
    return stale


def slots(environ: Mapping[str, str]) -> int:
    with registry.Registry(registry.state_dir(environ)) as reg:
        claims = dict(reg.claims)
    try:
        copies = docker_copies()
    except StackError as exc:
        print(f"warning: {exc}; showing the registry only", file=sys.stderr)
        copies = {}
    rows = []
    seen = set()
    for claim in claims.values():
        project = claim.get("compose_project") or "?"
        seen.add(project)
        copy = copies.get(project, {})
        rows.append(_row(project, claim["worktree"], str(claim["offset"]), "auto", claim.get("ports") or [], copy))
    for project, copy in sorted(copies.items()):
        if project not in seen:
            offset = project.rsplit("-", 1)[-1]
            rows.append(_row(project, copy.get("worktree") or "?", offset, "fixed", sorted(copy["ports"]), copy))
    if not rows:
        print("no copies on this machine")
        return 0
    header = ("COPY", "OFFSET", "HOW", "STATE", "PORTS", "VOLUMES", "WORKTREE")
    widths = [max(len(str(r[i])) for r in [*rows, header]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + "  " + str(row[-1]))
    return 0


def _row(project: str, worktree: str, offset: str, how: str, ports: Iterable[int], copy: Mapping[str, Any]) -> tuple[str, ...]:
    states = [s for _, s in copy.get("containers", [])]
    running = sum(1 for s in states if s == "running")
    state = f"running {running}/{len(states)}" if running else ("stopped" if states else "no containers")
    return (project, offset, how, state, ",".join(map(str, sorted(ports))) or "-", ",".join(copy.get("volumes", [])) or "-", worktree)


def gc(environ: Mapping[str, str], force: bool) -> int:
    try:
        copies = docker_copies()
    except StackError as exc:
        print(f"warning: {exc}; only claims whose worktree is gone count as stale", file=sys.stderr)
        copies = None
    with registry.Registry(registry.state_dir(environ)) as reg:
        stale = stale_claims(reg.claims, copies, time.time())
        if not stale:
            print("no stale claims")
            return 0
        for _key, claim, why in stale:
            print(f"{'freeing' if force else 'would free'} PORT_OFFSET={claim['offset']} of {claim['worktree']} ({why})")
        if not force:
            print("run `make gc FORCE=1` to free them")
            return 0
        for key, claim, _ in stale:
            del reg.claims[key]
            tree = Path(claim["worktree"])
            if tree.is_dir():
                registry.write_dynamic(tree, claim.get("env", "dev"), None)
        reg.write()
    print(f"freed {len(stale)} claim(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["slots", "gc"], help="slots: every copy on this machine; gc: stale claims")
    parser.add_argument(
        "--force",
        action="store_true",
        default=truthy(os.environ.get("FORCE")),
        help="gc: free the stale claims (default: only list them; FORCE=1)",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run(lambda: slots(os.environ) if args.command == "slots" else gc(os.environ, args.force))
