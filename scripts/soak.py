#!/usr/bin/env python3
"""Soak: many consecutive parallel test runs, then five copies up at once and nuked.

1. Bakes a project into build/soak/, starts its copy at PORT_OFFSET 23000 and
   runs `make test-parallel` --runs times (default 20) in a row: every run
   must pass, and no test database may be left behind between runs. Then
   seed 002's validation: --wide-runs runs (default 5) on 12 workers, each
   passing exactly the tests a sequential run passes.
2. Worktree lifecycle: --worktree-cycles (default 20) of `make worktree
   NAME=tN UP=1` then `make worktree-remove NAME=tN` in a baked git
   repository; afterwards no container, volume, network or claim of any tN.
3. Bakes five worktrees (as five agents would have), runs `make up` in all
   five at once (offsets 23000-27000), checks every copy's API is healthy
   and reports its own offset, then `make nuke`s all five at once and checks
   that no container, network or volume of any of them is left.

Prints the figures; exit status 1 if anything failed. Not part of CI
(`make soak`, about 2 minutes on two cores).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from demo import image_overrides

TEMPLATE = Path(__file__).resolve().parent.parent
OUT = TEMPLATE / "build" / "soak"
OFFSETS = [str(23000 + 1000 * i) for i in range(5)]


def environment(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT_OFFSET", "ENV", "STACK_ENV", "TASK_ID", "COMPOSE_PROJECT_NAME")}
    return {**env, **image_overrides(), "PYTHON": sys.executable, **extra}


def make(project: Path, target: str, offset: str, **extra) -> subprocess.CompletedProcess:
    return subprocess.run(["make", target], cwd=project, env=environment(PORT_OFFSET=offset, **extra),
                          capture_output=True, text=True)


def bake(directory: Path) -> Path:
    from cookiecutter.main import cookiecutter

    directory.mkdir(parents=True, exist_ok=True)
    return Path(cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(directory)))


def values_of(project: Path, offset: str) -> dict:
    out = make(project, "env", offset).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def leftovers(name: str) -> list[str]:
    found = []
    for cmd in (["ps", "-aq"], ["network", "ls", "-q"], ["volume", "ls", "-q"]):
        out = subprocess.run(["docker", *cmd, "--filter", f"label=com.docker.compose.project={name}"],
                             capture_output=True, text=True, check=True).stdout.split()
        found += [f"{cmd[0]} {x}" for x in out]
    return found


def test_databases(values: dict) -> list[str]:
    import psycopg

    with psycopg.connect(values["DATABASE_URL"], autocommit=True, connect_timeout=10) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'test%'")]


def passed(junit: Path) -> set[str]:
    import xml.etree.ElementTree as ET

    cases = ET.parse(junit).getroot().iter("testcase")
    return {f"{c.get('classname')}::{c.get('name')}" for c in cases if not any(ch.tag in ("failure", "error", "skipped") for ch in c)}


def wide_runs(project: Path, offset: str, values: dict, runs: int, workers: str = "12") -> int:
    """Runs on `workers` workers that do not pass exactly the sequential run's tests."""
    seq = OUT / "seq.xml"
    make(project, "test", offset, ARGS=f"--junitxml={seq}")
    expected, failures = passed(seq), 0
    for i in range(1, runs + 1):
        junit = OUT / f"wide-{i}.xml"
        start = time.perf_counter()
        proc = make(project, "test-parallel", offset, PYTEST_WORKERS=workers, ARGS=f"--junitxml={junit}")
        took = time.perf_counter() - start
        same = junit.exists() and passed(junit) == expected
        left = test_databases(values)
        ok = proc.returncode == 0 and same and not left
        failures += not ok
        print(f"  {workers} workers, run {i}/{runs}: {'ok  ' if ok else 'FAIL'} {took:5.2f} s, "
              f"{len(expected)} tests {'as sequential' if same else 'DIFFER from sequential'}", flush=True)
    return failures


def soak_runs(runs: int, wide: int = 5) -> tuple[int, list[float]]:
    project = bake(OUT / "runs")
    offset = OFFSETS[0]
    up = make(project, "up", offset)
    if up.returncode != 0:
        print(up.stderr, file=sys.stderr)
        return runs, []
    values = dict(line.split("=", 1) for line in make(project, "env", offset, SHOW_SECRETS="1").stdout.splitlines())
    failures, times = 0, []
    try:
        for i in range(1, runs + 1):
            start = time.perf_counter()
            proc = make(project, "test-parallel", offset, PYTEST_WORKERS="2")
            times.append(time.perf_counter() - start)
            left = test_databases(values)
            ok = proc.returncode == 0 and not left
            failures += not ok
            summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr.strip()[-200:]
            print(f"  run {i:2d}/{runs}: {'ok  ' if ok else 'FAIL'} {times[-1]:5.2f} s  {summary}"
                  + (f"  leftover databases: {left}" if left else ""), flush=True)
        failures += wide_runs(project, offset, values, wide)
    finally:
        make(project, "nuke", offset, FORCE="1")
    return failures, times


