"""The fleet: every copy on this machine (or on each of several engines) and what `make gc` would remove.

Copies are found in the slot registry and in Docker's labels (volumes this
template labels with their worktree, containers of their compose project),
so copies with a fixed PORT_OFFSET show up too. `make slots`, `make gc`,
`make doctor` and the dashboard (commands/) read them from here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import engine as docker_state
from .basics import StackError, pid_alive
from .registry import slots as engine_slots
from .registry import store
from .settings import Settings

GRACE_SECONDS = 600  # a fresh claim may not have started its stack yet


def docker_copies(settings: Settings) -> dict[str, dict[str, Any]]:
    """{compose project: {worktree, volumes, containers: [{name, state, health, service}], ports, created, sizes}}
    from Docker labels.

    Three requests on the engine's socket whatever the number of copies (the CLI path below asked
    twice per copy: 30 copies took seconds).
    """
    volumes = docker_state.labelled_volumes(settings, docker_state.WORKTREE_LABEL)
    listed = docker_state.labelled_containers(settings, docker_state.PROJECT_LABEL) if volumes is not None else None
    if volumes is None or listed is None:
        return _docker_copies_by_cli(settings)
    sizes = _volume_sizes(settings)
    copies: dict[str, dict[str, Any]] = {}
    for rec in volumes:
        labels = rec.get("Labels") or {}
        project = labels.get(docker_state.PROJECT_LABEL)
        if project:
            copy = copies.setdefault(project, _new_copy(labels.get(docker_state.WORKTREE_LABEL)))
            copy["volumes"].append(rec["Name"])
            copy["sizes"][rec["Name"]] = sizes.get(rec["Name"])
            copy["created"].append(iso_utc(rec.get("CreatedAt")))
    for entry in sorted(listed, key=lambda e: str((e.get("Names") or [""])[0])):
        labels = entry.get("Labels") or {}
        owner = copies.get(labels.get(docker_state.PROJECT_LABEL, ""))
        if owner is None:
            continue
        state = str(entry.get("State") or "?")
        owner["containers"].append(
            {
                "name": str((entry.get("Names") or ["?"])[0]).lstrip("/"),
                "service": labels.get(SERVICE_LABEL),
                "state": state,
                "health": _health(state, _status_health(str(entry.get("Status") or ""))),
            }
        )
        owner["created"].append(iso_utc(entry.get("Created")))
        if state == "running":
            owner["ports"] |= {int(p["PublicPort"]) for p in entry.get("Ports") or [] if p.get("PublicPort")}
    for copy in copies.values():
        copy["volumes"].sort()
    return copies


SERVICE_LABEL = "com.docker.compose.service"


def _new_copy(worktree: str | None) -> dict[str, Any]:
    return {"worktree": worktree, "volumes": [], "containers": [], "ports": set(), "created": [], "sizes": {}}


def _volume_sizes(settings: Settings) -> dict[str, int | None]:
    """{volume: bytes} as `docker system df -v` counts them (the engine's own figure); {} when it cannot tell."""
    import json

    body = docker_state.engine_get(settings, "/system/df?type=volume")
    try:
        found = json.loads(body or b"{}").get("Volumes") or []
        return {str(v["Name"]): (v.get("UsageData") or {}).get("Size") for v in found}
    except (ValueError, AttributeError, KeyError, TypeError):
        return {}


def _status_health(status: str) -> str | None:
    """The health a container list's `Status` ("Up 3 minutes (healthy)") reports; None without a check."""
    for word in ("unhealthy", "healthy", "health: starting"):
        if f"({word})" in status:
            return "starting" if word == "health: starting" else word
    return None


def _health(state: str, check: str | None) -> str:
    """A service's health in one word: healthy, unhealthy, starting, running (no check), or its state (exited ...)."""
    if state != "running":
        return "stopped" if state in ("exited", "created", "dead") else state
    return check or "running"


def iso_utc(value: Any) -> str | None:
    """A timestamp (epoch seconds, or the engine's RFC 3339 text) as UTC `YYYY-MM-DDTHH:MM:SSZ`; None when unknown."""
    from datetime import datetime, timezone

    try:
        if isinstance(value, (int, float)):
            moment = datetime.fromtimestamp(value, timezone.utc)
        else:
            text = str(value)
            head, dot, rest = text.partition(".")  # nanoseconds: more digits than fromisoformat takes
            if dot:
                zone = next((rest[i:] for i, c in enumerate(rest) if not c.isdigit()), "")
                text = head + zone
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, TypeError, OverflowError, OSError):
        return None


