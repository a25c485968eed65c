"""Two service nodes on one PostgreSQL alert store, one broker and one InfluxDB: they see each
other, an alert changed on one streams to the SSE clients of both, a token revoked on one is
refused by both, and exactly one of them relays each change to MQTT, also after the relaying
node stops."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest

from alerts.store import AlertStore
from analytics.events import Raise, Severity, Source
from cluster import rendezvous
from config.settings import Settings
from devices.registry import Registry
from devices.tokens import TokenStore
from service.mingliang import RELAY_KEY, create_app
from simulators.local_services import Influxd, Mosquitto
from tests.pg import reset_database
from tests.support import SseReader, bearer, make_settings, make_token, serve, unique, wait_until


@pytest.fixture
def store_url(postgres_url: str) -> str:
    reset_database(postgres_url)
    return postgres_url


def node_settings(
    tmp_path: Path, broker: Mosquitto, influxd: Influxd, store_url: str, node_id: str
) -> Settings:
    return make_settings(
        tmp_path / node_id,
        broker,
        influxd,
        influx={"database": "nodes"},
        alerts={"store_url": store_url},
        cluster={"node_id": node_id, "heartbeat_s": 0.2, "dead_after_s": 2.0},
    )


def members(client: httpx.Client) -> list[str]:
    body = client.get("/healthz").json()
    return [m["node_id"] for m in body.get("cluster", {}).get("members", [])]


@contextlib.contextmanager
def alert_listener(broker: Mosquitto) -> Iterator[list[dict[str, Any]]]:
    got: list[dict[str, Any]] = []
    subscribed = threading.Event()
    listener = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=unique("integration"))
    listener.on_connect = lambda c, *a: c.subscribe("v1/alerts/#", qos=1)
    listener.on_subscribe = lambda *a: subscribed.set()
    listener.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    listener.connect(broker.host, broker.port)
    listener.loop_start()
    try:
        assert subscribed.wait(10)
        yield got
    finally:
        listener.disconnect()
        listener.loop_stop()


def test_two_nodes_share_alert_changes_tokens_and_one_relay(
    tmp_path: Path, broker: Mosquitto, influxd: Influxd, store_url: str, registry: Registry
) -> None:
    a_settings = node_settings(tmp_path, broker, influxd, store_url, "west")
    b_settings = node_settings(tmp_path, broker, influxd, store_url, "east")
    token = make_token(a_settings)
    store = AlertStore(store_url)  # the rules of some node raising alerts
    with contextlib.ExitStack() as stack:
        stack.callback(store.close)
        got = stack.enter_context(alert_listener(broker))
        a = stack.enter_context(serve(create_app(a_settings, registry), token))
        b_server = contextlib.ExitStack()
        stack.enter_context(b_server)
        b = b_server.enter_context(serve(create_app(b_settings, registry), token))
        for node in (a, b):
            joined = lambda n=node: members(n) == ["east", "west"]  # noqa: E731
            wait_until(joined, 20, "both nodes joined")

        clients = [httpx.Client(base_url=n.base_url, headers=dict(n.headers)) for n in (a, b)]
        readers = [SseReader(client) for client in clients]
        for reader in readers:
            stack.callback(reader.close)  # before its server stops, which ends the stream
        for client in clients:
            stack.callback(client.close)
        source = Source("kitchen-0021", "kitchen-0021-cam-1")
        created = store.raise_(Raise(source, "smoking", "event.smoking", Severity.MAJOR, 0, {}, ()))
        alert_id = created.alert.id
        assert a.post(f"/api/v1/alerts/{alert_id}/acknowledge").status_code == 200
        for reader, name in zip(readers, ("west", "east"), strict=True):
            both = lambda r=reader: len(r.of(alert_id)) >= 2  # noqa: E731
            wait_until(both, 10, f"both changes on the {name} node")
            assert reader.of(alert_id) == ["created", "acknowledged"], name

        # A token revoked on one node is refused by both at once: nothing is cached.
        other = make_token(a_settings, role="supervisor")
        assert b.get("/api/v1/alerts", headers=bearer(other)).status_code == 200
        assert a.get("/api/v1/alerts", headers=bearer(other)).status_code == 200
        tokens = TokenStore(store.engine)
        (record,) = [t for t in tokens.list() if t.role.value == "supervisor"]
        assert tokens.revoke(record.id)
        for node in (a, b):
            refused = node.get("/api/v1/alerts", headers=bearer(other))
            assert refused.status_code == 401, refused.text

        # Each change went out on MQTT once, by whichever node owns the relay.
        resolved = a.post(f"/api/v1/alerts/{alert_id}/resolve", json={"note": "put out"})
        assert resolved.status_code == 200
        actions = lambda: [c["action"] for c in got if c["alert"]["id"] == alert_id]  # noqa: E731
        wait_until(lambda: "resolved" in actions(), 10, "the resolve on MQTT")
        assert actions() == ["created", "acknowledged", "resolved"]

        # The relaying node stops: the other takes the relay over, from where it stopped.
        assert rendezvous.owner(RELAY_KEY, ["east", "west"]) == "east"
        readers[1].close()
        b_server.close()
        wait_until(lambda: members(a) == ["west"], 20, "east gone")
        again = store.raise_(Raise(source, "smoking", "event.smoking", Severity.MAJOR, 1, {}, ()))
        wait_until(lambda: again.alert.id in [c["alert"]["id"] for c in got], 10, "relay moved")
        assert [c["action"] for c in got if c["alert"]["id"] == again.alert.id] == ["created"]
