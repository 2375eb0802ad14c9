"""Kind `mqtt`: an MQTT broker (Eclipse Mosquitto). MQTT_URL with this copy's
credentials; per test worker, a topic namespace of its own (seed 002).

A broker has no databases to hand out: workers share the copy's broker and
stay apart by topic. Worker N publishes and subscribes under `test/gwN/...`
(`TopicNamespace`); the variables it gets (`MQTT_TOPIC_PREFIX` among them)
are set before anything is imported, so an application that builds its
topics from its settings lands in the worker's namespace unchanged. Nothing
is left on the broker to clean up: retained messages are the only state a
test can leave, and the namespace makes them the worker's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..basics import StackError, await_answer
from .base import Kind, LocalRoute, LocalServer, Lookup, Service, Worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..model import Copy

__all__ = ["BROKER_COMMAND", "BROKER_IMAGE", "KIND", "MqttEndpoint", "TopicNamespace", "TopicOutsideNamespace"]

WILDCARDS = ("+", "#")
BROKER_IMAGE = "eclipse-mosquitto:2"  # as compose.yaml's default; MOSQUITTO_IMAGE overrides both
# The official image's config listens on loopback only: a worker's broker listens for its published port, anonymous.
BROKER_COMMAND = ("sh", "-c", "printf 'listener 1883\\nallow_anonymous true\\n' > /tmp/broker.conf && exec mosquitto -c /tmp/broker.conf")
# CONNECT, MQTT 3.1.1, clean session, keepalive 5 s, client id "ready"; a broker that is up answers CONNACK (0x20)
READY_CONNECT = bytes([0x10, 17, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 5, 0, 5]) + b"ready"


class TopicOutsideNamespace(StackError, ValueError):
    """A topic of another worker (or built without the namespace) where this worker's was expected."""


@dataclass(frozen=True)
class TopicNamespace:
    """Seed 002's namespace: ``topic('a/b') -> 'test/gw0/a/b'`` and back."""

    prefix: str

    @classmethod
    def for_worker(cls, who: str) -> TopicNamespace:
        """The namespace of worker `who` (gw0, master; `shared` when isolation is off)."""
        return cls(f"test/{who}")

    def topic(self, original: str) -> str:
        """`original` inside this namespace (a filter with + or # stays a filter, inside it)."""
        return f"{self.prefix}/{original.lstrip('/')}"

    def strip(self, namespaced: str) -> str:
        """The topic as the code under test named it; TopicOutsideNamespace for a topic of another namespace."""
        head = self.prefix + "/"
        if not namespaced.startswith(head):
            raise TopicOutsideNamespace(
                f"topic {namespaced!r} is outside this worker's namespace {self.prefix!r}: "
                "another worker's message, or a topic built without TopicNamespace.topic()"
            )
        return namespaced[len(head) :]

    def owns(self, namespaced: str) -> bool:
        """True for a topic inside this namespace."""
        return namespaced.startswith(self.prefix + "/")

    @property
    def everything(self) -> str:
        """The filter of every topic in this namespace (`test/gw0/#`)."""
        return f"{self.prefix}/#"


