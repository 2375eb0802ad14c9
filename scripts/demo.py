#!/usr/bin/env python3
"""Bake a demo project with every default and run two copies side by side.

Bakes into build/demo/, starts copies at PORT_OFFSET 20000 and 21000 (clear
of the test suite's 0 and 10000) and prints each copy's ports and URLs.
`--clean` nukes both copies and removes build/demo.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

TEMPLATE = Path(__file__).resolve().parent.parent
OUT = Path(os.environ.get("DEMO_DIR") or TEMPLATE / "build" / "demo")
OFFSETS = ("20000", "21000")
OFFLINE = {"POSTGRES_IMAGE": "postgres", "REDIS_IMAGE": "redis", "MOSQUITTO_IMAGE": "mosquitto", "CADDY_IMAGE": "caddy", "PYTHON_IMAGE": "python"}


def image_overrides() -> dict:
    """Use the offline stand-ins when this machine has them (no registry access)."""
    env = {}
    for var, kind in OFFLINE.items():
        name = f"parallel-stacks-offline/{kind}:bookworm"
        if var not in os.environ and subprocess.run(["docker", "image", "inspect", name], capture_output=True).returncode == 0:
            env[var] = name
    return env


def make(project: Path, target: str, offset: str, **extra) -> int:
    env = {**os.environ, **image_overrides(), "PYTHON": sys.executable, "PORT_OFFSET": offset, **extra}
    return subprocess.run(["make", target], cwd=project, env=env).returncode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", action="store_true", help="nuke the demo copies and delete build/demo")
    args = parser.parse_args(argv)
    project = OUT / "demo-stack"
    if args.clean:
        if project.exists():
            for offset in OFFSETS:
                make(project, "nuke", offset, FORCE="1")
        shutil.rmtree(OUT, ignore_errors=True)
        try:
            OUT.parent.rmdir()  # build/ too, unless something else lives there
        except OSError:
            pass
        return 0
    if not project.exists():
        from cookiecutter.main import cookiecutter

        OUT.mkdir(parents=True, exist_ok=True)
        cookiecutter(str(TEMPLATE), no_input=True, output_dir=str(OUT))
        print(f"baked {project}")
    for offset in OFFSETS:
        print(f"\n== PORT_OFFSET={offset} make up", flush=True)
        if make(project, "up", offset) != 0:
            return 1
    print(f"\nTwo copies of {project.name} are running side by side. Try, one line at a time:")
    print("\n".join(f"  {line}" for line in hint(project)))
    print("Remove both: make demo-clean")
    return 0


def hint(project: Path) -> list[str]:
    """Commands to paste, one per line (a `|` between them would pipe them into each other)."""
    import shlex

    return [f"cd {shlex.quote(str(project))}"] + [
        f"PORT_OFFSET={OFFSETS[1]} make {target}" for target in ("ports", "ps", "psql ARGS=\"-c 'select version()'\"", "nuke")
    ]


if __name__ == "__main__":
    sys.exit(main())
