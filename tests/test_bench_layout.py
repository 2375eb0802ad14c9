"""bench/ as a package (issue 25): every section 1..15 registered once in bench.sections.SECTIONS, its own module
under bench/sections/, the suite files it copies present (and linted with the rest), and --help listing the table."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEMPLATE

BENCH = TEMPLATE / "bench"


@pytest.fixture(scope="module")
def sections():
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(TEMPLATE))
        yield importlib.import_module("bench.sections")


def test_every_section_is_registered_once_in_order(sections):
    numbers = [s.number for s in sections.SECTIONS]
    assert numbers == list(range(1, 16)), numbers
    names = [s.name for s in sections.SECTIONS]
    assert len(set(names)) == len(names), names
    assert all(s.description.strip() for s in sections.SECTIONS)


def test_each_section_runs_from_its_own_module(sections):
    modules = {}
    for s in sections.SECTIONS:
        module = sys.modules[s.run.__module__]
        path = Path(module.__file__)
        assert path.is_file() and path.parent == BENCH / "sections", (s.number, path)
        assert re.fullmatch(rf"s{s.number:02d}_\w+\.py", path.name), (s.number, path.name)
        assert modules.setdefault(path, s.number) == s.number, f"sections {modules[path]} and {s.number} share {path.name}"
    on_disk = {p for p in (BENCH / "sections").glob("s[0-9][0-9]_*.py")}
    assert on_disk == set(modules), f"section modules not in SECTIONS: {sorted(p.name for p in on_disk - set(modules))}"


def test_every_suite_file_a_section_uses_exists(sections):
    used = set()
    for s in sections.SECTIONS:
        for path in getattr(sys.modules[s.run.__module__], "SUITE_FILES", ()):
            assert Path(path).is_file(), f"section {s.number} copies {path}, which does not exist"
            used.add(Path(path))
    suites = {p for p in (BENCH / "suites").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert suites <= used, f"suite files no section uses: {sorted(str(p) for p in suites - used)}"
    assert used & suites, "no section copies a file from bench/suites"


def test_ruff_does_not_exclude_the_suites():
    files = subprocess.run([sys.executable, "-m", "ruff", "check", "--show-files", "bench"], cwd=TEMPLATE,
                           capture_output=True, text=True, check=True).stdout
    for path in (BENCH / "suites").rglob("*.py"):
        assert str(path) in files, f"ruff skips {path}"


def test_help_and_docstring_list_the_sections_from_the_table(sections):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TEMPLATE / "scripts"), str(TEMPLATE)])}
    shown = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=TEMPLATE, env=env,
                           capture_output=True, text=True, check=True).stdout
    doc = importlib.import_module("bench.run").__doc__
    for text in (shown, doc):
        flat = " ".join(text.split())
        listed = [int(n) for n in re.findall(r"^\s*(\d+)\. ", text, re.M)]
        assert listed == list(range(1, 16)), listed
        for s in sections.SECTIONS:
            assert f"{s.number}. {' '.join(s.description.split())}" in flat, s.number


def test_makefile_runs_the_package():
    assert re.search(r"^bench:.*## .+\n\t@PYTHONPATH=scripts \$\(PY\) -m bench \$\(BENCH_ARGS\)$",
                     (TEMPLATE / "Makefile").read_text(), re.M)
