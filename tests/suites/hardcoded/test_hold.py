"""Held open by tests/test_localhost_e2e.py (HOLD_DIR set): starts the worker's own Redis, says so, and waits
to be killed. Skipped otherwise."""
import os
import time
from pathlib import Path

import pytest
import redis

HOLD = os.environ.get("HOLD_DIR")


@pytest.mark.skipif(not HOLD, reason="only when tests/test_localhost_e2e.py holds a run open")
def test_hold_with_the_workers_own_redis_up():
    assert redis.Redis().ping()
    (Path(HOLD) / "ready").touch()
    for _ in range(3000):  # until killed (a bound, so a lost run ends by itself)
        time.sleep(0.1)
    pytest.fail("nobody killed this run")
