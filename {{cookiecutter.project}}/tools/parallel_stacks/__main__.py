"""``python -m parallel_stacks <command> [args]``: what the Makefile runs.

Each command's module is imported only when asked for, so `make env` costs
little more than starting Python.
"""

from __future__ import annotations

import sys

COMMANDS = {
    "env": "env",
    "ports": "env",
    "check-ports": "check_ports",
    "up": "compose",
    "down": "compose",
    "ps": "compose",
    "logs": "compose",
    "config": "compose",
    "client": "compose",
    "nuke": "nuke",
    "slots": "fleet",
    "gc": "fleet",
    "doctor": "doctor",
    "claim": "release",
    "release": "release",
    "worktree": "worktree",
    "k8s": "k8s",
    "dashboard": "dashboard",
}
KEEPS_NAME = {"env", "compose", "fleet", "release"}  # modules that take the command name as their first argument


def main(argv: list[str]) -> int:
    """`python -m parallel_stacks <command> [args]`: the command's module's main, imported lazily (a `make` target pays only for its own)."""
    if not argv or argv[0] not in COMMANDS:
        choices = ",".join(COMMANDS)
        print("usage: python -m parallel_stacks {" + choices + "} [args]", file=sys.stderr)
        return 2
    module = COMMANDS[argv[0]]
    from importlib import import_module

    command = import_module(f"parallel_stacks.commands.{module}")
    return int(command.main(argv if module in KEEPS_NAME else argv[1:]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
