"""15. `make dashboard` with three copies up (at --dashboard-offset, 1000 and 2000 above): time to first byte of
its page and of `/api/copies`, a fresh snapshot and a shared one, against `make slots FORMAT=json`."""
from __future__ import annotations

import time

from bench.measure import OUT, STARTED, bake_project, first_byte, timed

DASH_PORT, DASH_PROXY = "27464", "27465"  # its dashboard, and a named-URL proxy of its own


def run_section(ctx) -> None:
    table, repeat, offset = ctx.table, ctx.args.repeat, ctx.args.dashboard_offset
    section = "15. `make dashboard` (issue 26): time to first byte with three copies up"
    print(f"\n{section}")
    state = OUT / "dashboard-state"
    extra = {"PARALLEL_STACKS_STATE_DIR": str(state), "NAMED_URLS_PORT": DASH_PROXY, "DASHBOARD_PORT": DASH_PORT}
    members = [bake_project(OUT / "dashboard" / f"w{i}") for i in range(3)]
    offsets = [str(offset + 1000 * i) for i in range(3)]
    for member in members:
        member.base_env = {**member.base_env, **extra}
    STARTED.extend(zip(members, offsets))
    try:
        for member, copy in zip(members, offsets):
            member.make("up", PORT_OFFSET=copy)
        members[0].make("dashboard")
        slots = timed(lambda: members[0].make("slots", FORMAT="json"), repeat)
        table.add(section, "`make slots FORMAT=json` (the same snapshot, printed)", slots)

        def fresh(path):
            time.sleep(1.1)  # the shared snapshot is older than a second: this request takes a new one (not timed)
            return first_byte(DASH_PORT, path)

        for path, label in (("/", "the page"), ("/api/copies", "`/api/copies`")):
            times = [fresh(path) for _ in range(repeat)]
            table.add(section, f"{label}, a new snapshot taken", times, slots, "<= 1x")
            first_byte(DASH_PORT, path)
            shared = [first_byte(DASH_PORT, path) for _ in range(repeat)]  # within the second: the snapshot is shared
            table.add(section, f"{label}, the snapshot another tab took (< 1 s old)", shared, slots, "", "what every other open tab costs")
    finally:
        members[0].make("dashboard", check=False, STOP="1")
        for member, copy in zip(members, offsets):
            member.make("nuke", check=False, PORT_OFFSET=copy, FORCE="1")