def _docker_copies_by_cli(settings: Settings) -> dict[str, dict[str, Any]]:
    copies: dict[str, dict[str, Any]] = {}
    names = docker_state.docker(settings, "volume", "ls", "-q", "--filter", f"label={docker_state.WORKTREE_LABEL}").split()
    for rec in docker_state.json_list(settings, "volume", "inspect", *names) if names else []:
        labels = rec.get("Labels") or {}
        project = labels.get(docker_state.PROJECT_LABEL)
        if project:
            copy = copies.setdefault(project, _new_copy(labels.get(docker_state.WORKTREE_LABEL)))
            copy["volumes"].append(rec["Name"])
            copy["sizes"][rec["Name"]] = None
            copy["created"].append(iso_utc(rec.get("CreatedAt")))
    for project, copy in copies.items():
        for rec in docker_state.containers(settings, project):
            status = rec["State"].get("Status", "?")
            check = (rec["State"].get("Health") or {}).get("Status")
            copy["containers"].append(
                {
                    "name": rec["Name"].lstrip("/"),
                    "service": (rec.get("Config", {}).get("Labels") or {}).get(SERVICE_LABEL),
                    "state": status,
                    "health": _health(status, check),
                }
            )
            copy["created"].append(iso_utc(rec.get("Created")))
            copy["ports"] |= docker_state.published_ports([rec])
    return copies


