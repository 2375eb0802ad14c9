"""What every layer shares and which imports nothing of the package: the one
exception type, the host-port limits, naming and number parsing helpers."""

from __future__ import annotations

__all__ = [
    "MAX_NUMBER_DIGITS",
    "PORT_MAX",
    "PORT_MIN",
    "StackError",
    "await_answer",
    "is_digits",
    "pid_alive",
    "short",
    "truthy",
    "var_name",
]

PORT_MIN, PORT_MAX = 1024, 65535
MAX_NUMBER_DIGITS = 18  # task and build numbers; int() refuses beyond 4300 digits anyway


class StackError(Exception):
    """A problem the user can fix; every command prints it as one `error:` line."""


def is_digits(raw: str) -> bool:
    """`raw` is one or more ASCII digits (what `^[0-9]+$` says, without importing `re`)."""
    return bool(raw) and raw.isascii() and raw.isdigit()


def var_name(name: str) -> str:
    """The variable prefix of a service or volume: `my-api` -> `MY_API`."""
    return name.upper().replace("-", "_")


def short(raw: str, limit: int = 40) -> str:
    """`raw` for an error message: repr, cut to `limit` characters."""
    return repr(raw) if len(raw) <= limit else repr(raw[:limit]) + f"... ({len(raw)} characters)"


def truthy(value: str | None) -> bool:
    """FORCE=1, CI=true, DRY_RUN=yes ...: anything but empty, 0, false, no."""
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def pid_alive(pid: int) -> bool:
    """True while process `pid` runs; a zombie (killed, not yet reaped by its parent) is not alive. Without /proc
    (macOS) the signal's answer stands."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[:1] != [b"Z"]
    except OSError:
        return True


def await_answer(host: str, port: int, hello: bytes, answer: bytes, timeout: float, unexpected: str = "an unexpected answer") -> str | None:
    """Until a server on host:port answers `hello` (sent if not empty) with a reply starting with `answer`, at most
    `timeout` seconds (a new container needs a moment): None once it did, else why not the last time it was asked."""
    import socket
    import time

    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if hello:
                    sock.sendall(hello)
                if sock.recv(len(answer) or 1).startswith(answer):
                    return None
                last = unexpected
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    return last
