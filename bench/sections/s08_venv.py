"""8. The first `make` of a fresh clone: its virtualenv (scripts/bootstrap-venv.sh) with pip vs uv, first ever and cached."""
from __future__ import annotations

import os
import shutil

from bench.measure import OUT, run, timed


def run_section(ctx) -> None:
    table, project, repeat = ctx.table, ctx.project, ctx.args.repeat
    section = "8. First `make` of a fresh clone: the virtualenv (scripts/bootstrap-venv.sh)"
    print(f"\n{section}")
    script, req = project.path / "scripts" / "bootstrap-venv.sh", project.path / "requirements-dev.txt"
    target, caches = OUT / "venv", OUT / "caches"

    def setup(**env):
        shutil.rmtree(target, ignore_errors=True)
        run(["bash", str(script), str(target), str(req)], env={**os.environ, **env})

    setup(UV="none")  # pip's own wheel cache warm, as on any machine that has installed these once
    pip_t = timed(lambda: setup(UV="none"), repeat)
    table.add(section, "pip (`UV=none`), pip's cache warm", pip_t)

    def cold():
        shutil.rmtree(caches, ignore_errors=True)
        setup(XDG_CACHE_HOME=str(caches), UV="")

    table.add(section, "uv, first ever: uv fetched from PyPI, every cache empty", timed(cold, max(2, repeat // 2)), pip_t, "",
              "a user's very first bake")
    warm = timed(lambda: setup(XDG_CACHE_HOME=str(caches), UV=""), repeat)
    table.add(section, "uv, cached (every later clone or worktree)", warm, pip_t, "<= 0.2x")
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(caches, ignore_errors=True)
