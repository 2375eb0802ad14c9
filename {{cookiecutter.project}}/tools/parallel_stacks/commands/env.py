"""`make env` (every derived value as KEY=VALUE) and `make ports` (a table), served from the cache."""

from __future__ import annotations

import sys

from ..cache import REGISTRY_SOURCES, cached, inputs
from ..root import find
from ..settings import Settings

TYPE_CHECKING = False  # typing costs a fifth of `make env`'s start-up: types for mypy only
if TYPE_CHECKING:
    pass

__all__ = ["main", "render"]

COMMANDS = ("env", "ports")


def render(command: str, settings: Settings, show_secrets: bool | None = None) -> tuple[str, str]:
    """(text, offset source) of `make env` or `make ports`."""
    from pathlib import Path

    from .. import derive

    result = derive.load(None, settings)
    stack_services = derive.services(Path(result["STACK_WORKTREE"]))
    if show_secrets is None:
        show_secrets = settings.get("SHOW_SECRETS") == "1"
    shown = result if show_secrets else derive.redact(result, stack_services)
    text = derive.format_env(shown) if command == "env" else derive.format_ports(shown, stack_services)
    return text, result["PORT_OFFSET_SOURCE"]


def main(argv: list[str] | None = None) -> int:
    """`make env` / `make ports`: the derived values, served from the cache when every input is unchanged."""
    settings = Settings.read()
    argv = sys.argv[1:] if argv is None else argv
    root = find(settings)
    if len(argv) != 1 or argv[0] not in COMMANDS or root is None:
        return _slow(argv, settings)  # --help, --show-secrets, mistakes, no project: argparse and the runner word them
    code = 0

    def compute(recording: Settings) -> tuple[str, bool]:
        nonlocal code
        from ..basics import StackError

        try:
            text, source = render(argv[0], recording)
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 2
            return "", False
        return text, source.split(" ", 1)[0] not in REGISTRY_SOURCES

    sys.stdout.write(cached(root, inputs(root, argv[0], settings), settings, compute))
    return code


def _slow(argv: list[str], settings: Settings) -> int:
    import argparse

    from ..runner import run

    parser = argparse.ArgumentParser(prog="python -m parallel_stacks", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=COMMANDS, help="env: KEY=VALUE lines; ports: a readable table")
    parser.add_argument("--show-secrets", action="store_true", default=None, help="print secrets unmasked (also SHOW_SECRETS=1)")
    args = parser.parse_args(argv)

    def command() -> int:
        sys.stdout.write(render(args.command, settings, args.show_secrets)[0])
        return 0

    return run(command)
