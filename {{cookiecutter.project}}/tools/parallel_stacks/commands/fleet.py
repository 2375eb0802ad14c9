"""See every copy on this machine (`slots`); free stale claims and remove copies of vanished worktrees (`gc`).

Copies are found in the slot registry and in Docker's labels (volumes this
template labels with their worktree, containers of their compose project),
so copies with a fixed PORT_OFFSET show up too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import engine as docker_state
from .. import registry
from ..basics import StackError, truthy
from ..runner import run

GRACE_SECONDS = 600  # a fresh claim may not have started its stack yet


def docker_copies() -> dict[str, dict[str, Any]]:
    """{compose project: {worktree, volumes, containers: [(name, state)], ports}} from Docker labels.

    Two requests on the engine's socket whatever the number of copies (the CLI path below asked
    twice per copy: 30 copies took seconds).
    """
    volumes = docker_state.labelled_volumes(docker_state.WORKTREE_LABEL)
    listed = docker_state.labelled_containers(docker_state.PROJECT_LABEL) if volumes is not None else None
    if volumes is None or listed is None:
        return _docker_copies_by_cli()
    copies: dict[str, dict[str, Any]] = {}
    for rec in volumes:
        labels = rec.get("Labels") or {}
        project = labels.get(docker_state.PROJECT_LABEL)
        if project:
            copy = copies.setdefault(
                project, {"worktree": labels.get(docker_state.WORKTREE_LABEL), "volumes": [], "containers": [], "ports": set()}
            )
            copy["volumes"].append(rec["Name"])
    for entry in sorted(listed, key=lambda e: str((e.get("Names") or [""])[0])):
        owner = copies.get((entry.get("Labels") or {}).get(docker_state.PROJECT_LABEL, ""))
        if owner is None:
            continue
        state = str(entry.get("State") or "?")
        owner["containers"].append((str((entry.get("Names") or ["?"])[0]).lstrip("/"), state))
        if state == "running":
            owner["ports"] |= {int(p["PublicPort"]) for p in entry.get("Ports") or [] if p.get("PublicPort")}
    for copy in copies.values():
        copy["volumes"].sort()
    return copies


def _docker_copies_by_cli() -> dict[str, dict[str, Any]]:
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


FORMATS = ("table", "json")


@contextlib.contextmanager
def engine_context(context: str | None) -> Iterator[None]:
    """Point the docker CLI (and this process's engine questions) at `context` for the block; None: as it is."""
    if context is None:
        yield
        return
    saved = {k: os.environ.get(k) for k in ("DOCKER_CONTEXT", "DOCKER_HOST")}
    os.environ.pop("DOCKER_HOST", None)
    os.environ["DOCKER_CONTEXT"] = context
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def slots(environ: Mapping[str, str], fmt: str = "table", contexts: list[str] | None = None) -> int:
    """Every copy on the engine (or on each docker context of `contexts`), with this machine's claims."""
    if fmt not in FORMATS:
        raise StackError(f"FORMAT={fmt[:40]!r}: use table (the default) or json")
    with registry.Registry(registry.state_dir(environ)) as reg:
        claims = dict(reg.claims)
    rows: list[tuple[str, ...]] = []
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    targets: list[str | None] = list(contexts) if contexts else [None]
    for index, context in enumerate(targets):
        with engine_context(context):
            endpoint = docker_state.location()[0]
            try:
                copies = docker_copies()
                on_engine = registry.engine_claims() if registry.engine_claims_on() else {}
            except StackError as exc:
                print(f"warning: {exc}; showing the registry only for engine {endpoint}", file=sys.stderr)
                copies, on_engine = {}, {}
            last = index == len(targets) - 1
            listed: set[str] = set()  # this engine's copies already shown (with their claim)
            for key, claim in claims.items():
                project = claim.get("compose_project") or "?"
                if key in seen or (project not in copies and not last):
                    continue  # a claim belongs to the engine its copy is on; unplaced ones go with the last engine
                seen.add(key)
                listed.add(project)
                copy = copies.get(project, {})
                rows.append((*_row(project, claim["worktree"], str(claim["offset"]), "auto", claim.get("ports") or [], copy), endpoint))
                records.append({**_record(rows[-1][:-1], copy, claim.get("env"), claim.get("label")), "engine": endpoint})
            for project, copy in sorted(copies.items()):
                if project not in listed:
                    offset = project.rsplit("-", 1)[-1]
                    rows.append((*_row(project, copy.get("worktree") or "?", offset, "fixed", sorted(copy["ports"]), copy), endpoint))
                    records.append({**_record(rows[-1][:-1], copy, None, None), "engine": endpoint})
            me = registry.machine_id(environ)
            for slot, labels in sorted(on_engine.items()):
                if labels.get(registry.SLOT_MACHINE_LABEL) != me:  # another machine's claim on this engine
                    holder = f"{labels.get(registry.SLOT_TREE_LABEL, '?')} on {labels.get(registry.SLOT_HOST_LABEL, '?')}"
                    rows.append(("?", str(slot), "claimed", "-", "-", "-", holder, endpoint))
                    records.append({"compose_project": None, "offset": slot, "how": "claimed", "claimed_by": holder, "engine": endpoint})
    if fmt == "json":
        import json

        print(json.dumps({"copies": records}, indent=2))
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


def _record(row: tuple[str, ...], copy: Mapping[str, Any], env_name: str | None, label: str | None) -> dict[str, Any]:
    """One copy for `make slots FORMAT=json`; its URLs derived in its worktree (secrets masked) when it still exists."""
    project, offset, how, state, ports, _volumes, worktree = row
    return {
        "compose_project": project,
        "offset": int(offset) if offset.isdigit() else None,
        "how": how,
        "claimed_by": label,
        "env": env_name,
        "worktree": worktree,
        "worktree_exists": Path(worktree).is_dir(),
        "state": state,
        "containers": [{"name": name, "state": status} for name, status in copy.get("containers", [])],
        "ports": [int(p) for p in ports.split(",") if p.isdigit()],
        "volumes": list(copy.get("volumes", [])),
        "urls": _urls(worktree, offset, project, env_name),
    }


def _urls(worktree: str, offset: str, project: str, env_name: str | None) -> dict[str, str]:
    """{VARIABLE: URL} of a copy, as `make env` in its worktree would print them (masked); {} when that cannot be told."""
    from .. import derive

    root = Path(worktree)
    if not offset.isdigit() or not (root / "stack.yml").is_file():
        return {}
    try:
        values = derive.load(root, {"PORT_OFFSET": offset, "ENV": env_name or "dev"})
        if values["COMPOSE_PROJECT_NAME"] != project:  # another environment's copy: find it by name
            for other in ("test", "ci"):
                candidate = derive.load(root, {"PORT_OFFSET": offset, "ENV": other})
                if candidate["COMPOSE_PROJECT_NAME"] == project:
                    values = candidate
                    break
            else:
                return {}
        return derive.urls(values)
    except (StackError, OSError):
        return {}


def _row(project: str, worktree: str, offset: str, how: str, ports: Iterable[int], copy: Mapping[str, Any]) -> tuple[str, ...]:
    states = [s for _, s in copy.get("containers", [])]
    running = sum(1 for s in states if s == "running")
    state = f"running {running}/{len(states)}" if running else ("stopped" if states else "no containers")
    return (project, offset, how, state, ",".join(map(str, sorted(ports))) or "-", ",".join(copy.get("volumes", [])) or "-", worktree)


def orphaned_copies() -> dict[tuple[str, str], dict[str, list[str]]]:
    """{(compose project, worktree): {containers, volumes, networks}} of copies whose worktree directory is gone.

    Only objects labelled with that vanished path count (compose's working-dir label on containers,
    this template's worktree label on volumes, networks and test containers); a copy whose worktree
    exists is never among them, whatever its name.
    """
    found: dict[tuple[str, str], dict[str, list[str]]] = {}
    d = docker_state
    queries = (  # (kind, docker arguments, name field, label naming the copy, label naming its worktree)
        ("containers", ["ps", "-a", "--filter", f"label={d.WORKDIR_LABEL}"], "Names", d.PROJECT_LABEL, d.WORKDIR_LABEL),
        ("containers", ["ps", "-a", "--filter", f"label={d.TEST_COPY_LABEL}"], "Names", d.TEST_COPY_LABEL, d.WORKTREE_LABEL),
        ("volumes", ["volume", "ls", "--filter", f"label={d.WORKTREE_LABEL}"], "Name", d.PROJECT_LABEL, d.WORKTREE_LABEL),
        ("networks", ["network", "ls", "--filter", f"label={d.TEST_COPY_LABEL}"], "Name", d.TEST_COPY_LABEL, d.WORKTREE_LABEL),
    )
    for kind, args, field, copy_label, tree_label in queries:
        labels = "".join("\t{{.Label " + f'"{label}"' + "}}" for label in (copy_label, tree_label))
        for line in d.docker(*args, "--format", "{{." + field + "}}" + labels).splitlines():
            name, project, tree = [*line.split("\t"), "", ""][:3]
            if project and tree and not Path(tree).is_dir():
                found.setdefault((project, tree), {"containers": [], "volumes": [], "networks": []})[kind].append(name)
    for (project, _tree), objects in found.items():  # the compose network: by its project (removal fails if a live one uses it)
        if objects["containers"]:
            objects["networks"] += [n for n in d.networks(project) if n not in objects["networks"]]
    return found


def stale_engine_claims(environ: Mapping[str, str]) -> list[tuple[int, dict[str, str]]]:
    """The engine's slot claims this machine made for worktrees that are gone (other machines' claims are theirs to judge)."""
    if not registry.engine_claims_on(environ):
        return []
    mine = registry.machine_id(environ)
    return [
        (slot, labels)
        for slot, labels in sorted(registry.engine_claims().items())
        if labels.get(registry.SLOT_MACHINE_LABEL) == mine and not Path(labels.get(registry.SLOT_TREE_LABEL) or "/nonexistent").is_dir()
    ]


def orphaned_routes() -> list[tuple[str, str, str]]:
    """(proxy port, compose project, worktree) of named-URL routes whose worktree directory is gone."""
    from .. import proxy

    return [
        (port, project, entry.get("worktree", ""))
        for port, table in sorted(proxy.proxies().items())
        for project, entry in sorted(table.items())
        if entry.get("worktree") and not Path(entry["worktree"]).is_dir()
    ]


def remove_orphans(orphans: Mapping[tuple[str, str], Mapping[str, list[str]]]) -> None:
    """Remove the copies of vanished worktrees: their containers, the images compose built for them, networks and volumes."""
    for (project, _tree), objects in orphans.items():
        if objects["containers"]:
            docker_state.docker("rm", "-f", "-v", *objects["containers"])
            for ref in docker_state.images(project):  # the images compose built for it (labelled with its project)
                try:
                    docker_state.docker("image", "rm", ref)
                except StackError:
                    pass  # used by a container outside that copy: not the orphan's to remove
        for network in objects["networks"]:
            try:
                docker_state.docker("network", "rm", network)
            except StackError:
                pass  # still used by a live container: not an orphan's to remove
        if objects["volumes"]:
            docker_state.docker("volume", "rm", *objects["volumes"])


def gc(environ: Mapping[str, str], force: bool) -> int:
    """`make gc`: list stale claims and copies of vanished worktrees; with `force`, free and remove them."""
    try:
        copies = docker_copies()
        orphans = orphaned_copies()
    except StackError as exc:
        print(f"warning: {exc}; only claims whose worktree is gone count as stale", file=sys.stderr)
        copies, orphans = None, {}
    for (project, gone), objects in sorted(orphans.items()):
        listed = "; ".join(f"{kind} {', '.join(names)}" for kind, names in objects.items() if names)
        print(f"{'removing' if force else 'would remove'} copy {project} of vanished worktree {gone}: {listed}")
    if orphans and force:
        remove_orphans(orphans)
        print(
            f"removed {len(orphans)} cop{'y' if len(orphans) == 1 else 'ies'} of vanished worktrees (their test databases with their volumes)"
        )
    for slot, labels in [] if copies is None else stale_engine_claims(environ):
        print(
            f"{'removing' if force else 'would remove'} the engine's claim of PORT_OFFSET={slot} (vanished worktree {labels.get(registry.SLOT_TREE_LABEL)})"
        )
        if force:
            docker_state.docker("rm", f"{registry.SLOT_PREFIX}{slot}")
    routes = [] if copies is None else orphaned_routes()
    for port, project, gone in routes:
        print(
            f"{'removing' if force else 'would remove'} the named URLs of {project} (vanished worktree {gone}) from the proxy on port {port}"
        )
        if force:
            from .. import proxy

            proxy.withdraw(project, port, environ)
    with registry.Registry(registry.state_dir(environ)) as reg:
        stale = stale_claims(reg.claims, copies, time.time())
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
                registry.write_dynamic(tree, claim.get("env", "dev"), None)
        reg.write()
    print(f"freed {len(stale)} claim(s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`make slots` / `make gc`."""
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["slots", "gc"], help="slots: every copy on this machine; gc: stale claims")
    parser.add_argument(
        "--force",
        action="store_true",
        default=truthy(os.environ.get("FORCE")),
        help="gc: free the stale claims (default: only list them; FORCE=1)",
    )
    parser.add_argument("--format", default=os.environ.get("FORMAT") or "table", help="slots: table (default) or json (FORMAT=json)")
    parser.add_argument(
        "--contexts",
        default=os.environ.get("CONTEXTS") or "",
        help="slots: docker contexts to list, comma-separated (CONTEXTS=default,build-box); default: the current engine",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    contexts = [c.strip() for c in args.contexts.split(",") if c.strip()] or None
    return run(lambda: slots(os.environ, args.format, contexts) if args.command == "slots" else gc(os.environ, args.force))
