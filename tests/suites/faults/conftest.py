"""Pause points for tests/test_faults_e2e.py: a run told FAULT_PAUSE=<phase> writes
`<phase>-<pid>` into FAULT_DIR when it reaches that phase, then waits (bounded)
for FAULT_DIR/release, so the test can interrupt it there. Runs without
FAULT_PAUSE never wait."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

PAUSE_LIMIT = 90  # seconds: a run the test forgot is never held for good


def pause(phase: str) -> None:
    if os.environ.get("FAULT_PAUSE") != phase:
        return
    where = Path(os.environ["FAULT_DIR"])
    (where / f"{phase}-{os.getpid()}").touch()
    deadline = time.monotonic() + PAUSE_LIMIT
    while not (where / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session):
    """In each worker, after the plugin made its database and Redis DB: 'workers start'."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pause("workers")


@pytest.fixture(scope="session", autouse=True)
def teardown_pause():
    """After the worker's last test, before the plugin removes what it made: 'teardown'."""
    yield
    pause("teardown")
