"""Unit suite: pure logic, no stack. Runs anywhere: make test-unit."""
import pytest

from parallel_stacks.pytest_plugin.isolation import PortBlock, TopicNamespace, worker_index

pytestmark = pytest.mark.unit


def price_with_tax(net: float, rate: float) -> float:
    if net < 0 or rate < 0:
        raise ValueError("negative")
    return round(net * (1 + rate), 2)


@pytest.mark.parametrize("net, rate, gross", [(10, 0.2, 12.0), (0, 0.2, 0.0), (19.99, 0.055, 21.09)])
def test_price_with_tax(net, rate, gross):
    assert price_with_tax(net, rate) == gross


def test_price_rejects_negative():
    with pytest.raises(ValueError):
        price_with_tax(-1, 0.2)


def test_topic_namespace_round_trip(topic_namespace):
    topic = topic_namespace.topic("cameras/0/fire")
    assert topic.startswith("test/") and topic.endswith("/cameras/0/fire")
    assert topic_namespace.strip(topic) == "cameras/0/fire"
    with pytest.raises(ValueError):
        TopicNamespace("test/other").strip(topic)


def test_worker_ids():
    assert [worker_index(w) for w in ("master", "gw0", "gw7")] == [0, 0, 7]


def test_port_block_bounds():
    block = PortBlock(20100)
    assert block.port(0) == 20100 and block.port(9) == 20109
    assert 20105 in block and 20110 not in block


def test_container_names_carry_worker(parallel_context, container_name):
    name = container_name("broker")
    assert name == f"{parallel_context.copy}-{parallel_context.worker}-broker"
