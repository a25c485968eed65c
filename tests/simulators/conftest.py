"""Helpers for the simulator tests: a bare paho subscriber and small simulator settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from config.settings import SimulatorSettings
from simulators.local_services import Mosquitto

_ids = count()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    received_ns: int


class Subscriber:
    """A plain paho client recording what it receives; waits on a condition, never sleeps."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        self.messages: list[Received] = []
        self._changed = threading.Condition()
        self._subscribed = False
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{next(_ids)}"
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, port, 30)
        self.client.loop_start()
        if not self.wait_until(lambda msgs: self._subscribed, 10):
            self.close()
            raise AssertionError(f"could not subscribe to {topic} on {host}:{port}")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        with self._changed:
            self._subscribed = True
            self._changed.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._changed:
            received = Received(msg.topic, bytes(msg.payload), bool(msg.retain), time.time_ns())
            self.messages.append(received)
            self._changed.notify_all()

    def wait_until(self, predicate: Callable[[list[Received]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def snapshot(self) -> list[Received]:
        with self._changed:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def subscribe(broker: Mosquitto) -> Iterator[Callable[[str], Subscriber]]:
    made: list[Subscriber] = []

    def make(topic: str) -> Subscriber:
        sub = Subscriber(broker.host, broker.port, topic)
        made.append(sub)
        return sub

    yield make
    for sub in made:
        sub.close()


def sim_settings(**changes: Any) -> SimulatorSettings:
    """Settings fast enough for tests: 10 simulated seconds pass in a quarter of a second."""
    base: dict[str, Any] = {
        "interval_s": 10.0,
        "speed": 40.0,
        "street_heartbeat_s": 60.0,
        "street_connections": 8,
        "seed": 7,
        "faults": [],
    }
    return SimulatorSettings.model_validate({**base, **changes})


def publish_retained(host: str, port: int, topic: str, payload: bytes) -> None:
    """Publish (or, with an empty payload, clear) a retained message and wait for its PUBACK."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-pub-{next(_ids)}")
    client.connect(host, port, 30)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
