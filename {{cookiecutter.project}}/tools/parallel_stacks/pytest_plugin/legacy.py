"""Deprecated fixture names, registered only where they cannot shadow another plugin's.

`db` was this plugin's name for `worker_db` until it met pytest-django's own
`db` (which one a test got depended on plugin order). It survives as an
alias, with a deprecation warning, only where pytest-django is not active.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = ["db"]


@pytest.fixture
def db(worker_db: Any) -> Iterator[Any]:
    """Deprecated: `worker_db` (this name is pytest-django's `db` where pytest-django is installed)."""
    warnings.warn(
        pytest.PytestDeprecationWarning(
            "the parallel-stacks fixture `db` is deprecated: use `worker_db` (pytest-django's `db` is another fixture)"
        ),
        stacklevel=2,
    )
    yield worker_db
