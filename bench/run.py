"""Runs the sections; this module's docstring (and --help) lists them from bench.sections.SECTIONS."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from bench import report
from bench.measure import BASELINE_COMMIT, DASH_OFFSET, OFFSET, OUT, STARTED, STOP_OFFSET, Context, Table, bake_project, run
from bench.sections import SECTIONS, listing

__doc__ = f"""Measure what isolation costs, against the alternatives, in one run (`make bench`, `python -m bench`).

Bakes a project into build/bench/, runs every measurement several times and
prints medians and ratios against a baseline measured in the same run:

{listing()}

Writes the table into docs/PERFORMANCE.md (between the bench markers) and a
plot to docs/performance.png (a run of every section only). Not part of CI: absolute
times on a shared machine mean little; the ratios from one run are the result.
"""


def selected(text: str, parser: argparse.ArgumentParser) -> set[int]:
    numbers = {s.number for s in SECTIONS}
    try:
        chosen = {int(part) for part in text.replace(" ", "").split(",") if part}
    except ValueError:
        parser.error(f"--only takes section numbers, e.g. 1,2,10: {text!r}")
    if chosen - numbers:
        parser.error(f"--only: no section {', '.join(map(str, sorted(chosen - numbers)))} (sections are 1-{max(numbers)})")
    return chosen


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (default 5; helpers run 6x as often)")
    parser.add_argument("--tables", type=int, default=100, help="tables in the heavy schema (default 100)")
    parser.add_argument("--modules", type=int, default=8, help="extra api test modules for the scaled suite (default 8)")
    parser.add_argument("--containers", type=int, default=3, help="testcontainers starts to time (default 3)")
    parser.add_argument("--claims", type=int, default=50, help="concurrent PORT_OFFSET=auto claims (default 50)")
    parser.add_argument("--fleet", default="1,5,10", help="fleet sizes, comma-separated (default 1,5,10)")
    parser.add_argument("--only", default=",".join(str(s.number) for s in SECTIONS),
                        help="which measurements to run, e.g. 1,2,10 (default all)")
    parser.add_argument("--offset", default=str(STOP_OFFSET),
                        help=f"PORT_OFFSET of sections 13 and 14 (default {STOP_OFFSET}; 14 also uses the one 1000 above)")
    parser.add_argument("--dashboard-offset", type=int, default=DASH_OFFSET,
                        help=f"PORT_OFFSET of section 15's first copy (default {DASH_OFFSET}; also 1000 and 2000 above)")
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT,
                        help=f"section 1's baseline: the template at this commit, baked in the same run (default {BASELINE_COMMIT})")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    return parser


def main(argv=None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    only = selected(args.only, cli)
    full = only == {s.number for s in SECTIONS}

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    project = bake_project(OUT / "main")
    ctx = Context(Table(), project, args)
    started = time.strftime("%Y-%m-%d")
    docker_version = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    compose_version = run(["docker", "compose", "version", "--short"]).stdout.strip()
    header = (f"Run of {started} on {os.cpu_count()} CPUs, Docker {docker_version}, Compose {compose_version}, "
              f"Python {sys.version.split()[0]}; medians of {args.repeat} runs (helpers: {args.repeat * 6}).")
    print(header)
    main_up = False
    try:
        for section in SECTIONS:
            if section.number not in only:
                continue
            if section.main_copy and not main_up:  # sections 4 and 5 share one start of the main copy
                STARTED.append((project, OFFSET))
                project.make("up", PORT_OFFSET=OFFSET)
                ctx.values, main_up = project.values(PORT_OFFSET=OFFSET), True
            elif not section.main_copy and main_up:
                project.make("nuke", PORT_OFFSET=OFFSET, FORCE="1")
                main_up = False
            ctx.results[section.number] = section.run(ctx)
    finally:
        for member, offset in set(STARTED):  # only the copies this run started
            member.make("nuke", check=False, PORT_OFFSET=offset, FORCE="1")
    if not args.no_write and full:
        report.plot(ctx.results)
        report.write_doc(ctx.table, header)
    shutil.rmtree(OUT, ignore_errors=True)
    return 0