def soak_worktrees(cycles: int) -> tuple[int, list[float]]:
    """(problems, seconds per cycle) of `make worktree NAME=tN UP=1` / `make worktree-remove NAME=tN`."""
    git_id = {"GIT_AUTHOR_NAME": "soak", "GIT_AUTHOR_EMAIL": "soak@example.com", "GIT_COMMITTER_NAME": "soak",
              "GIT_COMMITTER_EMAIL": "soak@example.com"}
    state = OUT / "worktree-state"
    repo = bake(OUT / "repo")
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "baked"]):
        subprocess.run(["git", *args], cwd=repo, env={**os.environ, **git_id}, check=True)
    problems, times = 0, []
    for n in range(cycles):
        name = f"t{n}"
        start = time.perf_counter()
        extra = {**git_id, "PARALLEL_STACKS_STATE_DIR": str(state), "NAME": name}
        made = subprocess.run(["make", "worktree"], cwd=repo, env=environment(UP="1", **extra), capture_output=True, text=True)
        copy = next((w for line in made.stdout.splitlines() for w in line.split() if w.startswith("demo-stack-")), "").rstrip(",")
        gone = subprocess.run(["make", "worktree-remove"], cwd=repo, env=environment(**extra), capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        left = leftovers(copy) if copy else ["no copy named"]
        ok = made.returncode == 0 and gone.returncode == 0 and not left and not (repo.parent / f"{repo.name}.{name}").exists()
        problems += not ok
        print(f"  cycle {n + 1:2d}/{cycles}: {'ok  ' if ok else 'FAIL'} {times[-1]:5.1f} s  {copy}"
              + ("" if ok else f"  {made.stderr.strip()[-200:]} {gone.stderr.strip()[-200:]} left: {left}"), flush=True)
    claims = json.loads((state / "registry.json").read_text())["claims"] if (state / "registry.json").exists() else {}
    if claims:
        problems += 1
        print(f"  claims left: {claims}")
    return problems, times


def soak_fleet() -> tuple[int, float, float]:
    """(problems, seconds until all five were healthy, seconds to nuke all five)."""
    projects = [bake(OUT / f"worktree-{i}") for i in range(len(OFFSETS))]
    problems = 0
    start = time.perf_counter()
    procs = [subprocess.Popen(["make", "up"], cwd=p, env=environment(PORT_OFFSET=o), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p, o in zip(projects, OFFSETS)]
    results = [p.communicate() for p in procs]
    up_seconds = time.perf_counter() - start
    names = []
    for project, offset, proc, (_, err) in zip(projects, OFFSETS, procs, results):
        values = values_of(project, offset)
        names.append(values["COMPOSE_PROJECT_NAME"])
        try:
            with urllib.request.urlopen(values["API_URL"] + "/health", timeout=10) as resp:
                health = json.load(resp)
            ok = proc.returncode == 0 and health.get("status") == "ok" and str(health.get("port_offset")) == offset
        except OSError as exc:
            ok, health = False, {"error": str(exc)}
        problems += not ok
        print(f"  copy {values['COMPOSE_PROJECT_NAME']}: {'healthy' if ok else 'NOT healthy'} {health if not ok else ''}"
              + (f" {err.strip()[-300:]}" if proc.returncode else ""), flush=True)
    start = time.perf_counter()
    procs = [subprocess.Popen(["make", "nuke"], cwd=p, env=environment(PORT_OFFSET=o, FORCE="1"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p, o in zip(projects, OFFSETS)]
    for proc in procs:
        proc.communicate()
        problems += proc.returncode != 0
    nuke_seconds = time.perf_counter() - start
    for name in names:
        left = leftovers(name)
        problems += bool(left)
        print(f"  after nuke, {name}: {'nothing left' if not left else left}", flush=True)
    return problems, up_seconds, nuke_seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="consecutive `make test-parallel` runs (default 20)")
    parser.add_argument("--wide-runs", type=int, default=5, help="runs on 12 workers, compared with a sequential run (default 5)")
    parser.add_argument("--skip-fleet", action="store_true", help="only the consecutive runs")
    parser.add_argument("--worktree-cycles", type=int, default=20, help="make worktree / worktree-remove cycles (default 20; 0 skips)")
    args = parser.parse_args(argv)
    shutil.rmtree(OUT, ignore_errors=True)
    print(f"== {args.runs} consecutive `make test-parallel` runs (2 workers)", flush=True)
    failures, times = soak_runs(args.runs, args.wide_runs)
    worktree_problems, worktree_times = 0, []
    if args.worktree_cycles:
        print(f"== {args.worktree_cycles} cycles of `make worktree NAME=tN UP=1` / `make worktree-remove NAME=tN`", flush=True)
        worktree_problems, worktree_times = soak_worktrees(args.worktree_cycles)
    fleet = (0, 0.0, 0.0)
    if not args.skip_fleet:
        print(f"== {len(OFFSETS)} copies in {len(OFFSETS)} worktrees: `make up` at once, then `make nuke` at once", flush=True)
        fleet = soak_fleet()
    shutil.rmtree(OUT, ignore_errors=True)
    print("\n== soak summary")
    if times:
        print(f"  test-parallel runs: {len(times)}, failed: {failures}, median {statistics.median(times):.2f} s, "
              f"slowest {max(times):.2f} s")
    else:
        print(f"  test-parallel runs: could not start the stack ({failures} counted as failed)")
    if not args.skip_fleet:
        print(f"  fleet: {len(OFFSETS)} copies healthy together in {fleet[1]:.1f} s, all nuked in {fleet[2]:.1f} s, "
              f"problems: {fleet[0]}")
    if worktree_times:
        print(f"  worktree cycles: {len(worktree_times)}, problems: {worktree_problems}, median {statistics.median(worktree_times):.1f} s per cycle")
    return 1 if failures or fleet[0] or worktree_problems else 0


if __name__ == "__main__":
    sys.exit(main())
