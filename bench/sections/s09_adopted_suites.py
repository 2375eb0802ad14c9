"""9. Adopted suites (a Django app with pytest-django, an unadapted suite), sequential vs 2 workers, and the
Django suite's workers cloned from one migrated template vs pytest-django migrating each."""
from __future__ import annotations

import shutil

from bench.measure import OUT, STARTED, TEMPLATE, bake_project, timed

ADOPT_OFFSET = "23000"
SUITE_FILES = (TEMPLATE / "tests" / "suites" / "unadapted" / "test_unadapted.py", TEMPLATE / "tests" / "suites" / "django_shop" / "manage.py")


def run_section(ctx) -> None:
    """A Django project's pytest-django suite and an unadapted suite, as a user drops them into a baked project."""
    table, repeat = ctx.table, ctx.args.repeat
    section = "9. Adopted suites, sequential vs parallel (2 workers)"
    print(f"\n{section}")
    project = bake_project(OUT / "adopted")
    STARTED.append((project, ADOPT_OFFSET))
    project.add_django_suite()
    shutil.copy(SUITE_FILES[0], project.path / "unadapted_test.py")
    project.use_own_virtualenv()
    make = lambda target, args, **e: project.make(target, PORT_OFFSET=ADOPT_OFFSET, ARGS=args, **e)  # noqa: E731
    make("up", "")
    for label, args in (("Django suite (18 tests, pytest-django)", "shop"), ("unadapted suite (6 tests, flushdb, libpq defaults)", "unadapted_test.py")):
        make("test", args)  # warm-up
        seq = timed(lambda: make("test", args), repeat)
        table.add(section, f"`make test`, {label}", seq)
        par = timed(lambda: make("test-parallel", args, PYTEST_WORKERS="2"), repeat)
        table.add(section, f"`make test-parallel`, {label}", par, seq)
    # what the template clone saves: pytest-django's own way, migrating every worker's database
    # (less the one test that checks the database is ours: under pytest-django's own naming it is not)
    own = timed(lambda: make("test-parallel", "shop -k 'not agree' -p no:parallel_stacks.djangodb", PYTEST_WORKERS="2"), repeat)
    table.add(section, "Django suite, pytest-django migrating per worker (baseline)", own)
    ours = timed(lambda: make("test-parallel", "shop -k 'not agree'", PYTEST_WORKERS="2"), repeat)
    table.add(section, "Django suite, workers cloned from one migrated template", ours, own)
    project.make("nuke", PORT_OFFSET=ADOPT_OFFSET, FORCE="1")
