"""The one error path of every command: a StackError is one `error:` line and exit 2."""

from __future__ import annotations

import sys

from .basics import StackError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["EXIT_USAGE", "run"]

EXIT_USAGE = 2  # a problem the user can fix (bad input, a refused operation, the engine gone)


def run(command: Callable[[], int]) -> int:
    """Call `command`; its exit status, or EXIT_USAGE after printing a StackError as one line."""
    try:
        return command()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
