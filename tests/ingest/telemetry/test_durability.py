"""Nothing lost: InfluxDB away for 30 s, and the ingest process killed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devices.registry import Registry
from ingest.telemetry.pipeline import IngestService
from simulators.local_services import Influxd, Mosquitto, free_port
from tests.support import Publisher, count, make_settings, query, wait_until

ROOT = Path(__file__).resolve().parents[3]


def door_topics(registry: Registry) -> list[str]:
    return [
        f"v1/sites/{d.site_id}/devices/{d.device_id}/telemetry"
        for d in registry.devices.values()
        if d.type == "door_sensor"
    ]


@pytest.fixture
def own_influxd(tmp_path: Path) -> Iterator[Influxd]:
    with Influxd(tmp_path / "influxd") as server:
        yield server


def test_influx_down_30s_while_10000_messages_arrive_loses_and_duplicates_nothing(
    tmp_path: Path, own_broker: Mosquitto, own_influxd: Influxd, registry: Registry
) -> None:
    broker = own_broker
    settings = make_settings(
        tmp_path / "data", broker, own_influxd, spool={"retry_initial_s": 0.2, "retry_max_s": 1.0}
    )
    topics = door_topics(registry)
    total, outage_s = 10_000, 30.0
    with IngestService(settings, registry) as service:
        assert service.wait_connected(15)
        wait_until(lambda: service.health().influx_up, 15, "InfluxDB up")
        own_influxd.stop()
        started = time.monotonic()
        device = Publisher(broker)
        # Flat payloads take the receive time: a point written twice would show as two.
        for seq in range(total):
            device.publish(topics[seq % len(topics)], {"open_count": seq})
            if seq % 500 == 499:  # spread the publishing over the outage
                time.sleep(max(0.0, started + outage_s * seq / total - time.monotonic()))
        device.close()
        # Everything is acknowledged from the spool while InfluxDB is down.
        wait_until(lambda: service.health().spool_points == total, 30, "all points in the spool")
        assert service.health().pending_messages == 0
        time.sleep(max(0.0, started + outage_s - time.monotonic()))  # the outage lasts 30 s
        own_influxd.start()

        wait_until(lambda: service.health().spool_points == 0, 120, "the spool to drain")
        assert count(settings, "telemetry", "open_count") == total
        (row,) = query(settings, 'SELECT count(distinct("open_count")) FROM telemetry')
        assert row["count"] == total
        spooled = service.supervisor.registry.get_sample_value(
            "mingliang_ingest_points_spooled_total"
        )
        assert spooled == total


def test_influx_hanging_is_treated_like_down_and_nothing_is_lost(
    tmp_path: Path, own_broker: Mosquitto, own_influxd: Influxd, registry: Registry
) -> None:
    broker = own_broker
    settings = make_settings(
        tmp_path / "data",
        broker,
        own_influxd,
        influx={"timeout_s": 1.0},
        spool={"retry_initial_s": 0.2, "retry_max_s": 1.0},
    )
    topics = door_topics(registry)
    base_ms = time.time_ns() // 1_000_000 - 60_000
    with IngestService(settings, registry) as service:
        assert service.wait_connected(15)
        wait_until(lambda: service.health().influx_up, 15, "InfluxDB up")
        own_influxd.send_signal(signal.SIGSTOP)  # accepts connections, never answers
        try:
            device = Publisher(broker)
            device.publish_many(
                (topics[i % len(topics)], {"ts": base_ms + i, "values": {"open_count": i}})
                for i in range(500)
            )
            device.close()
            wait_until(lambda: service.health().spool_points == 500, 30, "500 points spooled")
            assert not service.health().influx_up
        finally:
            own_influxd.send_signal(signal.SIGCONT)
        wait_until(lambda: service.health().spool_points == 0, 60, "the spool to drain")
        assert count(settings, "telemetry", "open_count") == 500


def _start_ingest(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_ingest_killed_mid_stream_and_restarted_loses_nothing(
    tmp_path: Path, broker: Mosquitto, influxd: Influxd, registry: Registry
) -> None:
    settings = make_settings(tmp_path / "data", broker, influxd)
    api_port = free_port()
    env = {
        **os.environ,
        "MINGLIANG_MQTT__HOST": broker.host,
        "MINGLIANG_MQTT__PORT": str(broker.port),
        "MINGLIANG_MQTT__CLIENT_ID": settings.mqtt.client_id,
        "MINGLIANG_INFLUX__URL": influxd.url,
        "MINGLIANG_INFLUX__DATABASE": settings.influx.database,
        "MINGLIANG_PATHS__DATA_DIR": str(settings.data_dir),
        "MINGLIANG_API__PORT": str(api_port),
    }
    healthz = f"http://127.0.0.1:{api_port}/healthz"

    def healthy() -> bool:
        try:
            return httpx.get(healthz, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    log = tmp_path / "ingest.log"
    proc = _start_ingest(env, log)
    try:
        wait_until(healthy, 30, "ingest to come up")
        topics = door_topics(registry)
        total = 20_000
        base_ms = time.time_ns() // 1_000_000 - 60_000
        device = Publisher(broker)
        publishing = threading.Thread(
            target=lambda: device.publish_many(
                (topics[i % len(topics)], {"ts": base_ms + i, "values": {"open_count": i}})
                for i in range(total)
            )
        )
        publishing.start()
        wait_until(
            lambda: count(settings, "telemetry", "open_count") >= total // 5, 60, "a fifth stored"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = count(settings, "telemetry", "open_count")
        assert killed_at < total, "the kill came too late to be mid-stream"
        proc = _start_ingest(env, log)
        publishing.join(120)
        device.close()
        wait_until(
            lambda: count(settings, "telemetry", "open_count") == total, 120, "every message"
        )
        (row,) = query(settings, 'SELECT count(distinct("open_count")) FROM telemetry')
        assert row["count"] == total
    finally:
        proc.terminate()
        proc.wait(30)
