"""The benchmark's own arithmetic and report writing (the measurements run in `make bench`, not here)."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import TEMPLATE


@pytest.fixture(scope="module")
def bench():
    """bench.measure and bench.report, imported from the template's root."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(TEMPLATE))
        from bench import measure, report

        yield measure, report


def test_table_ratios_are_medians_over_the_baseline(bench, capsys):
    measure, _ = bench
    table = measure.Table()
    table.add("s", "floor", [0.010, 0.011, 0.030])
    table.add("s", "make env", [0.015, 0.016, 0.100], [0.010, 0.011, 0.030], "<= 2x")
    table.note("s", "claims", "50/50 distinct")
    md = table.markdown()
    assert "| floor | 11.0 ms | baseline |  |  |" in md
    assert "| make env | 16.0 ms | 1.45x | <= 2x |  |" in md
    assert "| claims |  |  |  | 50/50 distinct |" in md
    assert "1.45x" in capsys.readouterr().out


def test_fmt(bench):
    measure, _ = bench
    assert measure.fmt(0.0123) == "12.3 ms" and measure.fmt(2.5) == "2.50 s" and measure.fmt(float("nan")) == "-"


def test_interleaved_alternates_the_order(bench):
    measure, _ = bench
    calls = []
    times = measure.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}


def test_write_doc_replaces_only_between_markers(bench, tmp_path, monkeypatch):
    measure, report = bench
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# Performance\n\nkept above\n<!-- bench:begin -->\nold table\n<!-- bench:end -->\nkept below\n")
    monkeypatch.setattr(report, "DOC", doc)
    monkeypatch.setattr(report, "TEMPLATE", tmp_path)
    table = measure.Table()
    table.add("s", "row", [1.0])
    report.write_doc(table, "header line")
    text = doc.read_text()
    assert "kept above" in text and "kept below" in text and "old table" not in text
    assert "header line" in text and "| row | 1.00 s | baseline |" in text
    report.write_doc(table, "second")
    assert doc.read_text().count("<!-- bench:begin -->") == 1 and "header line" not in doc.read_text()


def test_memory_is_summed_per_compose_project(bench, monkeypatch):
    measure, _ = bench
    lines = [
        {"Name": "demo-stack-23000-postgres-1", "MemUsage": "40.5MiB / 23.4GiB"},
        {"Name": "demo-stack-23000-api-1", "MemUsage": "1.5GiB / 23.4GiB"},
        {"Name": "demo-stack-230000-api-1", "MemUsage": "999MiB / 23.4GiB"},  # another copy, same prefix
        {"Name": "demo-stack-24000-redis-1", "MemUsage": "512KiB / 23.4GiB"},
    ]
    out = "\n".join(json.dumps(line) for line in lines)
    monkeypatch.setattr(measure, "run", lambda cmd: subprocess.CompletedProcess(cmd, 0, out, ""))
    mem = measure.memory_of(["demo-stack-23000", "demo-stack-24000"])
    assert mem == {"demo-stack-23000": pytest.approx(40.5 + 1536), "demo-stack-24000": pytest.approx(0.5)}
