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
4. A fleet (issue 28): --fleet-copies (default 30) worktrees, `make up` one
   after another with PORT_OFFSET=auto (a slot registry of its own), every
   copy healthy; then 60 s of idling, measured by the engine's stats (CPU
   and memory per copy); `make slots` with all of them; one more copy's
   `make up` while they run; then every copy nuked and released, and
   nothing of any of them left (containers, networks, volumes, images,
   claims, named-URL routes).
5. The fault matrix of tests/test_faults_e2e.py in its long form (issue 24):
   every phase x SIGINT/SIGTERM/SIGKILL and every refusal, on 4 workers,
   three rounds each (`make test` runs it once on 2 workers).

Prints the figures; exit status 1 if anything failed. Not part of CI
(`make soak`, about 15 minutes on two cores).
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


def images_of(name: str) -> list[str]:
    out = subprocess.run(["docker", "image", "ls", "-q", "--filter", f"label=com.docker.compose.project={name}"],
                         capture_output=True, text=True, check=True).stdout.split()
    return [f"image {x}" for x in out]


def soak_big_fleet(size: int, idle_seconds: float = 60) -> tuple[int, dict]:
    """(problems, figures) of `size` copies started one after another, idle, listed, one more started, all removed."""
    from bakery import idle_cpu, project_stats

    base = OUT / "big-fleet"
    extra = {"PARALLEL_STACKS_STATE_DIR": str(base / "state")}
    projects = [bake(base / f"w{i:02d}") for i in range(size + 1)]  # the last: started while the others run
    problems, up_times, names, figures = 0, [], [], {"failed": [], "pools": 0}

    def start(project: Path, label: str) -> float | None:
        """Seconds `make up` took, None if the copy did not come up healthy."""
        nonlocal problems
        begin = time.perf_counter()
        proc = make(project, "up", "auto", **extra)
        took = time.perf_counter() - begin
        values = dict(line.split("=", 1) for line in make(project, "env", "auto", **extra).stdout.splitlines() if "=" in line)
        names.append(values.get("COMPOSE_PROJECT_NAME", "?"))
        try:
            with urllib.request.urlopen(values["API_URL"] + "/health", timeout=10) as resp:
                health = json.load(resp)
            ok = proc.returncode == 0 and health.get("status") == "ok" and "copy " in proc.stdout
        except (OSError, KeyError) as exc:
            ok, health = False, {"error": str(exc)}
        problems += not ok
        if not ok:
            figures["failed"].append(names[-1])
            figures["pools"] += "no address range left" in proc.stderr
        print(f"  {label} {names[-1]} (PORT_OFFSET={values.get('PORT_OFFSET')}): `make up` {took:5.1f} s, "
              f"{'healthy' if ok else 'NOT healthy ' + str(health) + ' ' + proc.stderr.strip()[-300:]}", flush=True)
        return took if ok else None

    try:
        for i, project in enumerate(projects[:size]):
            up_times.append(start(project, f"copy {i + 1:2d}/{size}"))
        figures["up"] = [x for x in up_times if x is not None]
        running = [n for n in names[:size] if n not in figures["failed"]]
        print(f"  {len(running)} of {size} up; idling {idle_seconds:.0f} s (engine stats)", flush=True)
        time.sleep(5)
        shares = idle_cpu(running, idle_seconds)
        memory = project_stats(running)
        figures["cpu"] = [shares[n] for n in running]
        figures["mem"] = [memory[n]["mem_mib"] for n in running]
        slots = []
        for _ in range(3):
            begin = time.perf_counter()
            listed = make(projects[0], "slots", "auto", **extra)
            slots.append(time.perf_counter() - begin)
            missing = [n for n in running if n not in listed.stdout]
            if listed.returncode or missing:
                problems += 1
                print(f"  `make slots` FAILED or misses {missing[:3]}: {listed.stderr.strip()[-200:]}", flush=True)
        figures["slots"] = statistics.median(slots)
        figures["one_more"] = start(projects[size], f"copy {size + 1} (while {len(running)} run)")
        if figures["one_more"] is None or figures["one_more"] > 180:
            problems += 1
    finally:
        print(f"  nuking and releasing {len(names)} copies", flush=True)
        begin = time.perf_counter()
        for project in projects[: len(names)]:
            gone = make(project, "nuke", "auto", FORCE="1", **extra)
            released = make(project, "release", "auto", **extra)
            problems += gone.returncode != 0 or released.returncode != 0
        figures["nuke"] = time.perf_counter() - begin
    left = {n: leftovers(n) + images_of(n) for n in names}
    registry = base / "state" / "registry.json"
    claims = json.loads(registry.read_text())["claims"] if registry.exists() else {}
    routes = subprocess.run(["docker", "ps", "-aq", "--filter", "label=dev.parallel-stacks.proxy"], capture_output=True, text=True).stdout.split()
    routed = []
    if routes:
        from parallel_stacks import proxy
        from parallel_stacks.settings import Settings

        routed = [n for table in proxy.proxies(Settings.read()).values() for n in table if n in names]
    figures["left"] = [x for items in left.values() for x in items] + [f"claim {k}" for k in claims] + [f"route {n}" for n in routed]
    problems += bool(figures["left"])
    return problems, figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="consecutive `make test-parallel` runs (default 20)")
    parser.add_argument("--wide-runs", type=int, default=5, help="runs on 12 workers, compared with a sequential run (default 5)")
    parser.add_argument("--skip-fleet", action="store_true", help="only the consecutive runs")
    parser.add_argument("--worktree-cycles", type=int, default=20, help="make worktree / worktree-remove cycles (default 20; 0 skips)")
    parser.add_argument("--fleet-copies", type=int, default=30, help="copies started one after another, idle, then removed (default 30; 0 skips)")
    parser.add_argument("--skip-faults", action="store_true", help="skip the long fault matrix (tests/test_faults_e2e.py on 4 workers, 3 rounds)")
    args = parser.parse_args(argv)
    shutil.rmtree(OUT, ignore_errors=True)
    failures, times = 0, []
    if args.runs or args.wide_runs:
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
    big_problems, big = 0, {}
    if args.fleet_copies:
        print(f"== {args.fleet_copies} copies, one after another (PORT_OFFSET=auto), idle, listed, one more, removed", flush=True)
        big_problems, big = soak_big_fleet(args.fleet_copies)
    faults = None
    if not args.skip_faults:
        print("== the fault matrix, long form: every phase x SIGINT/SIGTERM/SIGKILL and every refusal, 4 workers, 3 rounds", flush=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEMPLATE / "tests" / "test_faults_e2e.py")],
                              cwd=TEMPLATE, env={**os.environ, "FAULT_MATRIX": "long"}, capture_output=True, text=True)
        summary = (proc.stdout.strip().splitlines() or ["no output"])[-1]
        faults = (proc.returncode, summary, time.perf_counter() - started)
        if proc.returncode != 0:
            print(proc.stdout[-5000:] + proc.stderr[-2000:], flush=True)
    shutil.rmtree(OUT, ignore_errors=True)
    print("\n== soak summary")
    if faults is not None:
        print(f"  fault matrix (long): {'passed' if faults[0] == 0 else 'FAILED'}: {faults[1]} ({faults[2]:.0f} s)")
    if not (args.runs or args.wide_runs):
        pass
    elif times:
        print(f"  test-parallel runs: {len(times)}, failed: {failures}, median {statistics.median(times):.2f} s, "
              f"slowest {max(times):.2f} s")
    else:
        print(f"  test-parallel runs: could not start the stack ({failures} counted as failed)")
    if not args.skip_fleet:
        print(f"  fleet: {len(OFFSETS)} copies healthy together in {fleet[1]:.1f} s, all nuked in {fleet[2]:.1f} s, "
              f"problems: {fleet[0]}")
    if worktree_times:
        print(f"  worktree cycles: {len(worktree_times)}, problems: {worktree_problems}, median {statistics.median(worktree_times):.1f} s per cycle")
    if args.fleet_copies and big.get("failed"):
        print(f"  fleet: {len(big['failed'])} copies did not come up ({big['pools']} for want of a network address pool: "
              f"the engine's default pools hold ~30 networks, docs in the baked TROUBLESHOOTING.md): {big['failed']}")
    if args.fleet_copies and big.get("up"):
        ups, n = big["up"], len(big["up"])
        first, last = statistics.median(ups[:3]), statistics.median(ups[-3:])
        print(f"  fleet of {n} healthy: `make up` 1st {ups[0]:.1f} s, {n}th {ups[-1]:.1f} s ({ups[-1] / ups[0]:.2f}x; "
              f"median of the last 3 / the first 3: {last / first:.2f}x, target <= 1.3x); every one: "
              + " ".join(f"{x:.1f}" for x in ups))
        if big.get("cpu"):
            print(f"  idle CPU per copy among {n} (engine stats, 60 s): mean {statistics.mean(big['cpu']) * 100:.2f}%, "
                  f"max {max(big['cpu']) * 100:.2f}% of one core (target <= 1%); memory per copy {statistics.mean(big['mem']):.0f} MiB")
        if "slots" in big:
            print(f"  `make slots` with {n} copies: {big['slots']:.2f} s (target < 2 s)")
        if "one_more" in big:
            more = f"{big['one_more']:.1f} s" if big["one_more"] is not None else "FAILED"
            print(f"  one more copy's `make up` while {n} run: {more} (limit 180 s)")
        print(f"  all nuked and released in {big.get('nuke', 0):.0f} s; left afterwards: {big.get('left') or 'nothing'}; problems: {big_problems}")
    return 1 if failures or fleet[0] or worktree_problems or big_problems or (faults is not None and faults[0] != 0) else 0


if __name__ == "__main__":
    sys.exit(main())
