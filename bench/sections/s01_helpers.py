"""1. `make env` (a cache hit, and cold after an edit of an env file) and `make ports` against
`python -c pass`, for this checkout and for a baseline commit's template baked in the same run."""
from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

from bench.measure import FREE_OFFSET, OUT, bake_commit, bytecode_compiled, interleaved, run

CHECKOUT = "this checkout"


class Copy:
    """A baked project's helpers as the bench calls them: its own helper package (tools/) first on the path,
    so a baseline runs the baseline's code, not the one installed editable into the bench's virtualenv."""

    def __init__(self, project):
        self.path = project.path
        self.env = project.environment(PORT_OFFSET=FREE_OFFSET, PYTHONPATH=str(project.path / "tools"))
        self.dev_env = project.path / "env" / "dev.env"
        self.original = self.dev_env.read_text()
        self.edits = itertools.count(1)
        code = "import parallel_stacks; print(parallel_stacks.__file__)"
        imported = Path(run([self.env["PYTHON"], "-c", code], env=self.env).stdout.strip()).resolve()
        if not imported.is_relative_to((self.path / "tools").resolve()):
            raise RuntimeError(f"{self.path}'s helpers would import {imported}, not the package baked with it")

    def make(self, target: str) -> None:
        run(["make", target], cwd=self.path, env=self.env)

    def cold(self) -> None:
        """What the first call after a user's edit costs: the cache is keyed by the env files' bytes."""
        self.dev_env.write_text(f"{self.original}# bench edit {next(self.edits)}\n")
        self.make("env")

    def restore(self) -> None:
        self.dev_env.write_text(self.original)


def run_section(ctx) -> dict:
    section = "1. Helper overhead: `make env` and `make ports` vs the interpreter's floor, this checkout vs a baseline"
    print(f"\n{section}")
    table, repeat = ctx.table, ctx.args.repeat * 6
    baseline, sha = bake_commit(ctx.args.baseline_commit, OUT / "baseline")
    base = f"baseline {ctx.args.baseline_commit} ({sha[:7]})"
    copies = {CHECKOUT: Copy(ctx.project), base: Copy(baseline)}
    bytecode_compiled(*(copy.path / "tools" for copy in copies.values()))
    for copy in copies.values():
        copy.make("env")  # fill the cache
        copy.make("ports")
    floor_label = f"`{Path(sys.executable).name} -c pass` (floor)"
    hits = interleaved({floor_label: lambda: run([sys.executable, "-c", "pass"]),
                        **{name: lambda c=copy: c.make("env") for name, copy in copies.items()}}, repeat)
    floor = hits.pop(floor_label)
    ports = interleaved({name: lambda c=copy: c.make("ports") for name, copy in copies.items()}, repeat)
    try:
        colds = interleaved({name: copy.cold for name, copy in copies.items()}, repeat)
    finally:
        for copy in copies.values():
            copy.restore()
    table.add(section, floor_label, floor)
    out = {"floor": statistics.median(floor)}
    for name in copies:
        out.setdefault("env", table.add(section, f"`make env`, a cache hit, {name}", hits[name], floor, "<= 2x" if name == CHECKOUT else ""))
    for name in copies:
        table.add(section, f"`make env`, cold (env/dev.env edited first), {name}", colds[name], floor, "", "the first call after an edit")
    for name in copies:
        out.setdefault("ports", table.add(section, f"`make ports`, {name}", ports[name], floor, "<= 2x" if name == CHECKOUT else ""))
    for label, times in (("`make env`, a cache hit", hits), ("`make env`, cold", colds), ("`make ports`", ports)):
        table.add(section, f"{label}: this checkout vs the baseline", times[CHECKOUT], times[base], "", "this checkout's median / the baseline's")
    return out
