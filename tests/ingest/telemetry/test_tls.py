"""TLS on the broker listener, on real Mosquitto: ingest and devices that trust the district's CA
get through, clients with another CA or without TLS are refused, and nothing they send is
stored."""

from __future__ import annotations

import logging
import shutil
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.reasoncodes import ReasonCode

from config.settings import Settings
from devices.pki import TlsFiles, client_context, make_test_pki
from devices.registry import Registry
from ingest.telemetry.pipeline import IngestService
from simulators.local_services import Influxd, Mosquitto
from tests.support import Publisher, count, make_settings, unique, wait_until

SITE = "kitchen-0001"
FRIDGE = "kitchen-0001-fridge-1"
FREEZER = "kitchen-0001-freezer-1"


def topic(device: str) -> str:
    return f"v1/sites/{SITE}/devices/{device}/telemetry"


def stored(settings: Settings, device: str) -> int:
    return count(settings, "telemetry", "temp_c", f"WHERE device_id = '{device}'")


@pytest.fixture
def pki(tmp_path: Path) -> TlsFiles:
    return make_test_pki(tmp_path / "tls", ["localhost", "127.0.0.1"])


@pytest.fixture
def other_pki(tmp_path: Path) -> TlsFiles:
    """Another district's CA, with a certificate for the same names."""
    return make_test_pki(tmp_path / "other-tls", ["localhost", "127.0.0.1"])


@pytest.fixture
def tls_broker(tmp_path: Path, pki: TlsFiles) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto", tls=pki) as broker:
        yield broker


class PlainClient:
    """A device without TLS; records whether the broker ever accepted it and when it hung up."""

    def __init__(self, broker: Mosquitto) -> None:
        self.accepted = threading.Event()
        self.disconnected = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=unique("plain"))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.client.reconnect_delay_set(30, 60)  # one attempt is what the test looks at
        self.client.connect(broker.host, broker.port)  # TCP: the port does answer
        self.client.loop_start()

    def _on_connect(self, c: object, u: object, f: object, rc: ReasonCode, p: object) -> None:
        if not rc.is_failure:
            self.accepted.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_ingest_and_devices_over_tls_and_nobody_else(
    tls_broker: Mosquitto,
    pki: TlsFiles,
    other_pki: TlsFiles,
    tmp_path: Path,
    influxd: Influxd,
    registry: Registry,
) -> None:
    settings = make_settings(tmp_path / "data", tls_broker, influxd, mqtt={"tls_ca": str(pki.ca)})
    with IngestService(settings, registry) as ingest:
        assert ingest.wait_connected(15), "ingest did not connect over TLS"
        device = Publisher(tls_broker, tls_ca=pki.ca)
        device.publish(topic(FRIDGE), {"temp_c": 3.5})
        device.flush()
        wait_until(lambda: stored(settings, FRIDGE) == 1, 20, "the reading sent over TLS stored")

        # Another CA: the broker's certificate does not verify, so the device never connects
        # and has nothing to send on.
        stranger = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=unique("stranger"))
        stranger.tls_set_context(client_context(other_pki.ca))
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            stranger.connect(tls_broker.host, tls_broker.port)

        # No TLS at all: the TCP connection opens, but the broker hangs up on the plain MQTT
        # CONNECT and the reading queued behind it.
        plain = PlainClient(tls_broker)
        try:
            plain.client.publish(topic(FREEZER), '{"temp_c": -18.0}', qos=1)
            assert plain.disconnected.wait(15), "the broker kept a plain connection open"
            assert not plain.accepted.is_set()
        finally:
            plain.close()

        device.publish(topic(FRIDGE), {"temp_c": 3.6})
        device.close()
        wait_until(lambda: stored(settings, FRIDGE) == 2, 20, "the second reading stored")
    # Ingest has caught up with the broker: "nothing else arrived" now means something.
    assert stored(settings, FREEZER) == 0
    assert count(settings, "telemetry", "temp_c") == 2


def test_ingest_that_cannot_verify_the_broker_says_why_and_connects_once_it_can(
    tmp_path: Path,
    pki: TlsFiles,
    other_pki: TlsFiles,
    influxd: Influxd,
    registry: Registry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The broker presents a certificate of another CA (a rotation gone wrong, or an impostor).
    wrong = Mosquitto(tmp_path / "wrong-broker", tls=other_pki)
    mqtt = {"tls_ca": str(pki.ca), "reconnect_max_s": 1}
    settings = make_settings(tmp_path / "data", wrong, influxd, mqtt=mqtt)
    logs = caplog.at_level(logging.WARNING, logger="ingest.telemetry.mqtt")
    with wrong, logs, IngestService(settings, registry) as ingest:
        failures = wait_until(
            lambda: [r for r in caplog.records if "certificate verify failed" in r.getMessage()],
            15,
            "the failed TLS handshake logged",
        )
        assert failures[0].levelno == logging.ERROR
        assert "mqtt.tls_ca" in failures[0].getMessage()
        assert not ingest.wait_connected(0)
        # The broker is given the district's certificate on the same port: ingest, still
        # retrying, connects without a restart.
        wrong.stop()
        with Mosquitto(tmp_path / "right-broker", port=wrong.port, tls=pki) as right:
            assert ingest.wait_connected(15), "ingest did not connect to the right broker"
            device = Publisher(right, tls_ca=pki.ca)
            device.publish(topic(FRIDGE), {"temp_c": 4.0})
            device.close()
            wait_until(lambda: stored(settings, FRIDGE) == 1, 20, "the reading stored")
    # The same failure, retried every second, is logged once.
    assert len([r for r in caplog.records if "certificate verify failed" in r.getMessage()]) == 1


def test_the_broker_takes_a_new_certificate_at_a_reload_and_keeps_its_clients(
    tmp_path: Path, pki: TlsFiles, other_pki: TlsFiles
) -> None:
    # The broker reads its certificate and key from paths that rotation replaces.
    live = tmp_path / "live"
    live.mkdir()
    files = TlsFiles(ca=pki.ca, cert=live / "server.pem", key=live / "server.key")
    shutil.copy2(pki.cert, files.cert)
    shutil.copy2(pki.key, files.key)
    with Mosquitto(tmp_path / "mosquitto", tls=files) as broker:
        before = Publisher(broker, tls_ca=pki.ca)
        try:
            # The certificate is replaced (here by one of another CA, so that a client can tell
            # which one it was shown), then the broker is asked to reload: no restart.
            for new, path in ((other_pki.cert, files.cert), (other_pki.key, files.key)):
                staged = path.with_suffix(".new")
                shutil.copy2(new, staged)
                staged.replace(path)
            broker.reload()

            def connects_with_the_new_certificate() -> bool:
                try:
                    Publisher(broker, tls_ca=other_pki.ca).close()
                except ssl.SSLCertVerificationError:
                    return False  # not reloaded yet
                return True

            wait_until(connects_with_the_new_certificate, 10, "the new certificate in use")
            with pytest.raises(ssl.SSLCertVerificationError):
                Publisher(broker, tls_ca=pki.ca)
            # The client connected before the reload is still connected, and still delivers.
            before.publish(topic(FRIDGE), {"temp_c": 3.0})
            before.flush(timeout=10)
        finally:
            before.close()
