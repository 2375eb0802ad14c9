"""Layer 1: every Docker label the package writes or reads, spelled once.

Compose's own labels (`com.docker.compose.*`) say which copy a container,
network or volume belongs to; ours (`dev.parallel-stacks.*`) say which
worktree made it, which test run and worker started a container, which slot
a machine claimed on an engine, and which container is the machine's named-URL
proxy. compose.yaml and the compose files `make adopt` writes spell
WORKTREE in YAML (tests/test_helpers.py ties them to this module).
"""

from __future__ import annotations

__all__ = [
    "BENCH",
    "K8S_PREFIX",
    "PREFIX",
    "PROBE",
    "PROJECT",
    "PROXY",
    "SERVICE",
    "SLOT",
    "SLOT_ENV",
    "SLOT_HOST",
    "SLOT_MACHINE",
    "SLOT_TREE",
    "TEST_COPY",
    "TEST_RUN",
    "TEST_WORKER",
    "WORKDIR",
    "WORKTREE",
]

# compose's own
PROJECT = "com.docker.compose.project"  # the copy: <project>-<offset>
WORKDIR = "com.docker.compose.project.working_dir"
SERVICE = "com.docker.compose.service"

PREFIX = "dev.parallel-stacks"
WORKTREE = f"{PREFIX}.worktree"  # the worktree that made a volume or container (ownership)
TEST_COPY = f"{PREFIX}.test-copy"  # containers a test run started (worker_broker): the copy,
TEST_RUN = f"{PREFIX}.test-run"  # the run (its directory's name),
TEST_WORKER = f"{PREFIX}.test-worker"  # and the worker
PROXY = f"{PREFIX}.proxy"  # the machine's named-URL proxy: its port
PROBE = f"{PREFIX}.probe"  # short-lived port probes on a remote engine's host
SLOT = f"{PREFIX}.slot"  # an engine slot claim (a never-started container): its offset
SLOT_HOST = f"{PREFIX}.slot-host"  # for people: the claiming machine's host name
SLOT_MACHINE = f"{PREFIX}.slot-machine"  # for ownership: its id (host names repeat and change)
SLOT_TREE = f"{PREFIX}.slot-worktree"
SLOT_ENV = f"{PREFIX}.slot-env"
BENCH = f"{PREFIX}.bench"  # containers `make bench` starts for its baselines
K8S_PREFIX = PREFIX  # `make k8s`: dev.parallel-stacks/copy, /offset, /worktree-hash, /worktree
