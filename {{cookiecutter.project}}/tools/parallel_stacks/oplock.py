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


def hold_file(path: Path, waiting: Callable[[str], str]) -> int:
    """An exclusive flock on the file `path` (created if missing), with this process's pid written into it.

    `waiting(pid)` words the one line printed when another process holds it
    (`pid`: the holder's, as it wrote it). Released by `release_file`, which
    removes the file: no lock file outlives its last holder (a killed one's
    is removed by the next). A holder that finds its file removed (the one
    before it released it) starts again on the new file, so two processes
    never hold one path at once.
    """
    said = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StackError(f"cannot open the lock {path}: {exc.strerror}") from None
        try:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    print(waiting(os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"), file=sys.stderr, flush=True)
                    said = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            now = os.stat(path)
            if (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino):
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                return fd
        except FileNotFoundError:
            pass  # released and removed while we waited: take the next one
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def release_file(path: Path, fd: int) -> None:
    """Remove lock file `path` and release it (`fd` from `hold_file`)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