@dataclass(frozen=True)
class MqttEndpoint:
    """Where a worker's MQTT clients connect, and the topics that are theirs."""

    host: str
    port: int
    user: str
    password: str
    topics: TopicNamespace

    @property
    def url(self) -> str:
        """This endpoint as an `mqtt://` URL, credentials percent-encoded."""
        return broker_url(self.host, self.port, self.user, self.password)

    def client(self, client_id: str = "") -> Any:
        """A connected paho-mqtt client (network loop running); disconnect it when done."""
        import paho.mqtt.client as mqtt  # lazy: only tests that ask for it pay the import

        if hasattr(mqtt, "CallbackAPIVersion"):  # paho-mqtt 2
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        else:  # pragma: no cover - paho-mqtt 1
            client = mqtt.Client(client_id=client_id)
        if self.user:
            client.username_pw_set(self.user, self.password)
        client.connect(self.host.strip("[]"), self.port, keepalive=30)
        client.loop_start()
        return client

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the broker accepts an MQTT connection (a new container needs a moment); StackError after `timeout`."""
        last = await_answer(self.host.strip("[]"), self.port, READY_CONNECT, b"\x20", timeout, unexpected="no CONNACK")  # CONNACK
        if last is not None:
            raise StackError(f"the MQTT broker on {self.host}:{self.port} did not accept a connection within {timeout:.0f} s ({last})")


def broker_url(host: str, port: int, user: str, password: str) -> str:
    """`mqtt://user:password@host:port`, user and password percent-encoded (a password with @ / : % #)."""
    return f"mqtt://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}"


class Mqtt(Kind):
    name = "mqtt"
    one_per_stack = True
    variables = ("MQTT_USER", "MQTT_PASSWORD", "MQTT_USERINFO", "MQTT_URL")
    secrets = ("MQTT_PASSWORD", "MQTT_USERINFO")
    secrets_stored = False  # the password file is written afresh at every start (compose.yaml)
    client = "mosquitto_sub"

    def settings(self, project: str, lookup: Lookup) -> dict[str, str]:
        user = lookup("MQTT_USER") or "app"
        if not user or any(c in user for c in " :@/\n") or len(user) > 64:
            raise StackError(f"MQTT_USER={user[:40]!r}: use up to 64 characters without spaces, ':', '@' or '/'")
        password = lookup("MQTT_PASSWORD") or ""
        # `user:password` percent-encoded, for URLs compose builds (the api's MQTT_URL): a password with @ / : % #
        return {"MQTT_USER": user, "MQTT_PASSWORD": password, "MQTT_USERINFO": f"{quote(user, safe='')}:{quote(password, safe='')}"}

    def url_variable(self, service: Service) -> str:
        return "MQTT_URL"

    def url(self, service: Service, derived: Mapping[str, str]) -> str:
        """This endpoint as an `mqtt://` URL, credentials percent-encoded."""
        return broker_url(service.host, service.port, derived["MQTT_USER"], derived["MQTT_PASSWORD"])

    def client_command(self, copy: Copy) -> list[str]:
        """Every message on this copy's broker, with its topic (`make mqtt-sub`; ARGS="-t 'test/gw1/#'" narrows it)."""
        return ["mosquitto_sub", "-u", copy.env["MQTT_USER"], "-P", copy.env["MQTT_PASSWORD"], "-v"]

    # ------------------------------------------------------------ test isolation
    def worker_resources(self, service: Service, copy: Copy, worker: Worker) -> dict[str, Any]:
        topics = TopicNamespace.for_worker(worker.who)
        endpoint = MqttEndpoint(service.host, service.port, copy.env["MQTT_USER"], copy.env["MQTT_PASSWORD"], topics)
        return {"mqtt": endpoint, "topics": topics}  # `topics`: the context's topic_namespace is the broker's

    def local_route(self, service: Service, copy: Copy, worker: Worker) -> LocalRoute | None:
        """`localhost:1883`: a broker of the worker's own (anonymous, as a hard-coded client expects), since a fixed
        topic on the copy's broker is every worker's; not routed when isolation is off."""
        if not worker.isolated:
            return None
        port = copy.service(service.name).container_port
        server = LocalServer(BROKER_IMAGE, "MOSQUITTO_IMAGE", 1883, slot=3, command=BROKER_COMMAND, hello=READY_CONNECT, answer=b"\x20")
        return LocalRoute(port, server=server)

    def worker_env(self, service: Service, copy: Copy, resources: Mapping[str, Any]) -> dict[str, str]:
        endpoint: MqttEndpoint = resources["mqtt"]
        return {
            "MQTT_URL": endpoint.url,
            "MQTT_HOST": endpoint.host.strip("[]"),
            "MQTT_PORT": str(endpoint.port),
            "MQTT_USER": endpoint.user,
            "MQTT_PASSWORD": endpoint.password,
            "MQTT_TOPIC_PREFIX": endpoint.topics.prefix,
        }


KIND = Mqtt()
