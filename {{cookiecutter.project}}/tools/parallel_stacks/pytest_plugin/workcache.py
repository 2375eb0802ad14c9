"""What earlier runs' tests cost, in pytest's cache: written by the controller (`WorkTally`), read by
`-n auto` (`work_records`) before the cache plugin is configured (xdist asks for the worker count first)."""

from __future__ import annotations

from typing import Any

import pytest

__all__ = ["WorkTally", "work_records"]


def work_records(config: pytest.Config) -> dict[str, Any]:
    """What earlier runs' tests cost ({selection: {"seconds", "tests"}}), from pytest's cache (read before the
    cache plugin is configured: xdist asks for the worker count first)."""
    import json

    from .workers import WORK_KEY

    try:
        path = config.rootpath / str(config.getini("cache_dir")) / "v" / WORK_KEY
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


class WorkTally:
    """The controller's (or the single process's) tally of what this run's tests cost, every phase included
    (xdist hands the controller its workers' reports), kept in pytest's cache for the next `-n auto`."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.seconds = 0.0
        self.tests = 0

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds += report.duration
        self.tests += report.when == "call"

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is None or self.tests == 0 or exitstatus not in (0, 1) or self.config.option.collectonly:
            return  # no cache plugin, nothing ran, or an interrupted run (its figures would mislead)
        from .workers import WORK_KEY, selection_key

        records = work_records(self.config)
        records.pop(key := selection_key(self.config.invocation_params.args), None)
        records[key] = {"seconds": round(self.seconds, 3), "tests": self.tests}
        cache.set(WORK_KEY, dict(list(records.items())[-20:]))  # the latest 20 selections
