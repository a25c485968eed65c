"""Per-device broker accounts on real Mosquitto: the broker refuses what a device may not do,
and nothing refused reaches InfluxDB."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from config.settings import Settings
from devices.credentials import CredentialStore, write_broker_files
from devices.registry import Registry
from ingest.telemetry.pipeline import IngestService
from simulators.local_services import BrokerAuth, Influxd, Mosquitto
from tests.support import count, make_settings, wait_until

SITE = "kitchen-0001"
FRIDGE = "kitchen-0001-fridge-1"
FREEZER = "kitchen-0001-freezer-1"
GATEWAY = "kitchen-0001-gw"
OTHER_SITE = "kitchen-0002"
OTHER_FRIDGE = "kitchen-0002-fridge-1"
INGEST = "mingliang-ingest"
ACCEPTED = "accepted"


def topic(device: str, site: str = SITE, channel: str = "telemetry") -> str:
    return f"v1/sites/{site}/devices/{device}/{channel}"


def reading(value: float) -> str:
    return f'{{"values": {{"temp_c": {value}}}}}'


class Client:
    """An MQTT 5 client that records the broker's answers: CONNACK, each PUBACK, disconnect."""

    def __init__(
        self,
        broker: Mosquitto,
        username: str | None,
        password: str | None,
        client_id: str | None = None,
    ) -> None:
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.pubacks: dict[int, str] = {}
        self.received: list[str] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id or username or "anonymous",
            protocol=paho.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = lambda c, u, m: self.received.append(m.topic)
        self.client.reconnect_delay_set(30, 60)  # tests reconnect by hand
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.answered.wait(10), "the broker did not answer the connection"

    def _on_connect(self, c: object, u: object, f: object, rc: ReasonCode, p: object) -> None:
        self.connack = rc
        if not rc.is_failure:
            self.connected.set()
        self.answered.set()

    def _on_disconnect(self, c: object, u: object, f: object, rc: ReasonCode, p: object) -> None:
        self.connected.clear()
        self.disconnected.set()
        self.answered.set()

    def _on_publish(self, c: object, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with self._lock:
            self.pubacks[mid] = str(rc)

    def publish(self, topic: str, payload: str) -> str:
        """The broker's PUBACK reason for one QoS 1 message; ACCEPTED when it took it."""
        info = self.client.publish(topic, payload, qos=1)
        wait_until(lambda: info.mid in self.pubacks, 10, f"PUBACK for {topic}")
        reason = self.pubacks[info.mid]
        return ACCEPTED if reason in ("Success", "No matching subscribers") else reason

    def subscribe(self, pattern: str) -> list[str]:
        """The broker's SUBACK reasons, once it has answered."""
        answered: list[str] = []
        self.client.on_subscribe = lambda c, u, mid, rcs, p: answered.extend(map(str, rcs))
        self.client.subscribe(pattern, qos=1)
        return wait_until(lambda: answered, 10, f"SUBACK for {pattern}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def secured(
    tmp_path: Path, registry: Registry
) -> Iterator[tuple[Mosquitto, dict[str, str], CredentialStore]]:
    """A broker with the generated password file and ACL, and the passwords of a few devices."""
    store = CredentialStore(f"sqlite:///{tmp_path / 'alerts.db'}", actor="test")
    store.create_schema()
    names = [FRIDGE, FREEZER, GATEWAY, OTHER_FRIDGE]
    passwords = {name: store.create(name, site_id=registry.devices[name].site_id) for name in names}
    passwords[INGEST] = store.create(INGEST, role="ingest")
    password_file, acl_file, _ = write_broker_files(registry, store, tmp_path / "broker")
    with Mosquitto(tmp_path / "mosquitto", auth=BrokerAuth(password_file, acl_file)) as broker:
        yield broker, passwords, store
    store.close()


@pytest.fixture
def settings(
    tmp_path: Path, secured: tuple[Mosquitto, dict[str, str], CredentialStore], influxd: Influxd
) -> Settings:
    broker, passwords, _ = secured
    mqtt = {"username": INGEST, "password": passwords[INGEST]}
    return make_settings(tmp_path, broker, influxd, mqtt=mqtt)


@pytest.fixture
def ingest(settings: Settings, registry: Registry) -> Iterator[IngestService]:
    with IngestService(settings, registry) as service:
        assert service.wait_connected(15), "ingest did not connect with its account"
        yield service


def connect_when_allowed(broker: Mosquitto, username: str, password: str) -> Client:
    """A connection for an account the broker learns of at a reload it handles on its own."""

    def attempt() -> Client | None:
        client = Client(broker, username, password)
        if client.connected.is_set():
            return client
        client.close()
        return None

    return wait_until(attempt, 10, f"the broker to accept {username} after the reload")


def stored(settings: Settings, device: str) -> int:
    return count(settings, "telemetry", "temp_c", f"WHERE device_id = '{device}'")


def test_a_device_publishes_only_as_itself_and_under_its_own_site(
    secured: tuple[Mosquitto, dict[str, str], CredentialStore],
    ingest: IngestService,
    settings: Settings,
) -> None:
    broker, passwords, _ = secured
    fridge = Client(broker, FRIDGE, passwords[FRIDGE])
    try:
        assert fridge.connack is not None and not fridge.connack.is_failure
        assert fridge.publish(topic(FREEZER), reading(9.0)) == "Not authorized"
        assert fridge.publish(topic(OTHER_FRIDGE, OTHER_SITE), reading(9.0)) == "Not authorized"
        assert fridge.publish(topic(FRIDGE, OTHER_SITE), reading(9.0)) == "Not authorized"
        assert fridge.publish("v1/alerts/kitchen-0001/gas_leak", "{}") == "Not authorized"
        assert fridge.publish(topic(FRIDGE), reading(3.5)) == ACCEPTED
        wait_until(lambda: stored(settings, FRIDGE) == 1, 20, "the fridge's own reading stored")
    finally:
        fridge.close()
    # The gateway speaks for the devices of its own site, not for another site's.
    gateway = Client(broker, GATEWAY, passwords[GATEWAY])
    try:
        assert gateway.publish(topic(FRIDGE), reading(3.6)) == ACCEPTED
        assert gateway.publish(topic(OTHER_FRIDGE, OTHER_SITE), reading(9.0)) == "Not authorized"
    finally:
        gateway.close()
    wait_until(lambda: stored(settings, FRIDGE) == 2, 20, "the gateway's reading stored")
    # Only then is "nothing else arrived" meaningful: ingest has caught up with the broker.
    assert stored(settings, FREEZER) == 0
    assert stored(settings, OTHER_FRIDGE) == 0
    assert count(settings, "telemetry", "temp_c") == 2


def test_anonymous_wrong_password_and_borrowed_client_ids_are_refused(
    secured: tuple[Mosquitto, dict[str, str], CredentialStore],
) -> None:
    broker, passwords, _ = secured
    anonymous = Client(broker, None, None)
    wrong = Client(broker, FRIDGE, passwords[FREEZER])
    try:
        assert anonymous.connack is not None and str(anonymous.connack) == "Not authorized"
        assert wrong.connack is not None and str(wrong.connack) == "Not authorized"
        assert not anonymous.connected.is_set() and not wrong.connected.is_set()
    finally:
        anonymous.close()
        wrong.close()

    # A device that connects under another device's client id must not knock it off: the
    # broker uses the account's user name as the client id.
    victim = Client(broker, FREEZER, passwords[FREEZER])
    intruder = Client(broker, FRIDGE, passwords[FRIDGE], client_id=FREEZER)
    try:
        assert intruder.connected.is_set()
        assert victim.publish(topic(FREEZER), reading(-18.0)) == ACCEPTED
        assert not victim.disconnected.is_set(), "a borrowed client id knocked the device off"
    finally:
        intruder.close()
        victim.close()


def test_a_device_cannot_read_what_others_send(
    secured: tuple[Mosquitto, dict[str, str], CredentialStore],
) -> None:
    broker, passwords, _ = secured
    snoop = Client(broker, OTHER_FRIDGE, passwords[OTHER_FRIDGE])
    snoop.subscribe("v1/sites/#")
    fridge = Client(broker, FRIDGE, passwords[FRIDGE])
    listener = Client(broker, INGEST, passwords[INGEST])
    assert listener.subscribe("v1/sites/#") == ["Granted QoS 1"]
    try:
        assert fridge.publish(topic(FRIDGE), reading(3.5)) == ACCEPTED
        # Ingest's account got it; by then the broker has made its delivery decisions.
        wait_until(lambda: topic(FRIDGE) in listener.received, 10, "ingest's account to get it")
        assert snoop.received == []
    finally:
        for client in (snoop, fridge, listener):
            client.close()


def test_a_revoked_device_is_refused_after_the_reload_and_the_others_lose_nothing(
    secured: tuple[Mosquitto, dict[str, str], CredentialStore],
    ingest: IngestService,
    settings: Settings,
    registry: Registry,
    tmp_path: Path,
) -> None:
    broker, passwords, store = secured
    revoked = Client(broker, FREEZER, passwords[FREEZER])
    keepers = [Client(broker, name, passwords[name]) for name in (FRIDGE, OTHER_FRIDGE)]
    sent = {FRIDGE: 0, OTHER_FRIDGE: 0}
    stop = threading.Event()

    def keep_publishing(client: Client, device: str, site: str) -> None:
        while not stop.is_set():
            result = client.publish(topic(device, site), reading(3.0 + sent[device] % 10 / 10))
            assert result == ACCEPTED, f"{device} was refused: {result}"
            sent[device] += 1

    threads = [
        threading.Thread(target=keep_publishing, args=(keepers[0], FRIDGE, SITE)),
        threading.Thread(target=keep_publishing, args=(keepers[1], OTHER_FRIDGE, OTHER_SITE)),
    ]
    try:
        assert revoked.publish(topic(FREEZER), '{"values": {"temp_c": -18.0}}') == ACCEPTED
        for thread in threads:
            thread.start()
        wait_until(lambda: min(sent.values()) >= 50, 30, "the others publishing")
        assert store.revoke(FREEZER)
        write_broker_files(registry, store, tmp_path / "broker")
        broker.reload()
        assert revoked.disconnected.wait(10), "the broker kept the revoked device connected"
        again = Client(broker, FREEZER, passwords[FREEZER])
        assert again.connack is not None and str(again.connack) == "Not authorized"
        again.close()
        wait_until(lambda: min(sent.values()) >= 150, 30, "the others publishing after reload")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        for client in (revoked, *keepers):
            client.close()
    for device in (FRIDGE, OTHER_FRIDGE):
        wait_until(
            lambda d=device: stored(settings, d) == sent[d], 30, f"every reading of {device}"
        )
    assert count(settings, "telemetry", "temp_c", f"WHERE device_id = '{FREEZER}'") == 1


def test_ingest_and_relay_accounts_do_only_their_own_job(
    secured: tuple[Mosquitto, dict[str, str], CredentialStore],
    registry: Registry,
    tmp_path: Path,
) -> None:
    broker, passwords, store = secured
    relay_password = store.create("mingliang-relay", role="relay")
    write_broker_files(registry, store, tmp_path / "broker")
    broker.reload()
    relay = connect_when_allowed(broker, "mingliang-relay", relay_password)
    ingest = Client(broker, INGEST, passwords[INGEST])
    try:
        assert relay.publish("v1/alerts/kitchen-0001/gas_leak", "{}") == ACCEPTED
        assert relay.publish(topic(FRIDGE), reading(3.0)) == "Not authorized"
        assert ingest.publish("v1/alerts/kitchen-0001/gas_leak", "{}") == "Not authorized"
        assert ingest.publish(topic(FRIDGE), reading(3.0)) == "Not authorized"
    finally:
        relay.close()
        ingest.close()


def test_ingest_in_partitions_connects_with_one_account_per_partition(
    secured: tuple[Mosquitto, dict[str, str], CredentialStore],
    registry: Registry,
    influxd: Influxd,
    tmp_path: Path,
    postgres_url: str,
) -> None:
    """Several nodes: each partition is a session of its own, so an account of its own on a
    broker that takes the user name for the client id; one password serves them all."""
    broker, passwords, store = secured
    made = store.create_partitioned("parts", "ingest", 2)
    assert sorted(made) == ["parts-p00", "parts-p01"]
    assert len(set(made.values())) == 1
    hashes = {store.active()[name][1] for name in made}
    assert len(hashes) == 2  # one password, each hashed with its own salt
    write_broker_files(registry, store, tmp_path / "broker")
    broker.reload()
    connect_when_allowed(broker, "parts-p00", made["parts-p00"]).close()
    settings = make_settings(
        tmp_path / "parts",
        broker,
        influxd,
        mqtt={"username": "parts", "password": made["parts-p00"]},
        alerts={"store_url": postgres_url},  # several nodes share a PostgreSQL store
        cluster={"node_id": "east", "partitions": 2},
    )
    fridge = Client(broker, FRIDGE, passwords[FRIDGE])
    with IngestService(settings, registry) as service:
        assert service.partitions == []  # nothing until the cluster hands partitions out
        service.start_partition(0)
        service.start_partition(1)
        assert service.wait_connected(15), "a partition did not connect with its account"
        assert service.partitions == [0, 1]
        for value in (3.0, 3.5, 4.0):
            assert fridge.publish(topic(FRIDGE), reading(value)) == ACCEPTED
        where = f"WHERE device_id = '{FRIDGE}'"
        wait_until(lambda: count(settings, "telemetry", "temp_c", where) == 3, 30, "3 readings")
        assert service.stop_partition(0) and service.stop_partition(1)
        assert service.partitions == []
    fridge.close()
