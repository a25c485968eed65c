"""The HTTP API over a running ingest, against the real broker and InfluxDB."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from httpx import Client

from config.settings import Settings
from devices.registry import Registry
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto, free_port
from tests.support import Publisher, count, make_settings, make_token, serve, wait_until

FRIDGE = "kitchen-0001-fridge-1"


def fridge_topic(site: str) -> str:
    return f"v1/sites/{site}/devices/{site}-fridge-1/telemetry"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """This module counts every message ingest receives: no retained leftovers of others."""
    with Mosquitto(tmp_path_factory.mktemp("api-mosquitto")) as mosquitto:
        yield mosquitto


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto, influxd: Influxd
) -> Settings:
    return make_settings(tmp_path_factory.mktemp("api"), broker, influxd, api={"max_points": 50})


@pytest.fixture(scope="module")
def client(settings: Settings, registry: Registry, broker: Mosquitto) -> Iterator[Client]:
    with serve(create_app(settings, registry), make_token(settings)) as test_client:
        wait_until(
            lambda: test_client.get("/healthz").json().get("mqtt", {}).get("connected"),
            15,
            "ingest connected",
        )
        yield test_client


@pytest.fixture(scope="module")
def readings(client: Client, settings: Settings, broker: Mosquitto) -> int:
    """Two hours of fridge readings, one a minute, for kitchen 1; one recent reading for 2 and 3."""
    now_ms = time.time_ns() // 1_000_000
    start = now_ms - 2 * 3600_000
    device = Publisher(broker)
    device.publish(
        fridge_topic("kitchen-0001"),
        [{"ts": start + i * 60_000, "values": {"temp_c": float(i % 10)}} for i in range(120)],
    )
    device.publish(fridge_topic("kitchen-0002"), {"temp_c": 4.0})
    device.publish(fridge_topic("kitchen-0003"), {"temp_c": 5.0, "humidity_pct": 60})
    device.publish(fridge_topic("kitchen-0003"), b"{broken")
    device.close()
    wait_until(lambda: count(settings, "telemetry", "temp_c") == 122, 15, "readings stored")
    return start


def test_healthz_reports_a_working_pipeline(client: Client) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["mqtt"]["connected"] and body["influx"]["up"] and body["influx_reachable"]
    assert body["spool"] == {"points": 0, "bytes": 0}


def test_sites_show_which_kitchens_report(client: Client, readings: int) -> None:
    body = client.get("/api/v1/sites", params={"kind": "kitchen"}).json()
    assert body["count"] == 254 and body["reporting"] == 3
    by_id = {s["site_id"]: s for s in body["sites"]}
    assert by_id["kitchen-0002"]["reporting"] and by_id["kitchen-0002"]["last_seen_ms"]
    assert not by_id["kitchen-0100"]["reporting"] and by_id["kitchen-0100"]["last_seen_ms"] is None
    assert by_id["kitchen-0001"]["devices"] >= 9
    for site_id in ("kitchen-0002", "kitchen-0100"):  # one site alone: the same view
        assert client.get(f"/api/v1/sites/{site_id}").json() == by_id[site_id]
    missing = client.get("/api/v1/sites/kitchen-9999")
    assert missing.status_code == 404 and "kitchen-9999" in missing.json()["detail"]
    everything = client.get("/api/v1/sites").json()
    assert everything["count"] == 504
    assert client.get("/api/v1/sites", params={"kind": "moon"}).status_code == 422


def test_devices_of_a_site(client: Client, readings: int) -> None:
    body = client.get("/api/v1/devices", params={"site": "kitchen-0003"}).json()
    by_id = {d["device_id"]: d for d in body["devices"]}
    assert by_id["kitchen-0003-fridge-1"]["reporting"]
    assert not by_id["kitchen-0003-freezer-1"]["reporting"]
    assert body["reporting"] == 1
    cams = client.get("/api/v1/devices", params={"type": "street_camera"}).json()
    assert cams["count"] == 1500
    missing = client.get("/api/v1/devices", params={"site": "kitchen-9999"})
    assert missing.status_code == 404 and "kitchen-9999" in missing.json()["detail"]
    assert client.get("/api/v1/devices", params={"type": "toaster"}).status_code == 422


def test_raw_and_aggregated_telemetry(client: Client, readings: int) -> None:
    since = datetime.fromtimestamp(readings / 1000, UTC)
    url = f"/api/v1/devices/{FRIDGE}/telemetry"
    raw = client.get(
        url,
        params={
            "metric": "temp_c",
            "since": since.isoformat(),
            "until": (since + timedelta(minutes=10)).isoformat(),
        },
    ).json()
    assert raw["units"] == {"temp_c": "°C"}
    assert [p["temp_c"] for p in raw["points"]] == [float(i) for i in range(10)]
    assert raw["points"][0]["ts"] == since.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert not raw["truncated"]

    hourly = client.get(
        url,
        params={
            "metric": "temp_c",
            "since": since.isoformat(),
            "until": (since + timedelta(minutes=20)).isoformat(),
            "every": "10m",
        },
    ).json()
    values = [p["temp_c"] for p in hourly["points"]]
    assert len(values) in (2, 3) and all(0 <= v <= 9 for v in values)  # bucket edges vary

    capped = client.get(url, params={"since": since.isoformat()}).json()
    assert capped["truncated"] and len(capped["points"]) == 50
    assert set(capped["metrics"]) >= {"temp_c", "humidity_pct", "door_open"}


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"metric": "gas_lel_pct"}, 422, "not a metric of 'fridge'"),
        ({"since": "2026-11-26T10:00:00Z", "until": "2026-11-26T09:00:00Z"}, 422, "before until"),
        ({"since": "2026-11-26T10:00:00"}, 422, "no time zone"),
        ({"every": "5 minutes"}, 422, "pattern"),
        ({"every": "1s", "since": "2026-01-01T00:00:00Z"}, 422, "intervals"),
        ({"since": "yesterday"}, 422, "datetime"),
    ],
)
def test_telemetry_query_errors_are_clear(
    client: Client, params: dict[str, str], status: int, says: str
) -> None:
    response = client.get(f"/api/v1/devices/{FRIDGE}/telemetry", params=params)
    assert response.status_code == status
    assert says in response.text


def test_unknown_device_is_404(client: Client) -> None:
    response = client.get("/api/v1/devices/no-such-thing/telemetry")
    assert response.status_code == 404 and "no-such-thing" in response.json()["detail"]


def test_metrics_and_rejections(client: Client, readings: int) -> None:
    text = client.get("/metrics").text
    assert 'mingliang_ingest_messages_received_total{channel="telemetry"} 4.0' in text
    assert 'mingliang_ingest_rejected_total{reason="malformed_json"} 1.0' in text
    assert "mingliang_ingest_batch_write_seconds_bucket" in text
    assert 'mingliang_ingest_points_written_total{path="direct"} 122.0' in text
    body = client.get("/api/v1/ingest/rejections", params={"reason": "malformed_json"}).json()
    assert body["count"] == 1
    assert body["items"][0]["topic"] == fridge_topic("kitchen-0003")
    assert body["items"][0]["payload"] == "{broken"


def test_unreachable_influx_answers_503_with_a_reason(
    tmp_path: Path, broker: Mosquitto, influxd: Influxd, registry: Registry
) -> None:
    settings = make_settings(
        tmp_path, broker, influxd, influx={"url": f"http://127.0.0.1:{free_port()}"}
    )
    with serve(create_app(settings, registry, run_ingest=False), make_token(settings)) as api_only:
        response = api_only.get("/api/v1/sites")
        assert response.status_code == 503
        assert "time-series database is unavailable" in response.json()["detail"]
        assert api_only.get("/healthz").json()["status"] == "degraded"
