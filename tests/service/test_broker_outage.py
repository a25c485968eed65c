"""A broker outage: no device looks silent because of it, and waiting for the broker is cheap."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Settings
from devices.registry import Registry
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto, free_port
from tests.support import Publisher, make_settings, make_token, serve, wait_until

ROOT = Path(__file__).resolve().parents[2]
FRIDGE = "kitchen-0008-fridge-1"
SILENT_S = 3


@pytest.fixture
def settings(tmp_path: Path, own_broker: Mosquitto, influxd: Influxd) -> Settings:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        (ROOT / "config" / "rules.toml").read_text()
        + f"\n[sites.kitchen-0008.fridge.silent]\nsilent_for_s = {SILENT_S}\n"
    )
    return make_settings(
        tmp_path / "data",
        own_broker,
        influxd,
        alerts={"rules": str(rules), "tick_s": 0.2},
        mqtt={"reconnect_max_s": 1.0},
    )


@pytest.fixture
def api(settings: Settings, registry: Registry) -> Iterator[httpx.Client]:
    with serve(create_app(settings, registry), make_token(settings)) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, 15, "ingest up")
        yield client


def offline(api: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        "/api/v1/alerts", params={"kind": "device_offline", "device": FRIDGE}
    ).json()["items"]
    return items


def test_no_offline_alerts_while_ingest_cannot_hear_and_silence_counts_after(
    api: httpx.Client, own_broker: Mosquitto
) -> None:
    device = Publisher(own_broker)
    device.publish(
        f"v1/sites/kitchen-0008/devices/{FRIDGE}/telemetry",
        {"ts": time.time_ns() // 1_000_000, "values": {"temp_c": 4.0}},
    )
    device.close()
    own_broker.stop()
    wait_until(lambda: api.get("/healthz").status_code == 503, 15, "ingest to notice")
    time.sleep(SILENT_S + 2)  # the outage itself: longer than the device's silence limit
    assert offline(api) == []

    restarted = time.time_ns() // 1_000_000
    own_broker.start()
    wait_until(lambda: api.get("/healthz").status_code == 200, 30, "ingest back")
    (alert,) = wait_until(lambda: offline(api), 15, "the still-silent device reported")
    assert alert["first_seen_ms"] >= restarted + SILENT_S * 1000


def cpu_seconds(pid: int) -> float:
    """User and system time of a process and of its children that have ended, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    found = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            for child in fh.read().split():
                found += process_tree(int(child))
    return found


def test_the_broker_down_for_a_minute_costs_the_service_little_cpu(
    tmp_path: Path, own_broker: Mosquitto, influxd: Influxd
) -> None:
    """Waiting for the broker is not work: the service (with its camera workers) uses under 5 %
    of one core while the broker is away for 60 s."""
    settings = make_settings(tmp_path / "data", own_broker, influxd, api={"port": free_port()})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
    env.update(
        {
            "MINGLIANG_MQTT__HOST": own_broker.host,
            "MINGLIANG_MQTT__PORT": str(own_broker.port),
            "MINGLIANG_MQTT__CLIENT_ID": settings.mqtt.client_id,
            "MINGLIANG_INFLUX__URL": settings.influx.url,
            "MINGLIANG_INFLUX__DATABASE": settings.influx.database,
            "MINGLIANG_API__PORT": str(settings.api.port),
            "MINGLIANG_PATHS__DATA_DIR": str(settings.data_dir),
        }
    )
    log = (tmp_path / "service.log").open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{settings.api.port}"

    def health() -> int:
        assert service.poll() is None, (tmp_path / "service.log").read_text()[-3000:]
        try:
            return httpx.get(f"{base}/healthz", timeout=5).status_code
        except httpx.HTTPError:
            return 0

    try:
        wait_until(lambda: health() == 200, 90, "the service to start")
        wait_until(lambda: len(process_tree(service.pid)) == 3, 60, "its two camera workers")
        own_broker.stop()
        wait_until(lambda: health() == 503, 30, "the service to notice the broker is gone")
        pids = process_tree(service.pid)
        before = sum(cpu_seconds(pid) for pid in pids)
        started = time.monotonic()
        time.sleep(60)  # the outage being measured
        used = sum(cpu_seconds(pid) for pid in pids) - before
        share = used / (time.monotonic() - started)
        print(f"CPU while the broker was away: {used:.2f} s in 60 s, {share:.1%} of one core")
        assert share < 0.05
        own_broker.start()
        wait_until(lambda: health() == 200, 60, "ingest back with the broker")
    finally:
        service.terminate()
        service.wait(30)
        log.close()
