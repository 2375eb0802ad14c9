"""The bench's sections: one module each (sNN_<name>.py, with a `run_section(ctx)`), registered in SECTIONS,
the one table `python -m bench` runs in order and lists in its --help."""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Callable

from bench.sections import (
    s01_helpers,
    s02_collisions,
    s03_stack_start,
    s04_databases,
    s05_suite,
    s06_claims,
    s07_fleet,
    s08_venv,
    s09_adopted_suites,
    s10_clone_modes,
    s11_realistic,
    s12_adoption,
    s13_stop_restart,
    s14_idle_cost,
    s15_dashboard,
)


@dataclass(frozen=True)
class Section:
    number: int
    name: str
    run: Callable  # run(ctx: bench.measure.Context) -> what the report needs, or None
    description: str
    main_copy: bool = False  # runs with the bench's main copy up (at measure.OFFSET); ctx.values are its values


SECTIONS = (
    Section(1, "helpers", s01_helpers.run_section,
            "helper overhead: `make env` (a cache hit, and cold after an edit of an env file) and `make ports` vs "
            "`python -c pass`, for this checkout and a baseline commit's template (--baseline-commit) baked in the same run"),
    Section(2, "collisions", s02_collisions.run_section,
            "collision check: `make check-ports`, all free and one port taken, vs `python -c pass`"),
    Section(3, "stack-start", s03_stack_start.run_section,
            "stack start: `make up` vs bare `docker compose up -d --build --wait`"),
    Section(4, "databases", s04_databases.run_section,
            "a database per worker: template clone vs fresh schema vs a new container (testcontainers-python)",
            main_copy=True),
    Section(5, "suite", s05_suite.run_section,
            "the example suite: `make test` vs `make test-parallel`, and the limit two cores allow", main_copy=True),
    Section(6, "claims", s06_claims.run_section, "50 concurrent PORT_OFFSET=auto claims (--claims) vs port-for and portpicker"),
    Section(7, "fleet", s07_fleet.run_section, "a fleet: 1, 5 and 10 copies (--fleet) up at once: time to healthy, memory per copy"),
    Section(8, "venv", s08_venv.run_section, "the first `make` of a fresh clone: its virtualenv with pip vs uv"),
    Section(9, "adopted-suites", s09_adopted_suites.run_section,
            "adopted suites (a Django app, an unadapted suite), sequential vs parallel"),
    Section(10, "clone-modes", s10_clone_modes.run_section,
            "clone cost per Postgres mode (durable; test mode: durability off, data on tmpfs) and strategy (WAL_LOG, FILE_COPY), "
            "and the wait each worker reports (`isolation:` line), against a container per worker"),
    Section(11, "realistic", s11_realistic.run_section,
            "a realistic suite of 300 tests mixing database, Redis and HTTP work, sequential vs 2 workers"),
    Section(12, "adoption", s12_adoption.run_section,
            "adoption: `make adopt` on the largest compose file of the corpus (tests/adopt/), and `make stack-env` in the "
            "adopted repository vs the interpreter's floor (the same target as a baked project's: <= 2x)"),
    Section(13, "stop-restart", s13_stop_restart.run_section,
            "stopping a copy and `make up` on one that is up, against bare `docker compose down` and `docker compose up -d "
            "--wait` on the same copy (at --offset)"),
    Section(14, "idle-cost", s14_idle_cost.run_section,
            "what an idle copy costs: CPU over 30 s against an idle bare Postgres container, and `make up` with the health "
            "checks before and after issue 28 (at --offset and 1000 above)"),
    Section(15, "dashboard", s15_dashboard.run_section,
            "`make dashboard` with three copies up (at --dashboard-offset, 1000 and 2000 above): time to first byte of its "
            "page and of `/api/copies`, a fresh snapshot and a shared one, against `make slots FORMAT=json` (the same "
            "snapshot, printed) in the same run"),
)


def listing(width: int = 100) -> str:
    """The numbered list of sections, as the docstring and --help show it."""
    return "\n".join(textwrap.fill(f"{s.number}. {s.description}", width, subsequent_indent=" " * len(f"{s.number}. "),
                                     break_on_hyphens=False, break_long_words=False) for s in SECTIONS)
