"""The plugin's fixtures: what a test asks for to reach its worker's own resources."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..basics import StackError
from ..kinds.mqtt import BROKER_COMMAND, BROKER_IMAGE, MqttEndpoint
from ..kinds.redis import RedisNamespace
from .isolation import ParallelTestContext, PortBlock, TopicNamespace
from .state import STATE

__all__ = [
    "container_name",
    "database_url",
    "isolated_database",
    "mqtt_endpoint",
    "parallel_context",
    "redis_namespace",
    "stack",
    "topic_namespace",
    "worker_broker",
    "worker_db",
    "worker_ports",
    "worker_tmp_dir",
]


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config) -> dict[str, Any]:
    """This copy's derived values (ports, URLs) as `make env` prints them."""
    return pytestconfig.stash[STATE].copy.as_env()


@pytest.fixture(scope="session")
def parallel_context(pytestconfig: pytest.Config) -> ParallelTestContext:
    """This worker's isolated resources, all in one object."""
    return pytestconfig.stash[STATE].context


@pytest.fixture(scope="session")
def isolated_database(pytestconfig: pytest.Config, parallel_context: ParallelTestContext) -> str:
    """Name of this worker's own database (cloned from the run's template before its first test)."""
    state = pytestconfig.stash[STATE]
    if not state.use_stack:
        pytest.fail("this test needs the stack's database but --no-stack was given", pytrace=False)
    if parallel_context.database_name is None:
        pytest.fail("this stack has no service of kind postgres (stack.yml)", pytrace=False)
    return parallel_context.database_name


@pytest.fixture(scope="session")
def database_url(isolated_database: str, parallel_context: ParallelTestContext) -> str:
    """The URL of this worker's own database."""
    assert parallel_context.database_url is not None
    return parallel_context.database_url


@pytest.fixture
def worker_db(database_url: str) -> Iterator[Any]:
    """A psycopg connection to this worker's database (autocommit). (Named apart from pytest-django's `db`.)"""
    import psycopg

    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        yield conn


@pytest.fixture(scope="session")
def redis_namespace(pytestconfig: pytest.Config, parallel_context: ParallelTestContext) -> RedisNamespace:
    """This worker's Redis DB and key prefix (emptied before and after the worker's run)."""
    if parallel_context.redis is None:
        pytest.skip("this stack has no Redis")
    if not pytestconfig.stash[STATE].use_stack:
        pytest.fail("this test needs the stack's Redis but --no-stack was given", pytrace=False)
    namespace: RedisNamespace = parallel_context.redis
    return namespace


@pytest.fixture(scope="session")
def mqtt_endpoint(pytestconfig: pytest.Config, parallel_context: ParallelTestContext) -> MqttEndpoint:
    """This copy's broker as this worker reaches it: host, port, credentials and its topic namespace (`.client()` connects)."""
    if parallel_context.mqtt is None:
        pytest.fail("this test needs an MQTT broker but stack.yml has no service of kind mqtt", pytrace=False)
    if not pytestconfig.stash[STATE].use_stack:
        pytest.fail("this test needs the stack's MQTT broker but --no-stack was given", pytrace=False)
    endpoint: MqttEndpoint = parallel_context.mqtt
    return endpoint


@pytest.fixture
def worker_broker(pytestconfig: pytest.Config, parallel_context: ParallelTestContext) -> Iterator[MqttEndpoint]:
    """A Mosquitto broker of this worker's own, for one test (seed 002): container `<copy>-<worker>-broker` on its
    own network, published on 127.0.0.1 on the last port of the worker's block, removed when the test ends."""
    from ..engine import TEST_COPY_LABEL, TEST_WORKER_LABEL, WORKTREE_LABEL
    from ..settings import Settings
    from . import containers

    state = pytestconfig.stash[STATE]
    labels = {
        TEST_COPY_LABEL: parallel_context.copy,
        TEST_WORKER_LABEL: parallel_context.worker,
        WORKTREE_LABEL: state.copy.env["STACK_WORKTREE"],
    }
    port = parallel_context.ports.port(parallel_context.ports.size - 1)
    image = Settings.read().get("MOSQUITTO_IMAGE") or BROKER_IMAGE  # read now: a conftest's or monkeypatch's setting counts
    try:
        container = containers.start(
            state.settings, image, parallel_context.container_name("broker"), port, 1883, labels, state.run_dir, BROKER_COMMAND
        )
    except StackError as exc:
        pytest.fail(f"worker_broker: {exc}", pytrace=False)
    try:
        endpoint = MqttEndpoint("127.0.0.1", container.port, "", "", parallel_context.topics)
        endpoint.wait_ready()
        yield endpoint
    finally:
        containers.stop(container)


@pytest.fixture(scope="session")
def worker_ports(parallel_context: ParallelTestContext) -> PortBlock:
    """The block of ports this worker's servers may bind."""
    return parallel_context.ports


@pytest.fixture(scope="session")
def worker_tmp_dir(parallel_context: ParallelTestContext) -> Path:
    """A temp/media directory whose name carries the copy and worker id."""
    parallel_context.tmp_dir.mkdir(parents=True, exist_ok=True)
    return parallel_context.tmp_dir


@pytest.fixture(scope="session")
def topic_namespace(parallel_context: ParallelTestContext) -> TopicNamespace:
    """This worker's MQTT topic namespace (`topic('a/b')` -> `test/gw0/a/b`)."""
    return parallel_context.topics


@pytest.fixture(scope="session")
def container_name(parallel_context: ParallelTestContext) -> Callable[[str], str]:
    """container_name('broker') -> '<copy>-<worker>-broker'."""
    return parallel_context.container_name
