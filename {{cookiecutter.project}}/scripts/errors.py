"""The one exception type of the helpers (a module of its own so that fast
paths can catch it without importing stack_config)."""


class StackError(Exception):
    """A problem the user can fix; main() prints it as one line."""
