"""pytest plugin (entry point ``pytest11``): isolate every pytest-xdist worker of this stack copy.

Registered by the helper package's entry point, so a suite needs no
conftest line. Inert outside a parallel-stacks project (no stack.yml at or
above the rootdir). Hooks here; fixtures in ``fixtures``; what a worker owns
and the database/Redis administration in ``isolation``.

``--no-isolation`` gives every worker the same database, ports, directory,
prefix and namespace: the example tests then collide, which proves they can.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ..basics import StackError
from .fixtures import (
    container_name,
    database_url,
    db,
    isolated_database,
    parallel_context,
    redis_namespace,
    stack,
    topic_namespace,
    worker_ports,
    worker_tmp_dir,
)
from .isolation import (
    admin_connect,
    build_template,
    clear_stale_redis,
    clone_database,
    drop_database,
    drop_owned_databases,
)
from .state import STATE, State, _is_worker, stack_down_message, take_run_lock

__all__ = [
    "container_name",
    "database_url",
    "db",
    "isolated_database",
    "parallel_context",
    "pytest_addoption",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_unconfigure",
    "redis_namespace",
    "stack",
    "topic_namespace",
    "worker_ports",
    "worker_tmp_dir",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("isolation", "per-worker isolation of this stack copy")
    group.addoption(
        "--no-isolation",
        action="store_true",
        help="share one database, port block, directory and namespace between all workers (to prove tests detect collisions)",
    )
    group.addoption("--no-stack", action="store_true", help="do not touch the stack (for tests that need no database, e.g. -m unit)")
    group.addoption(
        "--isolation-redis", choices=["prefix", "db"], default=None, help="isolate Redis by key prefix (default) or by DB index 1..15"
    )
    parser.addini(
        "isolation_schema",
        "schema files (relative to rootdir) loaded into the template database",
        type="linelist",
        default=["db/schema.sql"],
    )
    parser.addini("isolation_redis", "prefix or db", default="prefix")


GROUPING_SCHEDULERS = ("loadscope", "loadfile", "loadgroup")


def _no_restart_under_grouping(config: pytest.Config) -> None:
    """xdist 3.8's grouping schedulers can hang for good after replacing a crashed
    worker (pytest-xdist#1323, #1378): under them a crash ends the run instead."""
    option = config.option
    if getattr(option, "dist", "no") in GROUPING_SCHEDULERS and getattr(option, "maxworkerrestart", "") is None:
        option.maxworkerrestart = "0"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    from ..root import find

    root = find({"STACK_ROOT": os.environ.get("STACK_ROOT", "")}, str(config.rootpath))
    if root is None:
        return  # not a parallel-stacks project: the plugin stays out of the way
    if not _is_worker(config):
        _no_restart_under_grouping(config)
    try:
        state = State(config, Path(root))
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[STATE] = state
    ctx = state.context
    # Settings before any application code is imported (collection comes later).
    os.environ.update(
        DATABASE_URL=ctx.database_url,
        TEST_DATABASE_NAME=ctx.database_name,
        TEST_WORKER_ID=ctx.worker,
        TEST_PORT_BLOCK=f"{ctx.ports.start}-{ctx.ports.stop - 1}",
        TEST_TOPIC_PREFIX=ctx.topics.prefix,
        MEDIA_ROOT=str(ctx.tmp_dir),
    )
    if ctx.redis is not None:
        os.environ.update(REDIS_URL=ctx.redis.url.rsplit("/", 1)[0] + f"/{ctx.redis.db}", REDIS_KEY_PREFIX=ctx.redis.prefix)
    if _is_worker(config) or not state.use_stack:
        return
    # Controller (or the single process without xdist): once per run.
    try:
        from ..ownership import ensure_owned

        ensure_owned(state.values)  # another worktree's copy: refuse before touching it
        state.lock_fd = take_run_lock(state.values)
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    try:
        with admin_connect(state.values) as conn:
            drop_owned_databases(conn, state.values)
            clear_stale_redis(state.values, state.redis_mode)
            build_template(conn, state.values, [p for p in state.schema if p.exists()])
            if not state.isolated:
                clone_database(conn, state.values, ctx.database_name)
    except StackError as exc:
        raise pytest.UsageError(str(exc)) from None
    except Exception as exc:  # psycopg.OperationalError and friends: one clear line
        raise pytest.UsageError(stack_down_message(state.values, exc)) from None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller hook: hand every worker the run's temp root and the copy's values."""
    state = node.config.stash.get(STATE, None)
    if state is not None:
        node.workerinput["isolation_run_dir"] = str(state.run_dir)
        node.workerinput["isolation_values"] = dict(state.values)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is None:
        return
    if not _is_worker(config):
        import shutil

        shutil.rmtree(state.run_dir, ignore_errors=True)
    if not state.use_stack:
        return
    try:
        with admin_connect(state.values) as conn:
            for name in state.created:
                drop_database(conn, name)
            if not _is_worker(config):
                # The controller outlives its workers: whatever a crashed worker
                # left (its database, its keys) goes too. One run per copy.
                drop_owned_databases(conn, state.values)
                clear_stale_redis(state.values, state.redis_mode)
    except Exception:
        pass  # the next run's start drops whatever is left
    finally:
        if state.lock_fd is not None:
            os.close(state.lock_fd)  # the next run of this copy may start
            state.lock_fd = None
