"""This stack's helpers: derive a copy's values from stack.yml and PORT_OFFSET,
check and run copies with `docker compose`, isolate pytest-xdist workers.

Nothing is imported here: `make env` must cost little more than starting
Python. Entry point: ``python -m parallel_stacks <command>`` (the Makefile).
"""

__all__: list[str] = []