def stale_claims(
    settings: Settings, claims: Mapping[str, dict[str, Any]], copies: Mapping[str, Any] | None, now: float
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
        if project and project not in copies and not docker_state.containers(settings, project) and not young:
            stale.append((key, claim, "no containers or volumes left"))
    return stale


def engine_context(settings: Settings, context: str | None) -> Settings:
    """`settings` pointed at the docker CLI context `context` (None: as they are); nothing else changes."""
    return settings if context is None else settings.replace(DOCKER_HOST=None, DOCKER_CONTEXT=context)


def snapshot(settings: Settings, contexts: list[str] | None = None) -> dict[str, Any]:
    """The fleet: what `make slots FORMAT=json` prints and the dashboard serves (one function for both).

    {"taken_at", "copies": [...], "stale": [what `make gc` would remove], "engine_errors": [{engine, error}]}.
    """
    return collect(settings, contexts)[1]


def collect(base: Settings, contexts: list[str] | None) -> tuple[list[tuple[str, ...]], dict[str, Any]]:
    """(the table's rows, the snapshot): every copy on the engine (or each docker context of `contexts`), with this
    machine's claims."""
    with store.Registry(base) as reg:
        claims = dict(reg.claims)
    rows: list[tuple[str, ...]] = []
    records: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    stale: list[dict[str, Any]] = []
    seen: set[str] = set()
    show = base.flag("SHOW_SECRETS")
    targets: list[str | None] = list(contexts) if contexts else [None]
    for index, context in enumerate(targets):
        settings = engine_context(base, context)
        endpoint = docker_state.location(settings)[0]
        reachable = True
        try:
            copies = docker_copies(settings)
            on_engine = engine_slots.engine_claims(settings) if engine_slots.engine_claims_on(settings) else {}
        except StackError as exc:
            errors.append({"engine": endpoint, "error": str(exc)})
            copies, on_engine, reachable = {}, {}, False
        named = _named_urls(settings) if reachable else {}
        if reachable and context is None:
            stale = would_remove(settings, claims, copies)
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
            extra = {"claimed_at": iso_utc(claim.get("claimed_at")) if claim.get("claimed_at") else None}
            record = _record(rows[-1][:-1], copy, claim.get("env"), claim.get("label"), named, show)
            records.append({**record, **extra, "engine": endpoint})
        for project, copy in sorted(copies.items()):
            if project not in listed:
                offset = project.rsplit("-", 1)[-1]
                rows.append((*_row(project, copy.get("worktree") or "?", offset, "fixed", sorted(copy["ports"]), copy), endpoint))
                records.append({**_record(rows[-1][:-1], copy, None, None, named, show), "claimed_at": None, "engine": endpoint})
        me = engine_slots.machine_id(settings)
        for slot, labels in sorted(on_engine.items()):
            if labels.get(engine_slots.SLOT_MACHINE_LABEL) != me:  # another machine's claim on this engine
                holder = engine_slots.holder(labels)
                rows.append(("?", str(slot), "claimed", "-", "-", "-", holder, endpoint))
                records.append({"compose_project": None, "offset": slot, "how": "claimed", "claimed_by": holder, "engine": endpoint})
    taken = iso_utc(time.time())
    return rows, {"taken_at": taken, "copies": records, "stale": stale, "engine_errors": errors}


def _record(
    row: tuple[str, ...],
    copy: Mapping[str, Any],
    env_name: str | None,
    label: str | None,
    named: Mapping[str, dict[str, str]],
    show_secrets: bool,
) -> dict[str, Any]:
    """One copy for `make slots FORMAT=json` and the dashboard; its URLs derived in its worktree (secrets masked
    unless `show_secrets`) when it still exists, its named URLs as the proxy routes them."""
    project, offset, how, state, ports, _volumes, worktree = row
    created = [c for c in copy.get("created", []) if c]
    derived = _derived(worktree, offset, project, env_name)
    return {
        "compose_project": project,
        "offset": int(offset) if offset.isdigit() else None,
        "how": how,
        "claimed_by": label,
        "env": env_name or derived.get("STACK_ENV"),
        "worktree": worktree,
        "worktree_exists": Path(worktree).is_dir(),
        "branch": git_branch(Path(worktree)),
        "state": state,
        "containers": [{"name": c["name"], "state": c["state"]} for c in copy.get("containers", [])],
        "services": [
            {
                "service": c["service"] or c["name"],
                "container": c["name"],
                "health": c["health"],
                "ok": c["health"] in ("healthy", "running"),
            }
            for c in copy.get("containers", [])
        ],
        "ports": [int(p) for p in ports.split(",") if p.isdigit()],
        "volumes": list(copy.get("volumes", [])),
        "volume_sizes": {name: copy.get("sizes", {}).get(name) for name in copy.get("volumes", [])},
        "created_at": min(created) if created else None,
        "urls": _urls(derived, show_secrets),
        "named_urls": dict(named.get(project, {})),
        "test_run": run_lock_holder(project),
    }


def _derived(worktree: str, offset: str, project: str, env_name: str | None) -> dict[str, str]:
    """The copy's values as `make env` in its worktree derives them (any ENV whose copy has this name); {} when
    that cannot be told (the worktree gone, another project)."""
    from . import derive

    root = Path(worktree)
    if not offset.isdigit() or not (root / "stack.yml").is_file():
        return {}
    try:
        for name in dict.fromkeys((env_name or "dev", "dev", "test", "ci")):
            values = derive.load(root, Settings({"PORT_OFFSET": offset, "ENV": name}))  # that copy's own values, not this shell's
            if values["COMPOSE_PROJECT_NAME"] == project:
                return dict(values)
    except (StackError, OSError):
        pass
    return {}


def _urls(derived: Mapping[str, str], show_secrets: bool = False) -> dict[str, str]:
    """{VARIABLE: URL} of a copy (its derived values, {} when unknown), as `make env` prints them (masked unless `show_secrets`)."""
    from . import derive

    if not derived:
        return {}
    if show_secrets:
        return {key: value for key, value in derived.items() if key.endswith("_URL")}
    try:
        return derive.urls(derived)
    except (StackError, OSError):
        return {}


def _named_urls(settings: Settings) -> dict[str, dict[str, str]]:
    """{compose project: {service: named URL}} as the machine's named-URL proxies route them now."""
    from . import proxy

    found: dict[str, dict[str, str]] = {}
    try:
        tables = proxy.proxies(settings)
    except StackError:
        return found
    for port, table in sorted(tables.items()):
        for project, entry in table.items():
            for host in sorted(entry.get("routes", {})):
                found.setdefault(project, {})[host.split(".", 1)[0]] = f"http://{host}:{port}"
    return found


def git_branch(tree: Path) -> str | None:
    """The branch checked out in the git worktree holding `tree` (read from its HEAD, no git process);
    `detached <sha>` on a detached HEAD; None outside git or when the directory is gone."""
    for directory in (tree, *tree.parents):
        dot_git = directory / ".git"
        try:
            if dot_git.is_file():
                gitdir = Path(dot_git.read_text().partition("gitdir:")[2].strip())
                head = ((gitdir if gitdir.is_absolute() else directory / gitdir) / "HEAD").read_text().strip()
            elif dot_git.is_dir():
                head = (dot_git / "HEAD").read_text().strip()
            else:
                continue
        except OSError:
            return None
        if head.startswith("ref:"):
            return head[4:].strip().removeprefix("refs/heads/")
        return f"detached {head[:12]}"
    return None


def run_lock_holder(project: str) -> dict[str, Any] | None:
    """{"pid", "since"} of the test run holding the copy's run lock (`$TMPDIR/parallel-stacks-<copy>.testlock`); None
    when no run holds it. Asked of /proc/locks where there is one (taking the lock to test it would make a starting
    run wait), else by trying a shared flock."""
    import tempfile

    path = Path(tempfile.gettempdir()) / f"parallel-stacks-{project}.testlock"  # pytest_plugin.state.run_lock_path
    try:
        info = path.stat()
        pid = path.read_text()[:32].strip()
    except OSError:
        return None
    if not _flock_held(path, info.st_dev, info.st_ino):
        return None
    return {"pid": int(pid) if pid.isdigit() else None, "since": iso_utc(info.st_mtime)}


def _flock_held(path: Path, dev: int, ino: int) -> bool:
    try:
        with open("/proc/locks", encoding="ascii") as locks:
            table = locks.read()
    except OSError:
        table = None
    if table is not None:
        wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
        return any(
            len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == wanted for fields in (line.split() for line in table.splitlines())
        )
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _row(project: str, worktree: str, offset: str, how: str, ports: Iterable[int], copy: Mapping[str, Any]) -> tuple[str, ...]:
    states = [c["state"] for c in copy.get("containers", [])]
    running = sum(1 for s in states if s == "running")
    state = f"running {running}/{len(states)}" if running else ("stopped" if states else "no containers")
    return (project, offset, how, state, ",".join(map(str, sorted(ports))) or "-", ",".join(copy.get("volumes", [])) or "-", worktree)


def would_remove(settings: Settings, claims: Mapping[str, dict[str, Any]], copies: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What `make gc FORCE=1` would remove now: [{kind, name, worktree, why}] (claims, copies, engine claims, routes)."""
    found: list[dict[str, Any]] = []
    for (project, gone), objects in sorted(orphaned_copies(settings).items()):
        listed = "; ".join(f"{kind} {', '.join(names)}" for kind, names in objects.items() if names)
        found.append({"kind": "copy", "name": project, "worktree": gone, "why": f"worktree is gone ({listed})"})
    for slot, labels in stale_engine_claims(settings):
        found.append(
            {
                "kind": "engine claim",
                "name": f"PORT_OFFSET={slot}",
                "worktree": labels.get(engine_slots.SLOT_TREE_LABEL),
                "why": "worktree is gone",
            }
        )
    for port, project, tree, why in orphaned_routes(settings):
        found.append({"kind": "route", "name": f"{project} on proxy port {port}", "worktree": tree, "why": why})
    for _key, claim, why in stale_claims(settings, claims, copies, time.time()):
        found.append({"kind": "claim", "name": f"PORT_OFFSET={claim['offset']}", "worktree": claim["worktree"], "why": why})
    return found


def orphaned_copies(settings: Settings) -> dict[tuple[str, str], dict[str, list[str]]]:
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
        listed = _labelled(settings, kind, args[-1].removeprefix("label="))
        if listed is None:  # the socket cannot be asked: the CLI
            labels = "".join("\t{{.Label " + f'"{label}"' + "}}" for label in (copy_label, tree_label))
            lines = d.docker(settings, *args, "--format", "{{." + field + "}}" + labels).splitlines()
            listed = [[*line.split("\t"), "", ""][:3] for line in lines]
        else:
            listed = [[name, labels.get(copy_label, ""), labels.get(tree_label, "")] for name, labels in listed]
        for name, project, tree in listed:
            if project and tree and not Path(tree).is_dir():
                found.setdefault((project, tree), {"containers": [], "volumes": [], "networks": []})[kind].append(name)
    for (project, _tree), objects in found.items():  # the compose network: by its project (removal fails if a live one uses it)
        if objects["containers"]:
            objects["networks"] += [n for n in d.networks(settings, project) if n not in objects["networks"]]
    return found


def _labelled(settings: Settings, kind: str, label: str) -> list[Any] | None:
    """[(name, labels)] of the engine's `kind` (containers, volumes, networks) carrying `label`, asked on its
    socket (a few ms; the CLI took ~25 ms a kind); None when the socket cannot be asked."""
    import json
    from urllib.parse import quote

    if kind == "containers":
        found = docker_state.labelled_containers(settings, label)
        return None if found is None else [(str((c.get("Names") or ["?"])[0]).lstrip("/"), c.get("Labels") or {}) for c in found]
    if kind == "volumes":
        volumes = docker_state.labelled_volumes(settings, label)
        return None if volumes is None else [(str(v.get("Name")), v.get("Labels") or {}) for v in volumes]
    answer = docker_state.engine_request(settings, f"/networks?filters={quote(json.dumps({'label': [label]}))}")
    if answer is None or answer[0] != 200:
        return None
    try:
        return [(str(n.get("Name")), n.get("Labels") or {}) for n in json.loads(answer[1])]
    except (ValueError, AttributeError, TypeError):
        return None


def stale_engine_claims(settings: Settings) -> list[tuple[int, dict[str, str]]]:
    """The engine's slot claims this machine made for worktrees that are gone (other machines' claims are theirs to judge)."""
    if not engine_slots.engine_claims_on(settings):
        return []
    mine = engine_slots.machine_id(settings)
    return [
        (slot, labels)
        for slot, labels in sorted(engine_slots.engine_claims(settings).items())
        if labels.get(engine_slots.SLOT_MACHINE_LABEL) == mine
        and not Path(labels.get(engine_slots.SLOT_TREE_LABEL) or "/nonexistent").is_dir()
    ]


def orphaned_routes(settings: Settings) -> list[tuple[str, str, str, str]]:
    """(proxy port, compose project, worktree, why) of named-URL routes whose worktree directory is gone, or whose
    serving process (a dashboard's, `make dashboard`) is."""
    from . import proxy

    found = []
    for port, table in sorted(proxy.proxies(settings).items()):
        for project, entry in sorted(table.items()):
            tree = str(entry.get("worktree", ""))
            if tree and not Path(tree).is_dir():
                found.append((port, project, tree, f"vanished worktree {tree}"))
            elif entry.get("pid") and not pid_alive(int(entry["pid"])):
                found.append((port, project, tree, f"its server, pid {entry['pid']}, is gone"))
    return found


def remove_orphans(settings: Settings, orphans: Mapping[tuple[str, str], Mapping[str, list[str]]]) -> None:
    """Remove the copies of vanished worktrees: their containers, the images compose built for them, networks and volumes."""
    for (project, _tree), objects in orphans.items():
        if objects["containers"]:
            docker_state.docker(settings, "rm", "-f", "-v", *objects["containers"])
            for ref in docker_state.images(settings, project):  # the images compose built for it (labelled with its project)
                try:
                    docker_state.docker(settings, "image", "rm", ref)
                except StackError:
                    pass  # used by a container outside that copy: not the orphan's to remove
        for network in objects["networks"]:
            try:
                docker_state.docker(settings, "network", "rm", network)
            except StackError:
                pass  # still used by a live container: not an orphan's to remove
        if objects["volumes"]:
            docker_state.docker(settings, "volume", "rm", *objects["volumes"])
