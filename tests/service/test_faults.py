"""Faults of the parts around the service, on real servers: the alert database going away while
telemetry flows, and a rule that raises. Ingest must keep storing and acknowledging, the health
endpoints must say what is down, and nothing the devices said may be lost."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from analytics.rules.checks import ThresholdCheck
from config.settings import Settings
from devices.registry import Registry
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto, Postgres
from tests.pg import postgres_server, temporary_database
from tests.support import Publisher, count, make_settings, make_token, serve, wait_until

CAMERAS = ["kitchen-0003-cam-1", "kitchen-0004-cam-1", "kitchen-0005-cam-1"]
FRIDGE = "kitchen-0003-fridge-1"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def metric(api: httpx.Client, name: str, **labels: str) -> float:
    """A sample of /metrics, 0 if absent."""
    wanted = name + (
        "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    )
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def loops(api: httpx.Client, path: str = "/healthz") -> dict[str, Any]:
    found: dict[str, Any] = api.get(path).json()["loops"]
    return found


class SseReader:
    """An SSE client on a thread: the events it has received so far."""

    def __init__(self, base_url: str, token: str) -> None:
        self.events: list[str] = []
        self._stop = threading.Event()
        self._client = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=None
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._connected = threading.Event()

    def __enter__(self) -> SseReader:
        self._thread.start()
        assert self._connected.wait(30), "the SSE stream did not open"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._client.close()
        self._thread.join(30)

    def _read(self) -> None:
        with (
            contextlib.suppress(httpx.HTTPError, RuntimeError),
            self._client.stream("GET", "/api/v1/alerts/stream") as response,
        ):
            assert response.status_code == 200
            self._connected.set()
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("data: "):
                    self.events.append(line)


def publish_during_outage(device: Publisher, readings: int) -> None:
    """Telemetry of a whole kitchen, and a rodent seen by each of three cameras."""
    base = now_ms() - readings
    for i in range(readings):
        device.publish(
            f"v1/sites/kitchen-0003/devices/{FRIDGE}/telemetry",
            {"ts": base + i, "values": {"temp_c": 3.0 + (i % 10) / 10}},
        )
    for camera in CAMERAS:
        site = camera.rsplit("-cam", 1)[0]
        device.publish(
            f"v1/sites/{site}/devices/{camera}/events",
            {"kind": "rodent", "details": {"zone": "floor"}},
        )
    device.flush()


def sqlite_locked(path: Path) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """Another process's long write transaction on the alert store's SQLite file."""

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    return locked


def postgres_stopped(server: Postgres) -> Callable[[], contextlib.AbstractContextManager[None]]:
    @contextlib.contextmanager
    def stopped() -> Iterator[None]:
        server.stop()
        try:
            yield
        finally:
            server.start()

    return stopped


@pytest.fixture(params=["postgresql-stopped", "sqlite-locked"])
def outage(
    request: pytest.FixtureRequest, tmp_path: Path, broker: Mosquitto, influxd: Influxd
) -> Iterator[tuple[Settings, Callable[[], contextlib.AbstractContextManager[None]]]]:
    """Settings on an alert store of the test's own, and how to take it away."""
    common: dict[str, Any] = {
        "tick_s": 0.2,
        "busy_timeout_s": 1.0,
        "queue_max": 100,  # records: a stalled engine would stop ingest within one batch
    }
    if request.param == "sqlite-locked":
        settings = make_settings(tmp_path / "data", broker, influxd, alerts=common)
        yield settings, sqlite_locked(settings.data_dir / "alerts.db")
        return
    with postgres_server(tmp_path / "postgres") as server, temporary_database(server) as url:
        settings = make_settings(
            tmp_path / "data", broker, influxd, alerts={**common, "store_url": url}
        )
        yield settings, postgres_stopped(server)


