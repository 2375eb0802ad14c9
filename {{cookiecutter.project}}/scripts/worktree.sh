#!/usr/bin/env bash
# A copy's life with its git worktree, for hooks and agent tools (docs/WORKTREES.md):
#   scripts/worktree.sh add NAME [--up] [--json]       new worktree ../<repo>.<NAME>, its own copy
#   scripts/worktree.sh remove NAME|PATH [--force] [--json]
#   scripts/worktree.sh setup [DIR] [--up] [--json]    a worktree another tool created (run inside it)
#   scripts/worktree.sh teardown [DIR]                 nuke its copy, release its slot (before removal)
#   scripts/worktree.sh claude-create | claude-remove  Claude Code's WorktreeCreate/WorktreeRemove hooks (JSON on stdin)
# Exit status: 0 done; 2 refused or bad input (one `error:` line on stderr, nothing changed); 1 a step failed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
if [[ ! -x $py ]]; then
  make -C "$here" -s setup >&2
fi
export STACK_ROOT="${STACK_ROOT:-$here}"
exec "$py" "$here/scripts/helpers.py" worktree "$@"
