"""Layer 6: whose copy is this? The one ownership rule, used by every command
that changes or reads a copy (up, down, nuke, ps, logs, psql, test runs).

Two worktrees at the same offset derive the same names. A compose project's
containers carry the directory compose ran in; our volumes carry their
worktree. Another worktree's copy is never used, stopped or removed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from . import engine
from .basics import StackError
from .engine import PROJECT_LABEL, WORKDIR_LABEL, WORKTREE_LABEL
from .settings import Settings

__all__ = ["check_ownership", "ensure_owned", "foreign_worktree", "judge_ownership"]


def foreign_worktree(labels: Mapping[str, str], here: str) -> str | None:
    """The worktree a labelled object belongs to, when that is not `here`."""
    tree = labels.get(WORKTREE_LABEL)
    return tree if tree and os.path.realpath(tree) != os.path.realpath(here) else None


def check_ownership(settings: Settings, values: Mapping[str, str], records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Refuse (StackError) when this copy's compose project or volumes belong elsewhere.

    Returns the container records so callers need not ask twice.
    """
    records = engine.containers(settings, values["COMPOSE_PROJECT_NAME"]) if records is None else records
    volume_labels: dict[str, dict[str, str] | None] = {}
    for key, name in values.items():
        if key.endswith("_VOLUME"):
            rec = engine.volume(settings, name)
            volume_labels[name] = None if rec is None else (rec.get("Labels") or {})
    judge_ownership(values, [rec.get("Config", {}).get("Labels") or {} for rec in records], volume_labels)
    return records


def ensure_owned(settings: Settings, values: Mapping[str, str]) -> None:
    """check_ownership's verdict for commands that need only the verdict (down, ps, logs, tests).

    Asks the engine's socket directly (a few ms); falls back to the CLI.
    """
    import json
    from urllib.parse import quote

    project = values["COMPOSE_PROJECT_NAME"]
    filters = quote(json.dumps({"label": [f"{PROJECT_LABEL}={project}"]}))
    answer = engine.engine_request(settings, f"/containers/json?all=1&filters={filters}")
    if answer is None or answer[0] != 200:
        check_ownership(settings, values)
        return
    try:
        labels = [rec.get("Labels") or {} for rec in json.loads(answer[1])]
    except (ValueError, AttributeError):
        check_ownership(settings, values)
        return
    volume_labels: dict[str, dict[str, str] | None] = {}
    for key, name in values.items():
        if not key.endswith("_VOLUME"):
            continue
        answer = engine.engine_request(settings, f"/volumes/{quote(name)}")
        if answer is None or answer[0] not in (200, 404):
            check_ownership(settings, values)
            return
        volume_labels[name] = None if answer[0] == 404 else (json.loads(answer[1]).get("Labels") or {})
    judge_ownership(values, labels, volume_labels)


def judge_ownership(
    values: Mapping[str, str], container_labels: list[dict[str, str]], volume_labels: Mapping[str, Mapping[str, str] | None]
) -> None:
    """The ownership rule, once: every container of this copy's compose project was
    started from this worktree, and every volume of its name was created by this
    copy's compose project from this worktree. StackError naming the owner if not."""
    project = values["COMPOSE_PROJECT_NAME"]
    here = os.path.realpath(values["STACK_WORKTREE"])
    for container in container_labels:
        workdir = container.get(WORKDIR_LABEL)
        if workdir and os.path.realpath(workdir) != here:
            raise StackError(
                f"compose project {project} belongs to another worktree ({workdir}); use another PORT_OFFSET here, or stop that copy there"
            )
    for name, labels in volume_labels.items():
        if labels is None:
            continue
        owner = labels.get(PROJECT_LABEL)
        tree = foreign_worktree(labels, here)
        if owner != project:
            raise StackError(
                f"volume {name} exists but was not created by this copy (compose project {owner or 'none'}); "
                "refusing to touch it: rename or remove it yourself, or use another PORT_OFFSET"
            )
        if tree:
            raise StackError(f"volume {name} belongs to another worktree ({tree}); refusing to touch it: use another PORT_OFFSET here")
