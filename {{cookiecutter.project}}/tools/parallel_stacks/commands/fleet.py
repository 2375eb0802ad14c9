"""See every copy on this machine (`slots`); free stale claims and remove copies of vanished worktrees (`gc`).

Copies are found in the slot registry and in Docker's labels (volumes this
template labels with their worktree, containers of their compose project),
so copies with a fixed PORT_OFFSET show up too. What they are, and which are
stale, is the library's `parallel_stacks.fleet`; this is the command: the
table or JSON, gc's report and removal, and `main`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import engine as docker_state
from ..basics import StackError
from ..fleet import collect, docker_copies, orphaned_copies, orphaned_routes, remove_orphans, stale_claims, stale_engine_claims
from ..registry import dynamic, store
from ..registry import slots as engine_slots
from ..runner import run
from ..settings import Settings

FORMATS = ("table", "json")


def slots(settings: Settings, fmt: str = "table", contexts: list[str] | None = None) -> int:
    """Every copy on the engine (or on each docker context of `contexts`), with this machine's claims."""
    if fmt not in FORMATS:
        raise StackError(f"FORMAT={fmt[:40]!r}: use table (the default) or json")
    rows, snap = collect(settings, contexts)
    for problem in snap["engine_errors"]:
        print(f"warning: {problem['error']}; showing the registry only for engine {problem['engine']}", file=sys.stderr)
    if fmt == "json":
        import json

        print(json.dumps(snap, indent=2))
        return 0
    if not rows:
        print("no copies on this machine" if not contexts else f"no copies on {', '.join(contexts)}")
        return 0
    header = ("COPY", "OFFSET", "HOW", "STATE", "PORTS", "VOLUMES", "ENGINE", "WORKTREE")
    table = [(*r[:-2], r[-1], r[-2]) for r in rows]
    widths = [max(len(str(r[i])) for r in [*table, header]) for i in range(len(header) - 1)]
    for row in [header, *table]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + "  " + str(row[-1]))
    return 0


def gc(settings: Settings, force: bool) -> int:
    """`make gc`: list stale claims and copies of vanished worktrees; with `force`, free and remove them."""
    try:
        copies = docker_copies(settings)
        orphans = orphaned_copies(settings)
    except StackError as exc:
        print(f"warning: {exc}; only claims whose worktree is gone count as stale", file=sys.stderr)
        copies, orphans = None, {}
    for (project, gone), objects in sorted(orphans.items()):
        listed = "; ".join(f"{kind} {', '.join(names)}" for kind, names in objects.items() if names)
        print(f"{'removing' if force else 'would remove'} copy {project} of vanished worktree {gone}: {listed}")
    if orphans and force:
        remove_orphans(settings, orphans)
        print(
            f"removed {len(orphans)} cop{'y' if len(orphans) == 1 else 'ies'} of vanished worktrees (their test databases with their volumes)"
        )
    for slot, labels in [] if copies is None else stale_engine_claims(settings):
        print(
            f"{'removing' if force else 'would remove'} the engine's claim of PORT_OFFSET={slot} (vanished worktree {labels.get(engine_slots.SLOT_TREE_LABEL)})"
        )
        if force:
            docker_state.docker(settings, "rm", f"{engine_slots.SLOT_PREFIX}{slot}")
    routes = [] if copies is None else orphaned_routes(settings)
    for port, project, _tree, why in routes:
        print(f"{'removing' if force else 'would remove'} the named URLs of {project} ({why}) from the proxy on port {port}")
        if force:
            from .. import proxy

            proxy.withdraw(project, port, settings)
    with store.Registry(settings) as reg:
        stale = stale_claims(settings, reg.claims, copies, time.time())
        if not stale:
            print("no stale claims")
            if (orphans or routes) and not force:
                print("run `make gc FORCE=1` to remove them")
            return 0
        for _key, claim, why in stale:
            print(f"{'freeing' if force else 'would free'} PORT_OFFSET={claim['offset']} of {claim['worktree']} ({why})")
        if not force:
            print("run `make gc FORCE=1` to free them" + (" and remove the copies above" if orphans or routes else ""))
            return 0
        for key, claim, _ in stale:
            del reg.claims[key]
            tree = Path(claim["worktree"])
            if tree.is_dir():
                dynamic.write_dynamic(tree, claim.get("env", "dev"), None)
        reg.write()
    print(f"freed {len(stale)} claim(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`make slots` / `make gc`."""
    settings = Settings.read()
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["slots", "gc"], help="slots: every copy on this machine; gc: stale claims")
    parser.add_argument(
        "--force",
        action="store_true",
        default=settings.flag("FORCE"),
        help="gc: free the stale claims (default: only list them; FORCE=1)",
    )
    parser.add_argument("--format", default=settings.get("FORMAT") or "table", help="slots: table (default) or json (FORMAT=json)")
    parser.add_argument(
        "--contexts",
        default=settings.get("CONTEXTS") or "",
        help="slots: docker contexts to list, comma-separated (CONTEXTS=default,build-box); default: the current engine",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    contexts = [c.strip() for c in args.contexts.split(",") if c.strip()] or None
    return run(lambda: slots(settings, args.format, contexts) if args.command == "slots" else gc(settings, args.force))
