#!/usr/bin/env python3
"""Check that every host port of this copy can be bound before `up`.

A port published by this same copy's running containers is not a conflict,
so `make up` on a running copy is a no-op rather than an error.
"""
from __future__ import annotations

import argparse
import errno
import socket
import sys

import stack_config
from stack_config import StackError


def port_free(host: str, port: int) -> bool:
    """True when a server could bind host:port right now (SO_REUSEADDR, as servers do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise StackError(f"cannot test {host}:{port}: {exc.strerror}") from None
    return True


def busy_ports(values: dict, services: dict) -> list[tuple[str, int]]:
    """[(service, port)] that cannot be bound on BIND_ADDRESS."""
    host = values["BIND_ADDRESS"]
    busy = []
    for name in services:
        port = int(values[f"{stack_config.var_name(name)}_PORT"])
        if not port_free(host, port):
            busy.append((name, port))
    return busy


def conflicts(values: dict, services: dict) -> list[tuple[str, int]]:
    """Busy ports minus those this copy's own running containers publish."""
    busy = busy_ports(values, services)
    if not busy:
        return []  # common case: no need to ask Docker anything
    import docker_state

    try:
        own = docker_state.published_ports(docker_state.containers(values["COMPOSE_PROJECT_NAME"]))
    except StackError:
        own = set()  # engine down: every busy port is a conflict
    return [(name, port) for name, port in busy if port not in own]


def describe(values: dict, found: list[tuple[str, int]]) -> str:
    first_name, first_port = found[0]
    more = f" (and {len(found) - 1} more: " + ", ".join(f"{n} {p}" for n, p in found[1:]) + ")" if found[1:] else ""
    return (
        f"port {first_port} for service {first_name} on {values['BIND_ADDRESS']} is already in use{more}; "
        f"stop what holds it or choose another PORT_OFFSET (now {values['PORT_OFFSET']})"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="check_ports.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="print nothing when every port is free")
    args = parser.parse_args(argv)
    try:
        values = stack_config.load()
        services = stack_config.services()
        found = conflicts(values, services)
        if found:
            print(f"error: {describe(values, found)}", file=sys.stderr)
            return 1
        if not args.quiet:
            ports = ", ".join(values[f"{stack_config.var_name(n)}_PORT"] for n in services)
            print(f"ports free for {values['COMPOSE_PROJECT_NAME']} on {values['BIND_ADDRESS']}: {ports}")
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
