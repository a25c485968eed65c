"""Ingest's MQTT connection against real Mosquitto: what a resumed session brings."""

from __future__ import annotations

import threading

from config.settings import load_settings
from ingest.telemetry.mqtt import MqttCollector, MqttMessage
from simulators.local_services import Mosquitto
from tests.support import Publisher, unique, wait_until


class Received:
    def __init__(self) -> None:
        self.topics: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, message: MqttMessage) -> None:
        with self._lock:
            self.topics.append(message.topic)

    def seen(self, topic: str) -> bool:
        with self._lock:
            return topic in self.topics


def test_a_resumed_session_forgets_the_sites_it_no_longer_takes(broker: Mosquitto) -> None:
    """`cluster.partitions` changed: partition 0 of the new layout resumes the session of
    partition 0 of the old one, which the broker keeps with its old subscriptions. The sites
    that went to other partitions must not reach it any more (they would be taken twice)."""
    client_id = unique("ingest-p00")
    mqtt = load_settings(
        {}, mqtt={"host": broker.host, "port": broker.port, "client_id": client_id}
    ).mqtt
    old = MqttCollector(mqtt, Received(), topics=["v1/sites/kept/#", "v1/sites/moved/#"])
    old.start()
    assert old.wait_connected(15), "the old layout's partition did not connect"
    old.stop()

    received = Received()
    new = MqttCollector(
        mqtt, received, topics=["v1/sites/kept/#"], forget=["v1/sites/moved/#", "v1/sites/x/#"]
    )
    new.start()
    try:
        assert new.wait_connected(15), "the new layout's partition did not connect"
        device = Publisher(broker)
        moved = "v1/sites/moved/devices/fridge-1/telemetry"
        kept = "v1/sites/kept/devices/fridge-1/telemetry"
        device.publish(moved, b"{}")  # first: delivered in order, so before `kept` if at all
        device.publish(kept, b"{}")
        device.close()
        wait_until(lambda: received.seen(kept), 15, "the kept site's message")
        assert received.topics == [kept]
    finally:
        new.stop()
