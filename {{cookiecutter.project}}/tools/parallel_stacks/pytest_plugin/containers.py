"""Containers a test starts for itself (seed 002 phases 1 and 3): a worker's own broker, say.

Named `<copy>-<worker>-<service>` (`ParallelTestContext.container_name`), on
a network of the worker's own (`<copy>-<worker>-net`), published on
127.0.0.1 on a port of the worker's block, and labelled with the copy, the
worker, the worktree and the test run. Removed when the test ends; what a
killed run left is removed by the next run of the same copy (the killed
run's directory is left behind and names the run), never another copy's:
removal filters on the run's label and the copy's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..basics import StackError
from ..engine import TEST_COPY_LABEL as COPY_LABEL
from ..engine import TEST_RUN_LABEL as RUN_LABEL
from ..engine import TEST_WORKER_LABEL as WORKER_LABEL
from ..engine import WORKTREE_LABEL, docker
from ..settings import Settings

__all__ = ["COPY_LABEL", "MARKER", "RUN_LABEL", "WORKER_LABEL", "WorkerContainer", "reap", "start", "stop"]

MARKER = "containers"  # a file in the run directory: this run started containers


@dataclass(frozen=True)
class WorkerContainer:
    name: str
    network: str
    port: int  # the published host port, on 127.0.0.1
    settings: Settings  # the engine it runs on


def start(
    settings: Settings,
    image: str,
    name: str,
    port: int,
    container_port: int,
    labels: dict[str, str],
    run_dir: Path,
    command: Sequence[str] = (),
    own_network: bool = True,
) -> WorkerContainer:
    """Start container `name` on a network of its own (`<name>-net`), published on 127.0.0.1:`port`.

    `labels`: COPY_LABEL, WORKER_LABEL and WORKTREE_LABEL; RUN_LABEL is the run directory's name.
    A leftover of the same name is removed first if it is this copy's (another's: StackError).
    `own_network=False`: on the engine's default bridge (a server reached only through its published
    port needs no network, and each network takes one of the engine's few address pools).
    """
    (run_dir / MARKER).touch()  # before anything exists: a kill from here on leaves a trace the next run follows
    labels = {**labels, RUN_LABEL: run_dir.name}
    flags = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    network = f"{name}-net" if own_network else ""
    _clear_leftovers(settings, name, network, labels)
    if network:
        docker(settings, "network", "create", *flags, network)
    container = WorkerContainer(name, network, port, settings)
    try:
        on = ["--network", network] if network else []
        docker(settings, "run", "-d", "--name", name, *on, "-p", f"127.0.0.1:{port}:{container_port}", *flags, image, *command)
    except StackError:
        stop(container)
        raise
    return container


def stop(container: WorkerContainer) -> None:
    """Remove the container and its network (what is already gone is no error)."""
    for args in (("rm", "-f", "-v", container.name), ("network", "rm", container.network)):
        if not args[-1]:
            continue
        try:
            docker(container.settings, *args)
        except StackError:
            pass


def _clear_leftovers(settings: Settings, name: str, network: str, labels: dict[str, str]) -> None:
    for kind, obj in (("container", name), ("network", network)):
        if not obj:
            continue
        try:
            found = json.loads(
                docker(settings, kind, "inspect", "--format", "{{json .Config.Labels}}" if kind == "container" else "{{json .Labels}}", obj)
            )
        except StackError:
            continue  # no such object: the usual case
        found = found or {}
        if found.get(COPY_LABEL) != labels[COPY_LABEL] or found.get(WORKTREE_LABEL) != labels[WORKTREE_LABEL]:
            raise StackError(
                f"a {kind} named {obj} exists and is not a test {kind} of this copy ({labels[COPY_LABEL]} in "
                f"{labels[WORKTREE_LABEL]}); it is left alone: remove it yourself if it is stale"
            )
        docker(settings, *(("rm", "-f", "-v") if kind == "container" else ("network", "rm")), obj)


def reap(settings: Settings, copy: str, run: str) -> list[str]:
    """Remove the containers and networks that test run `run` of copy `copy` left; return their names."""
    filters = ["--filter", f"label={RUN_LABEL}={run}", "--filter", f"label={COPY_LABEL}={copy}"]
    removed = docker(settings, "ps", "-a", *filters, "--format", "{{.Names}}").split()
    if removed:
        docker(settings, "rm", "-f", "-v", *removed)
    for network in docker(settings, "network", "ls", *filters, "--format", "{{.Name}}").split():
        docker(settings, "network", "rm", network)
        removed.append(network)
    return removed
