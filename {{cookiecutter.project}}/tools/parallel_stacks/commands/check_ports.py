"""`make check-ports`: is every host port of this copy free (or already this very copy's)?"""

from __future__ import annotations

import sys

from ..runner import run
from ..settings import Settings

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """`make check-ports`: refuse in one line when a host port of this copy is taken by anything but this copy; warn about ports in the ephemeral range."""
    settings = Settings.read()
    argv = sys.argv[1:] if argv is None else argv
    if set(argv) - {"--quiet"}:  # --help and mistakes: argparse words them
        import argparse

        parser = argparse.ArgumentParser(
            prog="python -m parallel_stacks check-ports", description=__doc__.splitlines()[0] if __doc__ else None
        )
        parser.add_argument("--quiet", action="store_true", help="print nothing when every port is free")
        parser.parse_args(argv)

    def command() -> int:
        from .. import probe
        from ..current import values as derived
        from ..model import Copy

        values, services = derived(settings)
        copy = Copy.of(values, services)
        if not probe.quick_all_free(settings, copy):
            probe.check(settings, copy, services)
        inside, low, high = probe.ephemeral_ports(copy)
        if inside and not copy.remote:
            print(
                f"warning: ports {', '.join(map(str, inside))} of {copy.compose_project} lie in this machine's ephemeral "
                f"range {low}-{high}: any outgoing connection may take one and block `make up`; "
                f"keep PORT_OFFSET low enough that every port stays below {low} (or use PORT_OFFSET=auto)",
                file=sys.stderr,
            )
        if "--quiet" not in argv:
            ports = ", ".join(str(p) for _, p in copy.ports())
            print(f"ports ok for {copy.compose_project} on {copy.bind}: {ports} (free, or already this copy's)")
        return 0

    return run(command)
