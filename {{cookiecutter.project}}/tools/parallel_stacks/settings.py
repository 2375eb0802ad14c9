"""Layer 1: the environment, read once, in one place.

`Settings.read()` is the only place the package reads `os.environ`; a command
builds one `Settings` at its start and passes it down (as testcontainers'
config does). `VARIABLES` is the one list of the variables the package
honours: `settings.get` refuses any other name, a test checks the list
against the code and against docs/VARIABLES.md.

Beyond the list, the environment is the top layer of the env files for the
names stack.yml and its kinds declare (`POSTGRES_PASSWORD`, `PORT_OFFSET`, a
compose file's own variables): `settings.layer(name)`. Those names are data,
not code, so they are not listed here.

Imports only `os`: the cached `make env` reads its settings before anything else.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs a fifth of `make env`'s start-up: types for mypy only
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["COPY_SELECTORS", "NAMES", "SLOT_SOURCES", "VARIABLES", "Settings"]

# (name, what it does): every variable the package reads by name; docs/VARIABLES.md documents each
VARIABLES: tuple[tuple[str, str], ...] = (
    # which copy
    ("STACK_ROOT", "the project directory (the Makefile sets it); else the nearest stack.yml at or above the working directory"),
    ("STACK_ENV", "the env name (env/<name>.env): dev, test, ci ...; wins over ENV"),
    ("ENV", "the env name when STACK_ENV is unset (not the POSIX shell's startup-file path)"),
    ("PORT_OFFSET", "this copy's offset: a number, or auto (a free slot); also in env/local.env or env/<ENV>.env"),
    ("DEFAULT_PORT_OFFSET", "the offset when nothing else picks one (a number or auto)"),
    ("TASK_ID", "a task id: its number picks the offset (seed 000's slot, or the next free one)"),
    ("ZENFLOW_TASK_ID", "the same as TASK_ID, as Zenflow names it"),
    ("CI_BUILD_NUMBER", "a CI build number: picks the offset like a task id"),
    ("BUILD_NUMBER", "a CI build number (Jenkins): picks the offset like a task id"),
    ("CI_JOB_ID", "a CI job id (GitLab): picks the offset like a task id"),
    ("GITHUB_RUN_ID", "a CI run id (GitHub Actions): picks the offset like a task id"),
    ("BIND_ADDRESS", "the host address published ports bind to (default 127.0.0.1)"),
    ("NAMED_URLS_PORT", "the port of the machine's named-URL proxy (default 7355; off disables it)"),
    (
        "SLOT_CLAIMS",
        "engine: record claimed slots (auto, task ids, build numbers) on the Docker engine too (the default for a remote engine); local: this machine's registry only",
    ),
    ("SERVICES", "only these services (space or comma separated): make up, make test"),
    # the engine
    ("DOCKER_HOST", "the Docker engine to use, as the docker CLI reads it"),
    ("DOCKER_CONTEXT", "the docker CLI context to use"),
    ("DOCKER_CONFIG", "the docker CLI's configuration directory (default ~/.docker)"),
    ("CONTEXTS", "make slots / make dashboard: several engines (docker contexts), comma separated"),
    ("COMPOSE", "the compose command (default: docker compose, else docker-compose)"),
    ("STACK_LEGACY_HEALTHCHECKS", "1: health checks without start_interval even on an engine that has it"),
    # where state lives
    ("PARALLEL_STACKS_STATE_DIR", "the slot registry's directory (default $XDG_STATE_HOME/parallel-stacks)"),
    ("XDG_STATE_HOME", "the user's state directory (default ~/.local/state)"),
    ("XDG_CACHE_HOME", "the user's cache directory (default ~/.cache): make env's cache, make up's stamps"),
    ("STACK_HOST", "the host clients reach this copy's ports on (default: the engine's host, else localhost)"),
    # what commands do
    ("FORCE", "1: no question (make nuke, make gc, make worktree-remove with uncommitted changes)"),
    ("DRY_RUN", "1: make nuke lists what it would remove"),
    ("CI", "true: make nuke does not ask; tests needing Docker fail rather than skip"),
    ("SHOW_SECRETS", "1: make env, make slots and the dashboard show secrets unmasked"),
    ("FORMAT", "json: make slots and make worktree print JSON"),
    ("NAME", "make worktree / worktree-remove: the worktree's name"),
    ("WORKTREE_DIR", "make worktree: the directory new worktrees go in (default: beside the repository)"),
    ("UP", "1: make worktree starts the new copy too"),
    ("STOP", "1: make dashboard stops the running dashboard"),
    ("DASHBOARD_PORT", "the dashboard's numbered port (default 7356)"),
    # images
    ("CADDY_IMAGE", "the named-URL proxy's image"),
    ("PROBE_IMAGE", "the image that checks ports on a remote engine's host"),
    ("PYTHON_IMAGE", "a python image, the probe's fallback"),
    ("MOSQUITTO_IMAGE", "the image of a test's own broker (worker_broker) and of the workers' routed MQTT servers"),
    ("REDIS_IMAGE", "the image of the workers' routed Redis servers"),
    # the test run
    ("STACK_ISOLATION_ENV", "a file of NAME = {VALUE} lines: the app's own variables each worker gets (make adopt writes it)"),
    ("PYTEST_XDIST_WORKER", "pytest-xdist names the worker (gw0, gw1 ...) in its environment before pytest starts in it"),
    ("PYTEST_XDIST_AUTO_NUM_WORKERS", "pytest-xdist's -n auto count; set, the plugin leaves it alone"),
    ("PYTHONPATH", "kept, with the localhost-routing hook put in front for the test run's subprocesses"),
    ("PARALLEL_STACKS_ROUTES", "set by the plugin for subprocesses: the localhost routes of this worker"),
)
NAMES = frozenset(name for name, _ in VARIABLES)
# what picks a copy's offset from a number (a task id, then a CI build number): offsets.py tries them in this order;
# a copy whose offset came from one of them (or auto) asked the slot registry, so the env cache never stores it
SLOT_SOURCES = ("TASK_ID", "ZENFLOW_TASK_ID", "CI_BUILD_NUMBER", "BUILD_NUMBER", "CI_JOB_ID", "GITHUB_RUN_ID")
# what selects a copy in the caller's environment: a new worktree's copy must not inherit them (its own settings decide)
COPY_SELECTORS = ("PORT_OFFSET", "TASK_ID", "ZENFLOW_TASK_ID", "STACK_ROOT")


class Settings:
    """The environment of one command, read once: pass it down, never `os.environ`.

    `get(name)` for the variables of VARIABLES (a typo is a KeyError, not a silent default); `layer(name)`
    for the names stack.yml declares (the environment above the env files); `env` is the whole snapshot,
    for the environment of a child process."""

    __slots__ = ("env",)

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    @classmethod
    def read(cls) -> Settings:
        """THE read of the process environment (a copy: later changes to os.environ do not steer this)."""
        return cls(os.environ.copy())

    def get(self, name: str, default: str = "") -> str:
        """A variable of VARIABLES, or `default` when unset or empty."""
        if name not in NAMES:
            raise KeyError(f"{name} is not among parallel_stacks.settings.VARIABLES")
        return self.env.get(name) or default

    def flag(self, name: str) -> bool:
        """A yes/no variable: anything but unset, empty, 0, false, no."""
        return self.get(name).strip().lower() not in ("", "0", "false", "no")

    def layer(self, name: str) -> str | None:
        """The environment's value of a name stack.yml or an env file declares (None when unset): the top
        layer of config.lookup."""
        return self.env.get(name)

    def replace(self, **changes: str | None) -> Settings:
        """These settings with some variables set (None: unset), e.g. another engine for `CONTEXTS=a,b`."""
        env = dict(self.env)
        for name, value in changes.items():
            if name not in NAMES:
                raise KeyError(f"{name} is not among parallel_stacks.settings.VARIABLES")
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return Settings(env)

    def home_dir(self, variable: str, fallback: str) -> str:
        """An XDG-style directory: `variable` if set, else ~/`fallback`."""
        return self.get(variable) or os.path.join(os.path.expanduser("~"), fallback)

    def cache_dir(self) -> str:
        """$XDG_CACHE_HOME/parallel-stacks: make env's cache, make up's stamps, converted compose files."""
        return os.path.join(self.home_dir("XDG_CACHE_HOME", ".cache"), "parallel-stacks")

    def docker_config_dir(self) -> str:
        """The docker CLI's configuration directory: DOCKER_CONFIG, else ~/.docker."""
        return self.home_dir("DOCKER_CONFIG", ".docker")
