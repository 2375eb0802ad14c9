"""The bench's measuring helpers, shared by every section: timing, the result table, running
commands, baking projects (this checkout's template, or another commit's) and the suites they get."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
OUT = TEMPLATE / "build" / "bench"
SUITES = Path(__file__).resolve().parent / "suites"  # files a section copies into a baked project
OFFSET = "22000"  # the bench's main copy
TEST_MODE_OFFSET = "22400"  # a copy with POSTGRES_DURABILITY=off (section 10)
FREE_OFFSET = "41000"  # nothing runs there
STOP_OFFSET = 43000  # sections 13 and 14 (--offset): this copy, and the one 1000 above it with the old health checks
DASH_OFFSET = 17000  # section 15 (--dashboard-offset): three copies at this offset, 1000 and 2000 above
BASELINE_COMMIT = "491dfcf^"  # section 1 (--baseline-commit): the template before issue 25's first step
STARTED: list = []  # (project, offset) of copies a section brought up, nuked at the end whatever happens


# ---------------------------------------------------------------- measuring
def timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved(fns: dict, repeat: int) -> dict[str, list[float]]:
    """{label: seconds of each run}: every fn once per round, the order reversed every other round (no order bias)."""
    times: dict[str, list[float]] = {label: [] for label in fns}
    labels = list(fns)
    for i in range(repeat):
        for label in labels if i % 2 == 0 else reversed(labels):
            start = time.perf_counter()
            fns[label]()
            times[label].append(time.perf_counter() - start)
    return times


class Table:
    """Rows of (section, label, median seconds, ratio, baseline label, target, note)."""

    def __init__(self):
        self.rows = []

    def add(self, section, label, times, base=None, target="", note=""):
        med = statistics.median(times) if times else float("nan")
        ratio = med / statistics.median(base) if base else None
        self.rows.append((section, label, med, ratio, len(times), target, note))
        shown = f"{ratio:6.2f}x" if ratio is not None else "   base"
        print(f"  {label:<58} {fmt(med):>10}  n={len(times):<2} {shown}  {target}  {note}", flush=True)
        return med

    def note(self, section, label, text):
        self.rows.append((section, label, None, None, 0, "", text))
        print(f"  {label:<58} {text}", flush=True)

    def markdown(self) -> str:
        lines = []
        section = None
        for sec, label, med, ratio, n, target, note in self.rows:
            if sec != section:
                section = sec
                lines += ["", f"### {sec}", "", "| measurement | median | ratio | target | note |", "|---|---|---|---|---|"]
            med_s = fmt(med) if med is not None else ""
            ratio_s = f"{ratio:.2f}x" if ratio is not None else ("baseline" if med is not None else "")
            lines.append(f"| {label} | {med_s} | {ratio_s} | {target} | {note} |")
        return "\n".join(lines).strip() + "\n"


def fmt(seconds) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def run(cmd, cwd=None, env=None, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


@dataclass
class Context:
    """What every section gets: the result table, the bench's main baked project, the command line,
    and what earlier sections returned (by number; the plot reads them)."""

    table: Table
    project: object
    args: object
    results: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)  # the main copy's derived values, while it is up (sections 4 and 5)


# ---------------------------------------------------------------- the baked project
def image_env() -> dict:
    """Image settings: the caller's, else the offline stand-ins when this machine has them."""
    from demo import OFFLINE, image_overrides

    return {**image_overrides(), **{var: os.environ[var] for var in OFFLINE if os.environ.get(var)}}


def bake_project(directory: Path):
    from bakery import Project, bake

    return Project(bake(directory), image_env())


def bake_commit(commit: str, directory: Path):
    """The template as it was at `commit` (git archive of this checkout's history), baked with
    --no-input into directory/project: a baseline to measure this checkout against in the same run."""
    from bakery import Project
    from cookiecutter.main import cookiecutter

    sha = run(["git", "-C", str(TEMPLATE), "rev-parse", "--verify", f"{commit}^{{commit}}"]).stdout.strip()
    template = directory / "template"
    shutil.rmtree(directory, ignore_errors=True)
    template.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(TEMPLATE), "archive", sha], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(template)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {sha} failed")
    path = Path(cookiecutter(str(template), no_input=True, output_dir=str(directory / "project")))
    return Project(path, image_env()), sha


def copy_suite(name: str, destination: Path, names=None) -> list[Path]:
    """Copy bench/suites/<name>/* into a baked project's `destination` (created); `names` renames each file
    (a function of its name: several copies of one module). Returns the files written."""
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted((SUITES / name).iterdir()):
        if source.is_file() and source.suffix == ".py":
            for target in (names or (lambda n: [n]))(source.name):
                shutil.copyfile(source, destination / target)
                written.append(destination / target)
    return written


def bytecode_compiled(*directories: Path) -> None:
    """Compile the helper package and the virtualenv's modules once, as pip does at install: with
    PYTHONDONTWRITEBYTECODE=1 (set on some machines) and uv installs nothing is cached, and every helper
    call would compile ~45 modules (~0.2-0.3 s) that a user's machine compiles once."""
    import compileall
    import sysconfig

    from bakery import PACKAGE

    for directory in (PACKAGE, Path(sysconfig.get_paths()["purelib"]), *directories):
        compileall.compile_dir(str(directory), quiet=2, workers=2)


def container_per_worker(count: int) -> list[float]:
    """Seconds for a Postgres container per worker (testcontainers: start, connect, stop), `count` times."""
    import psycopg

    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")  # the reaper image needs a registry
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    from testcontainers.postgres import PostgresContainer

    image = image_env().get("POSTGRES_IMAGE", "postgres:16-alpine")

    def container():
        with PostgresContainer(image, driver=None) as pg:
            psycopg.connect(pg.get_connection_url()).close()

    return timed(container, count)


def memory_of(projects: list[str]) -> dict[str, float]:
    """{compose project: MiB} summed over its running containers (docker stats)."""
    out = run(["docker", "stats", "--no-stream", "--format", "{{json .}}"]).stdout
    units = {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    mem = {p: 0.0 for p in projects}
    for line in out.splitlines():
        rec = json.loads(line)
        used = rec["MemUsage"].split("/")[0].strip()
        number = used.rstrip("BKMGib")
        unit = used[len(number):]
        for p in projects:
            if rec["Name"].startswith(p + "-"):
                mem[p] += float(number) * units.get(unit, 1)
    return mem


def first_byte(port: str, path: str) -> float:
    """Seconds from sending GET `path` to the first byte of the answer's body."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    try:
        start = time.perf_counter()
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        answer = conn.getresponse()
        answer.read(1)
        elapsed = time.perf_counter() - start
        answer.read()
        assert answer.status == 200, answer.status
        return elapsed
    finally:
        conn.close()
