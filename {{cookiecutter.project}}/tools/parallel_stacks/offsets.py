"""Layer 4: which offset this copy has, by the documented precedence.

PORT_OFFSET (environment, env/local.env, env/$ENV.env; `auto` claims a slot
in the registry); the slot `.env.dynamic` remembers; TASK_ID/ZENFLOW_TASK_ID;
a CI build number; DEFAULT_PORT_OFFSET; else 0. Task ids and build numbers
claim seed 000's slot, or the next free one, in the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .basics import MAX_NUMBER_DIGITS, StackError, is_digits, short
from .config import DEFAULT_TASK_STEP, Layers, lookup
from .formula import offset_for_number, parse_offset, task_number
from .settings import SLOT_SOURCES, Settings

__all__ = ["CI_NUMBER_VARS", "TASK_VARS", "UNCLAIMED", "resolve_offset"]

TASK_VARS = SLOT_SOURCES[:2]  # task ids, then CI build numbers (settings.SLOT_SOURCES, in that order)
CI_NUMBER_VARS = SLOT_SOURCES[2:]


def resolve_offset(
    settings: Settings, layers: Layers, stack: dict[str, Any], root: Path, env_name: str, bind: str, claim: bool = False
) -> tuple[int, str, int | None]:
    """(offset, where it came from, the start of the test-port range the registry gave a claimed slot, else None).

    `claim`: record an auto or task-id slot (the commands that start a copy); without it nothing is written
    and an unclaimed slot is the one a claim would take now (source `... (unclaimed)`)."""
    raw, source = lookup("PORT_OFFSET", settings, layers)
    if raw is not None and raw.strip().lower() == "auto":
        return _auto(root, env_name, stack, bind, settings, "PORT_OFFSET=auto", claim)
    if raw is not None:
        return parse_offset(raw, source, stack), source, None
    if (root / ".env.dynamic").exists():
        from .registry import dynamic

        remembered = dynamic.read_dynamic(root, env_name)
        if remembered is not None:
            test_start = dynamic.read_dynamic_test_ports(root, env_name)
            return parse_offset(str(remembered), ".env.dynamic", stack), ".env.dynamic", test_start
    step = stack.get("task_step", DEFAULT_TASK_STEP)
    for var in TASK_VARS:
        task, tsource = lookup(var, settings, layers)
        if task is not None:
            preferred = offset_for_number(task_number(task, tsource, var), step)
            return _derived(root, env_name, stack, bind, settings, preferred, f"{var}={task.strip()}", var, claim)
    for var in CI_NUMBER_VARS:
        number = settings.get(var)
        if number:
            if not is_digits(number) or len(number) > MAX_NUMBER_DIGITS:
                raise StackError(
                    f"{var}={short(number)} is not a build number (up to {MAX_NUMBER_DIGITS} digits); set PORT_OFFSET explicitly"
                )
            preferred = offset_for_number(int(number), step)
            return _derived(root, env_name, stack, bind, settings, preferred, f"{var}={number}", var, claim)
    fallback, fsource = lookup("DEFAULT_PORT_OFFSET", settings, layers)
    if fallback is not None and fallback.strip().lower() == "auto":
        return _auto(root, env_name, stack, bind, settings, "DEFAULT_PORT_OFFSET=auto", claim)
    if fallback is not None:
        return parse_offset(fallback, f"DEFAULT_PORT_OFFSET in {fsource}", stack), "default", None
    return 0, "default", None


def _auto(root: Path, env_name: str, stack: dict[str, Any], bind: str, settings: Settings, label: str, claim: bool) -> tuple[int, str, int]:
    from .registry import claims  # lazy: only auto copies pay for the registry

    offset, test_start, held = claims.claim(root, env_name, stack, bind, settings, claims.auto_offsets(stack), write=claim)
    return parse_offset(str(offset), label, stack), "auto" if held else UNCLAIMED.format("auto"), test_start


def _derived(
    root: Path,
    env_name: str,
    stack: dict[str, Any],
    bind: str,
    settings: Settings,
    preferred: int,
    label: str,
    source: str,
    claim: bool,
) -> tuple[int, str, int]:
    """A task id's or build number's slot: seed 000's offset if free, else the next free one."""
    from .registry import claims

    offset, test_start, held = claims.claim(
        root, env_name, stack, bind, settings, claims.next_offsets(preferred, stack), label, write=claim
    )
    return parse_offset(str(offset), label, stack), source if held else UNCLAIMED.format(source), test_start


UNCLAIMED = "{} (unclaimed)"  # a slot derived but not recorded: `make up` claims it
