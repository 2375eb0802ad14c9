"""What every helper shares and nothing imports: the one exception type, the
host-port limits and the service-to-variable naming. A module of its own so
that fast paths (check-ports, the derived cache) need not import stack_config."""

PORT_MIN, PORT_MAX = 1024, 65535


class StackError(Exception):
    """A problem the user can fix; main() prints it as one line."""


def var_name(name: str) -> str:
    """The variable prefix of a service or volume: `my-api` -> `MY_API`."""
    return name.upper().replace("-", "_")
