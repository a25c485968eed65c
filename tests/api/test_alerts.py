"""Alerts end to end: simulator or device -> MQTT -> ingest -> rules -> store -> API, SSE, MQTT.

Every test runs twice: with the default SQLite store and with PostgreSQL.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest

from config.settings import Settings, load_settings
from devices.registry import Registry
from service.mingliang import create_app
from simulators.fleet import Fleet
from simulators.local_services import Influxd, Mosquitto
from tests.support import (
    Publisher,
    SseReader,
    bearer,
    make_settings,
    make_token,
    serve,
    unique,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]

# Short durations for the sites these tests use; everything else keeps the default rule book.
OVERRIDES = """
[sites.kitchen-0007.fridge.too_warm]
for_s = 4
clear_for_s = 3
[sites.kitchen-0007.fridge.temp_jump]
enabled = false
[sites.kitchen-0008.fridge.silent]
silent_for_s = 3
[sites.kitchen-0013.fridge.too_warm]
for_s = 6
"""


@pytest.fixture
def settings(tmp_path: Path, broker: Mosquitto, influxd: Influxd, store_url: str) -> Settings:
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / "config" / "rules.toml").read_text() + OVERRIDES)
    return make_settings(
        tmp_path / "data",
        broker,
        influxd,
        alerts={"store_url": store_url, "rules": str(rules), "tick_s": 0.2},
    )


@pytest.fixture
def api(settings: Settings, registry: Registry) -> Iterator[httpx.Client]:
    with serve(create_app(settings, registry), make_token(settings)) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, 15, "ingest up")
        yield client


@pytest.fixture
def device(broker: Mosquitto) -> Iterator[Publisher]:
    publisher = Publisher(broker)
    yield publisher
    publisher.close()


def alerts(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/api/v1/alerts", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def ticks(api: httpx.Client) -> float:
    """How many clock ticks the alert engine has evaluated, from /metrics."""
    for line in api.get("/metrics").text.splitlines():
        if line.startswith("mingliang_alerts_rule_ticks_total "):
            return float(line.split()[1])
    raise AssertionError("no mingliang_alerts_rule_ticks_total in /metrics")


def event_topic(device_id: str) -> str:
    site = device_id.rsplit("-", 2)[0]
    return f"v1/sites/{site}/devices/{device_id}/events"


def telemetry_topic(device_id: str) -> str:
    site = device_id.rsplit("-", 2)[0]
    return f"v1/sites/{site}/devices/{device_id}/telemetry"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_fridge_warming_raises_one_alert_on_time_and_resolves_itself(
    api: httpx.Client, settings: Settings, registry: Registry, broker: Mosquitto
) -> None:
    fridge = "kitchen-0007-fridge-1"
    sim = load_settings(
        {},
        simulator={
            "speed": 120.0,
            "interval_s": 10.0,
            # 0.5 °C per simulated minute from ~3.5 °C: above 8 °C after ~9 simulated minutes.
            "faults": [f"fridge_warming:{fridge}@0s+15m"],
        },
    ).simulator
    with Fleet(registry, sim, broker.host, broker.port, sites=["kitchen-0007"], street=False):
        raised = wait_until(
            lambda: alerts(api, kind="cold_chain_temperature", device=fridge), 60, "the alert"
        )
        (alert,) = raised
        due_ms = alert["details"]["since_ms"] + 4000  # breach start + for_s
        assert alert["first_seen_ms"] == due_ms
        changes = api.get(f"/api/v1/alerts/{alert['id']}").json()
        assert changes["status"] == "open" and changes["rule"] == "fridge.too_warm"
        created = _change_times(settings, alert["id"])["created"]
        assert 0 <= created - due_ms <= 1000, "stored more than a second after the duration"

        resolved = wait_until(
            lambda: [
                a
                for a in alerts(api, kind="cold_chain_temperature", device=fridge)
                if a["status"] == "resolved"
            ],
            90,
            "the alert to resolve itself",
        )
    assert resolved[0]["resolution"] == "auto" and resolved[0]["id"] == alert["id"]
    assert len(alerts(api, kind="cold_chain_temperature", device=fridge)) == 1


def _change_times(settings: Settings, alert_id: int) -> dict[str, int]:
    from alerts.store import AlertStore

    store = AlertStore(settings.alert_store_url)
    try:
        return {
            c.action.value: c.at_ms
            for c in store.changes_since(0, None, 500)
            if c.alert_id == alert_id
        }
    finally:
        store.close()


def test_a_device_gone_silent_raises_offline_without_another_message(
    api: httpx.Client, device: Publisher
) -> None:
    fridge = "kitchen-0008-fridge-1"
    device.publish(telemetry_topic(fridge), {"ts": now_ms(), "values": {"temp_c": 4.0}})
    device.flush()
    sent_at = now_ms()
    (alert,) = wait_until(lambda: alerts(api, kind="device_offline", device=fridge), 15, "offline")
    assert alert["status"] == "open" and alert["rule"] == "fridge.silent"
    assert alert["first_seen_ms"] >= sent_at + 2000  # silent for 3 s after the one reading
    devices = api.get("/api/v1/devices", params={"site": "kitchen-0008"}).json()["devices"]
    assert not next(d for d in devices if d["device_id"] == fridge)["online"]

    device.publish(telemetry_topic(fridge), {"ts": now_ms(), "values": {"temp_c": 4.1}})
    device.flush()
    wait_until(
        lambda: alerts(api, kind="device_offline", device=fridge)[0]["status"] == "resolved",
        15,
        "back online",
    )


def test_fifty_concurrent_raises_leave_one_alert_counting_fifty(
    api: httpx.Client, broker: Mosquitto
) -> None:
    camera = "kitchen-0009-cam-1"
    publishers = [Publisher(broker) for _ in range(10)]
    start = threading.Barrier(len(publishers))

    def burst(publisher: Publisher) -> None:
        start.wait()
        for _ in range(5):
            publisher.publish(event_topic(camera), {"kind": "rodent", "evidence": ["snap.jpg"]})
        publisher.flush()

    threads = [threading.Thread(target=burst, args=(p,)) for p in publishers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for publisher in publishers:
        publisher.close()
    (alert,) = wait_until(
        lambda: [a for a in alerts(api, kind="rodent", device=camera) if a["count"] == 50],
        20,
        "one alert counting 50",
    )
    assert alert["severity"] == "critical" and alert["evidence"] == ["snap.jpg"]
    assert len(alerts(api, kind="rodent", device=camera)) == 1


def test_sse_client_receives_create_acknowledge_resolve_in_order(
    api: httpx.Client, device: Publisher, settings: Settings
) -> None:
    camera = "kitchen-0010-cam-1"
    stream_client = httpx.Client(base_url=api.base_url, headers=dict(api.headers), timeout=30)
    reader = SseReader(stream_client)
    try:
        device.publish(event_topic(camera), {"kind": "smoking", "details": {"zone": "hot kitchen"}})
        device.flush()
        (alert,) = wait_until(lambda: alerts(api, kind="smoking", device=camera), 15, "the alert")
        assert api.post(f"/api/v1/alerts/{alert['id']}/acknowledge").status_code == 200
        resolved = api.post(f"/api/v1/alerts/{alert['id']}/resolve", json={"note": "bin closed"})
        assert resolved.status_code == 200 and resolved.json()["alert"]["status"] == "resolved"
        wait_until(lambda: len(reader.of(alert["id"])) >= 3, 15, "three events")
        assert reader.of(alert["id"]) == ["created", "acknowledged", "resolved"]
        ids = [e["id"] for e in reader.events]
        assert ids == sorted(ids)
        last = reader.events[-1]
        assert last["actor"] and last["alert"]["resolved_by"] == last["actor"]
    finally:
        reader.close()
        stream_client.close()

    # A client that reconnects with Last-Event-ID gets what it missed, in order.
    first_id = next(e["id"] for e in reader.events if e["alert"]["id"] == alert["id"])
    resumed_client = httpx.Client(base_url=api.base_url, headers=dict(api.headers), timeout=30)
    resumed = SseReader(resumed_client, headers={"Last-Event-ID": str(first_id)})
    try:
        wait_until(lambda: len(resumed.of(alert["id"])) >= 2, 15, "the missed events")
        assert resumed.of(alert["id"])[:2] == ["acknowledged", "resolved"]
    finally:
        resumed.close()
        resumed_client.close()


def test_every_change_is_published_on_mqtt(
    api: httpx.Client, device: Publisher, broker: Mosquitto
) -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    subscribed = threading.Event()
    listener = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=unique("integration"))
    listener.on_connect = lambda c, *a: c.subscribe("v1/alerts/#", qos=1)
    listener.on_subscribe = lambda *a: subscribed.set()
    listener.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    listener.connect(broker.host, broker.port)
    listener.loop_start()
    try:
        assert subscribed.wait(10)
        camera = "kitchen-0014-cam-1"
        device.publish(event_topic(camera), {"kind": "bin_lid_open"})
        device.flush()
        (alert,) = wait_until(lambda: alerts(api, kind="bin_lid_open", device=camera), 15, "alert")
        api.post(f"/api/v1/alerts/{alert['id']}/acknowledge")
        mine = lambda: [p for t, p in got if p["alert"]["id"] == alert["id"]]  # noqa: E731
        wait_until(lambda: len(mine()) >= 2, 15, "two changes on MQTT")
        assert [p["action"] for p in mine()] == ["created", "acknowledged"]
        assert {t for t, p in got if p["alert"]["id"] == alert["id"]} == {
            "v1/alerts/kitchen-0014/bin_lid_open"
        }
    finally:
        listener.disconnect()
        listener.loop_stop()


def test_site_scoping_roles_and_clear_errors(
    api: httpx.Client, device: Publisher, settings: Settings
) -> None:
    mine, theirs = "kitchen-0011-cam-1", "kitchen-0012-cam-1"
    for camera in (mine, theirs):
        device.publish(event_topic(camera), {"kind": "no_hat"})
    device.flush()
    wait_until(lambda: len(alerts(api, kind="no_hat")) == 2, 15, "two alerts")
    other = alerts(api, kind="no_hat", device=theirs)[0]["id"]
    own = alerts(api, kind="no_hat", device=mine)[0]["id"]

    supervisor = bearer(make_token(settings, "supervisor", frozenset({"kitchen-0011"})))
    forbidden = api.get(f"/api/v1/alerts/{other}", headers=supervisor)
    assert forbidden.status_code == 403 and "kitchen-0012" in forbidden.json()["detail"]
    assert api.post(f"/api/v1/alerts/{other}/acknowledge", headers=supervisor).status_code == 403
    assert (
        api.get("/api/v1/alerts", params={"site": "kitchen-0012"}, headers=supervisor).status_code
        == 403
    )
    visible = api.get("/api/v1/alerts", params={"kind": "no_hat"}, headers=supervisor).json()
    assert [a["id"] for a in visible["items"]] == [own]
    assert api.post(f"/api/v1/alerts/{own}/acknowledge", headers=supervisor).status_code == 200
    # The counts are scoped too: acknowledged is still unresolved.
    counted = api.get("/api/v1/alerts/summary", headers=supervisor).json()
    assert counted["total"] == 1 and counted["by_site"] == {"kitchen-0011": 1}
    assert counted["by_severity"] == {"critical": 0, "major": 0, "minor": 0, "warning": 1}
    assert api.get("/api/v1/alerts/summary").json()["total"] == 2
    assert api.get(f"/api/v1/alerts/{other}/history", headers=supervisor).status_code == 403
    sites = api.get("/api/v1/sites", headers=supervisor).json()
    assert [s["site_id"] for s in sites["sites"]] == ["kitchen-0011"]

    viewer = bearer(make_token(settings, "viewer", frozenset({"kitchen-0011"})))
    assert api.get(f"/api/v1/alerts/{own}", headers=viewer).status_code == 200
    refused = api.post(f"/api/v1/alerts/{own}/resolve", headers=viewer)
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]

    anonymous = httpx.get(f"{api.base_url}/api/v1/alerts")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith(
        "Bearer"
    )
    wrong = httpx.get(f"{api.base_url}/api/v1/alerts", headers=bearer("mlt_not-a-token"))
    assert wrong.status_code == 401 and "unknown" in wrong.json()["detail"]


def test_invalid_transitions_answer_409_and_bad_filters_422(
    api: httpx.Client, device: Publisher
) -> None:
    camera = "kitchen-0015-cam-1"
    device.publish(event_topic(camera), {"kind": "phone_use"})
    device.flush()
    (alert,) = wait_until(lambda: alerts(api, kind="phone_use", device=camera), 15, "alert")
    url = f"/api/v1/alerts/{alert['id']}"
    assert api.post(f"{url}/acknowledge").status_code == 200
    again = api.post(f"{url}/acknowledge")
    assert again.status_code == 409 and "already acknowledged" in again.json()["detail"]
    not_a_case = api.post(f"{url}/case/dispatch")
    assert not_a_case.status_code == 409 and "not a street case" in not_a_case.json()["detail"]
    assert api.post(f"{url}/assign", json={"assignee": "wang.li"}).json()["alert"]["assignee"] == (
        "wang.li"
    )
    assert api.post(f"{url}/comments", json={"text": "called the manager"}).status_code == 200
    detail = api.get(url).json()
    assert [c["text"] for c in detail["comments"]] == ["called the manager"]
    # JSON can carry a lone surrogate, which no database or answer can: a clear 422, not a 500.
    json_body = {"Content-Type": "application/json"}
    lone = api.post(f"{url}/comments", content=b'{"text": "\\ud800"}', headers=json_body)
    assert lone.status_code == 422 and lone.json()["detail"][0]["type"] == "string_unicode"
    echoed = api.post(f"{url}/comments", content=b'{"txt": "\\ud800"}', headers=json_body)
    assert echoed.status_code == 422 and "ud800" not in echoed.text, echoed.text
    # PostgreSQL refuses NUL in text: refused here by name, never a 500 from the database.
    for field, body in (("text", {"text": "a\x00b"}), ("note", {"note": "\x00"})):
        path = "comments" if field == "text" else "resolve"
        nul = api.post(f"{url}/{path}", json=body)
        assert nul.status_code == 422 and nul.json()["detail"][0]["loc"][-1] == field, nul.text
    assert [c["text"] for c in api.get(url).json()["comments"]] == ["called the manager"]
    for params in (
        {"device": "\x00\u00d5"},
        {"site": "kitchen\x00"},
        {"kind": "\x00"},
        {"cursor": "\x00"},
        {"kind": "unicorn"},
        {"status": "sleeping"},
        {"cursor": "garbage"},
        {"limit": 0},
    ):
        assert api.get("/api/v1/alerts", params=params).status_code == 422, params
    assert api.get("/api/v1/alerts/999999999").status_code == 404


def test_street_case_flow(api: httpx.Client, device: Publisher) -> None:
    camera = "street-cam-00001"
    topic = "v1/sites/grid-0001/devices/street-cam-00001/events"
    device.publish(topic, {"kind": "street_vending", "evidence": ["snap/1.jpg"]})
    device.flush()
    (case,) = wait_until(lambda: alerts(api, kind="street_vending", device=camera), 15, "case")
    assert (case["status"], case["case_status"]) == ("open", "collected")
    assert case["actions"] == ["acknowledge", "file", "cancel"]
    url = f"/api/v1/alerts/{case['id']}"
    early = api.post(f"{url}/case/dispatch")
    assert early.status_code == 409 and "must be filed" in early.json()["detail"]
    assert api.post(f"{url}/resolve").status_code == 409
    for step, expected, offered in (
        ("file", "filed", ["dispatch", "cancel"]),
        ("dispatch", "dispatched", ["handle"]),
        ("handle", "handled", ["verify"]),
        ("verify", "verified", ["close"]),
        ("close", "closed", []),
    ):
        moved = api.post(f"{url}/case/{step}", json={"note": f"{step} done"})
        assert moved.status_code == 200, moved.text
        assert moved.json()["alert"]["case_status"] == expected
        assert moved.json()["alert"]["actions"] == offered
    assert api.get(url).json()["status"] == "resolved"
    history = api.get(f"{url}/history").json()
    assert [(h["action"], h["note"]) for h in history] == [
        ("created", None),
        ("filed", "file done"),
        ("dispatched", "dispatch done"),
        ("handled", "handle done"),
        ("verified", "verify done"),
        ("closed", "close done"),
    ]


def test_restart_halfway_through_a_duration_keeps_the_progress(
    settings: Settings, registry: Registry, device: Publisher
) -> None:
    fridge = "kitchen-0013-fridge-1"
    token = make_token(settings)

    def warm(until_ms: int) -> None:
        while now_ms() < until_ms:
            device.publish(telemetry_topic(fridge), {"ts": now_ms(), "values": {"temp_c": 11.0}})
            device.flush()
            time.sleep(0.25)  # one reading every quarter second, as a device would send

    with serve(create_app(settings, registry), token) as first:
        wait_until(lambda: first.get("/healthz").status_code == 200, 15, "ingest up")
        start = now_ms()  # the first reading's time: the service's start-up is not counted
        warm(start + 3000)  # half of the 6 s
    with serve(create_app(settings, registry), token) as second:
        wait_until(lambda: second.get("/healthz").status_code == 200, 15, "ingest up again")
        warm(start + 5000)
        (alert,) = wait_until(
            lambda: alerts(second, kind="cold_chain_temperature", device=fridge), 15, "the alert"
        )
    since = alert["details"]["since_ms"]
    assert start <= since <= start + 500, "the breach start was lost in the restart"
    assert alert["first_seen_ms"] == since + 6000
    assert _change_times(settings, alert["id"])["created"] - (since + 6000) <= 1000


def test_open_alert_counts_reach_influx(
    api: httpx.Client, device: Publisher, settings: Settings
) -> None:
    from tests.support import query

    camera = "kitchen-0016-cam-1"
    device.publish(event_topic(camera), {"kind": "cat_dog"})
    device.flush()
    wait_until(lambda: alerts(api, kind="cat_dog"), 15, "alert")

    def counted() -> list[dict[str, Any]]:
        return query(
            settings,
            "SELECT last(count) AS count FROM alerts_open WHERE kind = 'cat_dog' "
            "AND site_id = 'kitchen-0016'",
        )

    rows: Callable[[], list[dict[str, Any]]] = counted
    (row,) = wait_until(rows, 30, "the open count in InfluxDB")
    assert row["count"] == 1


def test_a_backlog_of_old_readings_after_a_restart_raises_no_offline_storm(
    api: httpx.Client, device: Publisher
) -> None:
    # What a broker delivers to an ingest that was down: readings from a while ago.
    old = now_ms() - 15 * 60_000
    fridges = [f"kitchen-{n:04d}-fridge-1" for n in range(30, 40)]
    for fridge in fridges:
        device.publish(telemetry_topic(fridge), {"ts": old, "values": {"temp_c": 4.0}})
    device.flush()
    # Rules see records in order: once an alert raised after them exists, they were evaluated.
    camera = "kitchen-0030-cam-1"
    device.publish(event_topic(camera), {"kind": "no_mask"})
    device.flush()
    wait_until(lambda: alerts(api, kind="no_mask", device=camera), 15, "a marker alert")
    # An offline storm would come from the clock ticks after that: wait for two of them.
    seen = ticks(api)
    wait_until(lambda: ticks(api) >= seen + 2, 15, "two rule ticks")
    offline = alerts(api, kind="device_offline")
    assert [a["device_id"] for a in offline if a["device_id"] in fridges] == []
