"""`python scripts/helpers.py <command> [args]`: what the Makefile runs.

The same as `python -m parallel_stacks <command>`, without runpy's imports:
`make env` is a few milliseconds closer to the interpreter's start-up.
"""

import sys

from parallel_stacks.__main__ import main

sys.exit(main(sys.argv[1:]))
