"""`make release`: free this worktree's slots (auto, task ids, build numbers) for its ENV; `claim` prints an auto slot."""

from __future__ import annotations

import argparse
import sys

from ..runner import run
from ..settings import Settings

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """`make claim` / `make release`: take, or free, this worktree's PORT_OFFSET=auto (and task-id) slots."""
    settings = Settings.read()
    parser = argparse.ArgumentParser(prog="python -m parallel_stacks", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["claim", "release"], help="claim: print this worktree's auto slot; release: free its slots")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    def command() -> int:
        from .. import derive
        from ..config import env_name_of, project_root
        from ..registry import claims

        root = project_root(settings)
        if args.command == "claim":
            print(derive.load(root, settings.replace(PORT_OFFSET="auto"), claim=True)["PORT_OFFSET"])
            return 0
        freed = claims.release(root, env_name_of(settings), settings)
        print(f"released PORT_OFFSET={freed}" if freed is not None else "released this worktree's task and build-number slots, if any")
        return 0

    return run(command)
