"""One stack operation (up, down, nuke) per worktree at a time.

`make up` and `make nuke` of the same copy started together would otherwise
interleave: nuke removing containers that up is still creating. The second
one waits for the first (and says so), then sees the state it left behind.
The lock is an flock on the worktree directory itself: no lock file to
create or leave behind, and the kernel releases it when its holder exits,
however it exits (kill -9 included).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from .basics import StackError


def wait_for(fd: int, waiting: Callable[[], str]) -> None:
    """Take an exclusive flock on `fd`; if another process holds it, print `waiting()` once, then block until it is ours."""
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(waiting(), file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)


@contextlib.contextmanager
def hold(root: Path, what: str) -> Iterator[None]:
    """Hold this worktree's operation lock for the duration of the block."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise StackError(f"cannot open {root} to lock it: {exc.strerror}") from None
    try:
        wait_for(fd, lambda: f"{what}: waiting for another up/down/nuke of this worktree to finish")
        yield
    finally:
        os.close(fd)  # closing releases the lock
