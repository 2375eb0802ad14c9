"""Section 6's claimer, started many times at once: `python claimer.py ROOT START TOOL STATE_DIR`.

Waits until the wall clock reaches START, claims a port (or slot) with TOOL (registry, port-for or portpicker)
and prints what it got and the seconds the claim took."""
import sys
import time

start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
t = time.perf_counter()
if sys.argv[3] == "registry":
    from pathlib import Path

    from parallel_stacks import derive
    from parallel_stacks.settings import Settings

    settings = Settings.read().replace(PORT_OFFSET="auto", PARALLEL_STACKS_STATE_DIR=sys.argv[4])  # the engine as this shell has it
    out = derive.load(Path(sys.argv[1]), settings, claim=True)["PORT_OFFSET"]  # deriving alone claims nothing (491dfcf)
elif sys.argv[3] == "port-for":
    import port_for

    out = port_for.select_random()
else:
    import portpicker

    out = portpicker.pick_unused_port()
print(out, time.perf_counter() - t)
