"""12. Adoption: `make adopt` on the largest compose file of the corpus (tests/adopt/), and `make stack-env` in the
adopted repository vs the interpreter's floor (the same target as a baked project's: <= 2x)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bench.measure import OFFSET, OUT, TEMPLATE, run, timed


def run_section(ctx) -> None:
    table, repeat = ctx.table, ctx.args.repeat
    section = "12. Adoption (the corpus's largest compose file)"
    print(f"\n{section}")
    corpus = TEMPLATE / "tests" / "adopt"
    files = [f for d in corpus.iterdir() if d.is_dir() for f in d.iterdir() if f.is_file() and "compose" in f.name]
    largest = max(files, key=lambda f: f.stat().st_size)
    example = largest.parent
    services = len(__import__("yaml").safe_load(largest.read_text())["services"])
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}
    copies = iter(range(10_000))

    def fresh() -> Path:
        repo = OUT / "adopt" / f"{example.name}-{next(copies)}"
        shutil.copytree(example, repo)
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "theirs"]):
            run(["git", "-C", str(repo), *args], env=env)
        return repo

    repos = [fresh() for _ in range(repeat)]
    pending = iter(repos)
    adopt_times = timed(lambda: run(["make", "-s", "adopt", f"TARGET={next(pending)}"], cwd=TEMPLATE), repeat)
    label = f"`make adopt` of `{example.name}/{largest.name}` ({largest.stat().st_size // 1024} KiB, {services} services)"
    table.add(section, label, adopt_times, note="diff shown, helper package copied, compose config checked")
    again = timed(lambda: run(["make", "-s", "adopt", f"TARGET={repos[0]}"], cwd=TEMPLATE), repeat)
    table.add(section, "a second `make adopt` (nothing to change)", again)
    floor = timed(lambda: run([sys.executable, "-c", "pass"]), repeat * 6)
    table.add(section, f"`{Path(sys.executable).name} -c pass` (floor)", floor)
    stack_env = {**os.environ, "STACK_PYTHON": sys.executable, "PORT_OFFSET": OFFSET, "NAMED_URLS_PORT": "off"}
    run(["make", "-s", "stack-env"], cwd=repos[0], env=stack_env)  # fills the cache, as any first call does
    table.add(section, "`make stack-env` in the adopted repository", timed(lambda: run(["make", "-s", "stack-env"], cwd=repos[0], env=stack_env), repeat * 6), floor, "<= 2x")
