"""The audit trail read back through GET /api/v1/audit, against the real service: an alert's
life, tokens made and revoked on the command line, console sign-in and sign-out.

Every test runs twice: with the default SQLite store and with PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.store import now_ms
from config.settings import Settings
from devices.audit import cli_actor
from devices.registry import Registry
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto
from tests.support import (
    Publisher,
    bearer,
    make_settings,
    make_token,
    run_module,
    serve,
    wait_until,
)

SITE = "kitchen-0051"
DAY_MS = 86_400_000


@pytest.fixture
def settings(tmp_path: Path, broker: Mosquitto, influxd: Influxd, store_url: str) -> Settings:
    return make_settings(tmp_path / "data", broker, influxd, alerts={"store_url": store_url})


@pytest.fixture
def admin(settings: Settings, registry: Registry) -> Iterator[httpx.Client]:
    with serve(create_app(settings, registry), make_token(settings)) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, 15, "ingest up")
        yield client


def trail(admin: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = admin.get("/api/v1/audit", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_the_life_of_an_alert_is_in_the_trail(
    admin: httpx.Client, settings: Settings, broker: Mosquitto
) -> None:
    start = now_ms()
    device = Publisher(broker)
    device.publish(f"v1/sites/{SITE}/devices/{SITE}-cam-1/events", {"kind": "no_hat"})
    device.close()

    def raised() -> int | None:
        items = admin.get("/api/v1/alerts", params={"site": SITE}).json()["items"]
        return items[0]["id"] if items else None

    alert_id = wait_until(raised, 15, "the camera's alert")
    supervisor = make_token(settings, "supervisor", frozenset({SITE}))
    with httpx.Client(
        base_url=admin.base_url,
        timeout=30,
        headers={**bearer(supervisor), "X-Forwarded-For": "10.20.30.40"},
    ) as desk:
        url = f"/api/v1/alerts/{alert_id}"
        acknowledged = desk.post(f"{url}/acknowledge", json={"note": "calling the kitchen"})
        assert acknowledged.status_code == 200, acknowledged.text
        name = acknowledged.json()["actor"]
        assert desk.post(f"{url}/comments", json={"text": "hat on now"}).status_code == 200
        assert desk.post(f"{url}/resolve").status_code == 200
        # Only administrators read the trail.
        refused = desk.get("/api/v1/audit")
        assert refused.status_code == 403 and "not an administrator" in refused.json()["detail"]
    end = now_ms()

    life = trail(admin, target_kind="alert", target_id=str(alert_id))
    assert [(e["action"], e["actor"], e["source"]) for e in life] == [
        ("alert.resolved", name, "10.20.30.40"),
        ("alert.commented", name, "10.20.30.40"),
        ("alert.acknowledged", name, "10.20.30.40"),
        ("alert.created", "rule:event.no_hat", "rules"),
    ]
    assert all(e["site_id"] == SITE and e["target_kind"] == "alert" for e in life)
    times = [e["at_ms"] for e in life]
    assert start <= min(times) and max(times) <= end and times == sorted(times, reverse=True)
    history = admin.get(f"/api/v1/alerts/{alert_id}/history").json()
    assert [e["details"]["seq"] for e in reversed(life)] == [c["seq"] for c in history]
    assert life[0]["details"]["status"] == "resolved" and life[0]["details"]["kind"] == "no_hat"

    # The filters an administrator asks with, and pages.
    assert trail(admin, actor=name, site_id=SITE) == life[:3]
    assert trail(admin, action="alert.commented", target_id=str(alert_id)) == [life[1]]
    moment = life[1]["at_ms"]
    since = trail(admin, target_id=str(alert_id), since_ms=moment)
    until = trail(admin, target_id=str(alert_id), until_ms=moment)
    assert since == [e for e in life if e["at_ms"] >= moment] and life[1] in since
    assert until == [e for e in life if e["at_ms"] < moment] and life[3] in until
    first = admin.get("/api/v1/audit", params={"target_id": str(alert_id), "limit": 3}).json()
    assert first["items"] == life[:3] and first["next_cursor"]
    rest = admin.get(
        "/api/v1/audit",
        params={"target_id": str(alert_id), "limit": 3, "cursor": first["next_cursor"]},
    ).json()
    assert rest == {"items": life[3:], "next_cursor": None}
    assert admin.get("/api/v1/audit", params={"cursor": "nonsense"}).status_code == 422
    assert admin.get("/api/v1/audit", params={"limit": 501}).status_code == 422
    assert admin.get("/api/v1/audit", params={"actor": "wang\x00"}).status_code == 422
    anonymous = httpx.get(f"{admin.base_url}/api/v1/audit")
    assert anonymous.status_code == 401


def tokens_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MINGLIANG_PATHS__DATA_DIR": str(settings.data_dir),
        "MINGLIANG_ALERTS__STORE_URL": settings.alert_store_url,
    }
    done = run_module("api", "tokens", *args, env=env)
    assert done.returncode == 0, done.stderr
    return done


def test_tokens_made_and_revoked_on_the_command_line_are_in_the_trail(
    admin: httpx.Client, settings: Settings
) -> None:
    start = now_ms()
    made = tokens_cli(
        settings, "create", "--name", "wang.li", "--role", "supervisor",
        "--sites", "kitchen-0001,kitchen-0002", "--expires-in", "30d",
    )  # fmt: skip
    secret = made.stdout.splitlines()[-1]
    tokens_cli(settings, "revoke", "wang.li")
    camera = tokens_cli(settings, "camera", "kitchen-0001-cam-1").stdout.splitlines()[-1]
    tokens_cli(settings, "revoke-camera", "kitchen-0001-cam-1")
    end = now_ms()

    me = cli_actor()  # the tests run the command line as themselves, on this host
    token_trail = trail(admin, target_kind="token", target_id="wang.li")
    assert [(e["action"], e["actor"], e["source"]) for e in token_trail] == [
        ("token.revoked", me, me),
        ("token.created", me, me),
    ]
    created = token_trail[1]
    assert start <= created["at_ms"] <= token_trail[0]["at_ms"] <= end
    details = created["details"]
    assert (details["role"], details["sites"]) == ("supervisor", ["kitchen-0001", "kitchen-0002"])
    assert start + 30 * DAY_MS <= details["expires_ms"] <= end + 30 * DAY_MS
    assert token_trail[0]["details"] == {"token_id": details["token_id"]}

    cameras = trail(admin, target_kind="camera_token")
    assert [(e["action"], e["target_id"], e["site_id"]) for e in cameras] == [
        ("camera_token.revoked", "kitchen-0001-cam-1", "kitchen-0001"),
        ("camera_token.created", "kitchen-0001-cam-1", "kitchen-0001"),
    ]
    everything = admin.get("/api/v1/audit").text
    assert secret not in everything and camera not in everything


def test_signing_in_and_out_is_in_the_trail(admin: httpx.Client, settings: Settings) -> None:
    token = make_token(settings, "viewer", frozenset({SITE}))
    where = {"X-Forwarded-For": "10.9.9.9"}
    with httpx.Client(base_url=admin.base_url, timeout=30, headers=where) as browser:
        session = browser.post("/api/v1/session", json={"token": token}).json()
        out = browser.delete("/api/v1/session", headers={"X-CSRF-Token": session["csrf"]})
        assert out.status_code == 204
    sessions = trail(admin, target_kind="session", target_id=session["name"])
    assert [(e["action"], e["actor"], e["source"]) for e in sessions] == [
        ("session.closed", session["name"], "10.9.9.9"),
        ("session.opened", session["name"], "10.9.9.9"),
    ]
    assert sessions[1]["details"]["expires_ms"] == session["expires_ms"]
