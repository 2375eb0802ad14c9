"""pytest-django, first class: Django's test databases are this copy's and this worker's.

Registered by the plugin when pytest-django is active; it overrides
pytest-django's documented ``django_db_setup`` fixture (a conftest's own
override still wins). For every database alias on a service of this copy
(a kind whose ``hosts_database`` says so: postgres):

- the first worker that needs the alias migrates ``test_<copy>_djtemplate``,
  once per run, with Django's own ``setup_databases`` (so migrations,
  ``--nomigrations``, cache tables and serialization behave as usual), under
  a lock in the run's directory; the others wait for it;
- every worker clones that template into its own database (the one its
  ``DATABASE_URL`` names, ``test_<copy>_gwN``; ``_1``, ``_2`` for further
  aliases) in tens of milliseconds instead of migrating;
- the clones go when the worker ends; the template, and anything a killed
  run left, when the run ends or the next one starts (the kind's cleanup).

Aliases elsewhere (SQLite, another server) get pytest-django's usual
databases, its xdist suffix included.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ..kinds import Kind
from .state import STATE, State

__all__ = ["django_db_setup", "our_aliases"]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (shared by the run's workers through its directory)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def our_aliases(state: State, databases: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[Kind, int]]:
    """{alias: (kind, n)} for Django's database aliases on this copy's services; n numbers them in settings order."""
    found: dict[str, tuple[Kind, int]] = {}
    for alias, entry in databases.items():
        if (entry.get("TEST") or {}).get("MIRROR"):
            continue  # a mirror follows its primary
        for service, kind in state.services():
            if kind.hosts_database(service, str(entry.get("ENGINE", "")), entry.get("HOST"), entry.get("PORT")):
                found[alias] = (kind, len(found))
                break
    return found


def _name(state: State, kind: Kind, who: str, n: int) -> str:
    """Alias number `n`'s database of `who` (a worker, "shared", or "djtemplate": the run's migrated template)."""
    return kind.test_database_name(state.copy, who if n == 0 else f"{who}_{n}")


def _point(alias: str, name: str) -> None:
    """Alias `alias` (and its mirrors) now means database `name`, as Django's create_test_db does it."""
    from django.conf import settings
    from django.db import connections

    for other, entry in settings.DATABASES.items():
        if other == alias or (entry.get("TEST") or {}).get("MIRROR") == alias:
            connections[other].close()
            entry["NAME"] = name
            connections[other].settings_dict["NAME"] = name


def _build_templates(state: State, mine: Mapping[str, tuple[Kind, int]], serialized: set[str], verbosity: int) -> None:
    """Migrate each alias's template once per run: the first worker to get here does it, the others wait and reuse."""
    from django.conf import settings
    from django.db import connections
    from django.test.utils import setup_databases

    run_dir = state.run_dir
    with _locked(run_dir / "django-templates.lock"):
        todo = {alias: v for alias, v in mine.items() if not (run_dir / f"django-template-{alias}.done").exists()}
        if not todo:
            return
        for alias, (kind, n) in todo.items():
            settings.DATABASES[alias].setdefault("TEST", {})["NAME"] = _name(state, kind, "djtemplate", n)
        setup_databases(verbosity=verbosity, interactive=False, aliases=set(todo), serialized_aliases=set(todo) & serialized)
        for alias, (kind, n) in todo.items():
            contents = getattr(connections[alias], "_test_serialized_contents", None)
            if contents is not None:
                (run_dir / f"django-template-{alias}.json").write_text(contents, encoding="utf-8")
            connections[alias].close()  # a session on a template would block its clones
            kind.seal_test_database(state.copy, _name(state, kind, "djtemplate", n))
            (run_dir / f"django-template-{alias}.done").touch()


def _take_clones(state: State, mine: Mapping[str, tuple[Kind, int]], serialized: set[str]) -> dict[str, str]:
    """Clone each alias's template into this worker's database; returns {alias: database}."""
    from django.db import connections

    taken: dict[str, str] = {}
    run_dir = state.run_dir
    for alias, (kind, n) in mine.items():
        worker = state.worker_for(kind)
        name = _name(state, kind, worker.who, n)
        template = _name(state, kind, "djtemplate", n)
        if worker.isolated:
            kind.clone_test_database(state.copy, name, template)
        else:  # one database for every worker (--no-isolation): cloned once, by whoever comes first
            with _locked(run_dir / "django-shared.lock"):
                marker = run_dir / f"django-shared-{alias}.done"
                if not marker.exists():
                    kind.clone_test_database(state.copy, name, template)
                    marker.touch()
        _point(alias, name)
        taken[alias] = name
        if alias in serialized:  # serialized_rollback: the template's contents, serialized once
            saved = run_dir / f"django-template-{alias}.json"
            contents = saved.read_text(encoding="utf-8") if saved.exists() else connections[alias].creation.serialize_db_to_string()
            connections[alias]._test_serialized_contents = contents
    return taken


@pytest.fixture(scope="session")
def django_db_setup(
    request: pytest.FixtureRequest,
    django_test_environment: None,
    django_db_blocker: Any,
    django_db_use_migrations: bool,
    django_db_keepdb: bool,
    django_db_createdb: bool,
    django_db_modify_db_settings: None,
) -> Iterator[None]:
    """pytest-django's top-level database fixture, with this copy's per-worker databases cloned from a template."""
    from django.conf import settings
    from django.db import connections
    from django.test.utils import setup_databases, teardown_databases
    from pytest_django.fixtures import _disable_migrations, _get_databases_for_setup  # its own helpers, as its fixture uses them

    state: State = request.config.stash[STATE]
    wanted, serialized = _get_databases_for_setup(request.session.items)
    mine = {a: v for a, v in our_aliases(state, settings.DATABASES).items() if a in wanted} if state.use_stack else {}
    others = set(wanted) - set(mine)
    verbosity = int(request.config.option.verbose)
    if not django_db_use_migrations:
        _disable_migrations()
    originals = {alias: settings.DATABASES[alias]["NAME"] for alias in mine}
    with django_db_blocker.unblock():
        started = time.perf_counter()
        if mine:
            _build_templates(state, mine, set(serialized), verbosity)
        taken = _take_clones(state, mine, set(serialized))
        state.wait_ms += (time.perf_counter() - started) * 1000  # in the run's `isolation:` line
        keep = {"keepdb": True} if django_db_keepdb and not django_db_createdb else {}
        db_cfg = (
            setup_databases(verbosity=verbosity, interactive=False, aliases=others, serialized_aliases=set(serialized) & others, **keep)
            if others
            else []
        )
    yield
    with django_db_blocker.unblock():
        if db_cfg and not django_db_keepdb:
            try:
                teardown_databases(db_cfg, verbosity=verbosity)
            except Exception as exc:
                request.node.warn(pytest.PytestWarning(f"Error when trying to teardown test databases: {exc!r}"))
        for alias, name in taken.items():
            connections[alias].close()
            kind = mine[alias][0]
            if state.worker_for(kind).isolated:
                try:
                    kind.drop_test_database(state.copy, name)
                except Exception as exc:  # never silent; the run's end (or the next run's start) drops it
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    request.node.warn(
                        pytest.PytestWarning(f"parallel-stacks could not drop test database {name} ({reason}); the next test run drops it")
                    )
            _point(alias, originals[alias])