def test_alert_database_outage_while_telemetry_flows(
    outage: tuple[Settings, Callable[[], contextlib.AbstractContextManager[None]]],
    registry: Registry,
    broker: Mosquitto,
) -> None:
    settings, take_away = outage
    token = make_token(settings)
    device = Publisher(broker)
    with serve(create_app(settings, registry), token) as api:
        wait_until(lambda: api.get("/readyz").status_code == 200, 30, "everything running")
        with SseReader(str(api.base_url), token) as sse:
            with take_away():
                publish_during_outage(device, 500)
                # Ingest goes on: everything stored, everything acknowledged.
                where = f"WHERE device_id = '{FRIDGE}'"
                wait_until(
                    lambda: count(settings, "telemetry", "temp_c", where) == 500, 60, "storing"
                )
                wait_until(
                    lambda: metric(api, "mingliang_ingest_messages_acked_total") >= 503,
                    60,
                    "every message acknowledged",
                )
                assert api.get("/healthz").json()["writer"]["pending_messages"] == 0
                # And the health endpoints say what is down, and why.
                store = wait_until(
                    lambda: (s := loops(api)["alert-store"])["state"] == "backoff" and s,
                    60,
                    "the alert store loop to be backing off",
                )
                health = api.get("/healthz")
                assert store["failures"] >= 1 and "Database" in store["last_error"]
                assert health.status_code == 200, health.text
                assert health.json()["status"] == "degraded", health.text
                ready = api.get("/readyz")
                assert ready.status_code == 503 and "alert-store" in ready.json()["down"]
                assert loops(api)["alert-rules"]["state"] == "running"
                assert metric(api, "mingliang_alerts_outbox_signals") >= len(CAMERAS)
                outage_ended = now_ms()
            # The alerts raised meanwhile appear, in the list and on the open SSE stream.
            wait_until(lambda: api.get("/readyz").status_code == 200, 90, "everything back")

            def rodents() -> list[dict[str, Any]]:
                items: list[dict[str, Any]] = api.get(
                    "/api/v1/alerts", params={"kind": "rodent", "limit": 50}
                ).json()["items"]
                return items

            found = wait_until(lambda: len(r := rodents()) == len(CAMERAS) and r, 60, "alerts")
            assert sorted(a["device_id"] for a in found) == CAMERAS
            assert all(a["first_seen_ms"] < outage_ended for a in found)
            wait_until(
                lambda: sum('"rodent"' in e and '"created"' in e for e in sse.events) == 3,
                60,
                "the created alerts on the stream that stayed open",
            )
    device.close()


def test_a_rule_that_raises_is_counted_and_the_others_go_on(
    tmp_path: Path,
    broker: Mosquitto,
    influxd: Influxd,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = ThresholdCheck.on_reading

    def broken(self: ThresholdCheck, *args: Any) -> None:
        if self.metric == "temp_c":
            raise ZeroDivisionError("a bug in a temperature rule")
        original(self, *args)

    monkeypatch.setattr(ThresholdCheck, "on_reading", broken)
    settings = make_settings(tmp_path / "data", broker, influxd, alerts={"tick_s": 0.2})
    device = Publisher(broker)
    with serve(create_app(settings, registry), make_token(settings)) as api:
        wait_until(lambda: api.get("/readyz").status_code == 200, 30, "everything running")
        for n in range(5):
            device.publish(
                "v1/sites/kitchen-0006/devices/kitchen-0006-fridge-1/telemetry",
                {"ts": now_ms() + n, "values": {"temp_c": 12.0}},
            )
        device.publish(
            "v1/sites/kitchen-0006/devices/kitchen-0006-gas-1/telemetry",
            {"ts": now_ms(), "values": {"gas_lel_pct": 40.0}},
        )
        device.flush()
        (gas,) = wait_until(
            lambda: api.get("/api/v1/alerts", params={"kind": "gas_leak"}).json()["items"],
            30,
            "the gas alarm, raised by a rule that works",
        )
        assert gas["device_id"] == "kitchen-0006-gas-1"
        errors = wait_until(
            lambda: metric(api, "mingliang_alerts_rule_errors_total", rule="fridge.too_warm"),
            30,
            "the broken rule's failures counted",
        )
        assert errors >= 5
        rules = loops(api)["alert-rules"]
        assert (rules["state"], rules["failures"]) == ("running", 0)
    device.close()
