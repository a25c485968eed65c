"""A broker outage must not make every device look silent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from config.settings import Settings
from devices.registry import Registry
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto
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
