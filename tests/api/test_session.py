"""Console sessions over HTTP: sign in with a token, then work by cookie with the CSRF header,
against the real service (broker, InfluxDB, alert store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts.store import AlertStore
from alerts.store.db import now_ms
from config.settings import Settings
from devices.registry import Registry
from devices.sessions import OpenedSession, SessionStore
from devices.tokens import TokenStore
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto
from tests.support import (
    ManualClock,
    Publisher,
    make_camera_token,
    make_settings,
    make_token,
    serve,
    wait_until,
)

COOKIE = "mingliang_session"
CSRF = "X-CSRF-Token"
MINE, THEIRS = "kitchen-0031", "kitchen-0032"


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto, influxd: Influxd
) -> Settings:
    return make_settings(tmp_path_factory.mktemp("session"), broker, influxd)


@pytest.fixture(scope="module")
def admin(settings: Settings, registry: Registry) -> Iterator[httpx.Client]:
    """An administrator by bearer token, for setting things up and checking them."""
    with serve(create_app(settings, registry), make_token(settings)) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, 15, "ingest up")
        yield client


@pytest.fixture(scope="module")
def alert_ids(admin: httpx.Client, broker: Mosquitto) -> dict[str, int]:
    """One open alert at each of two kitchens, raised by their cameras over MQTT."""
    device = Publisher(broker)
    for site in (MINE, THEIRS):
        device.publish(f"v1/sites/{site}/devices/{site}-cam-1/events", {"kind": "no_hat"})
    device.close()

    def raised() -> dict[str, int]:
        items = admin.get("/api/v1/alerts", params={"kind": "no_hat"}).json()["items"]
        return {a["site_id"]: a["id"] for a in items} if len(items) == 2 else {}

    return wait_until(raised, 15, "an alert at each kitchen")


@pytest.fixture
def browser(admin: httpx.Client) -> Iterator[httpx.Client]:
    """A client with no token of its own: it keeps cookies, as a browser does."""
    with httpx.Client(base_url=admin.base_url, timeout=30) as client:
        yield client


def sign_in(browser: httpx.Client, token: str) -> dict[str, Any]:
    response = browser.post("/api/v1/session", json={"token": token})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def with_cookie(admin: httpx.Client, secret: str) -> httpx.Client:
    """Another browser that holds only this cookie value."""
    return httpx.Client(
        base_url=admin.base_url, timeout=30, headers={"Cookie": f"{COOKIE}={secret}"}
    )


def test_sign_in_sets_an_http_only_strict_cookie_and_says_who(
    browser: httpx.Client, settings: Settings
) -> None:
    token = make_token(settings, "supervisor", frozenset({MINE, THEIRS}))
    response = browser.post("/api/v1/session", json={"token": token})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"name", "role", "sites", "csrf", "expires_ms"}
    assert body["role"] == "supervisor" and body["sites"] == [MINE, THEIRS]
    assert body["name"].startswith("supervisor") and len(body["csrf"]) >= 43
    assert response.headers["cache-control"] == "no-store"

    cookie = response.headers["set-cookie"]
    name_value, *attributes = [part.strip() for part in cookie.split(";")]
    name, _, secret = name_value.partition("=")
    assert name == COOKIE and secret.startswith("mls_")
    assert token not in cookie
    flags = {a.split("=")[0].lower(): a.partition("=")[2].lower() for a in attributes}
    assert "httponly" in flags and flags["samesite"] == "strict" and flags["path"] == "/"
    assert flags["max-age"] == str(settings.console.session_ttl_s)
    assert "secure" not in flags  # console.secure_cookie is off by default (plain HTTP here)

    # After a reload the page asks who it is: the same answer, from the cookie alone.
    again = browser.get("/api/v1/session")
    assert again.status_code == 200 and again.json() == body


def test_wrong_tokens_and_bodies_are_refused_with_a_reason(
    browser: httpx.Client, settings: Settings
) -> None:
    revoked = make_token(settings, "viewer", frozenset({MINE}))
    store = AlertStore(settings.alert_store_url)
    try:
        TokenStore(store.engine).revoke(_name_of(store, revoked))
    finally:
        store.close()
    for token in ("mlt_not-a-token", revoked, "nonsense"):
        refused = browser.post("/api/v1/session", json={"token": token})
        assert refused.status_code == 401, token
        assert refused.json()["detail"] == "unknown or revoked token"
        assert "set-cookie" not in refused.headers
    camera = browser.post(
        "/api/v1/session", json={"token": make_camera_token(settings, f"{MINE}-cam-1")}
    )
    assert camera.status_code == 401 and "camera token" in camera.json()["detail"]

    for body in ({}, {"token": ""}, {"token": 42}, {"token": "mlt_x", "extra": 1}):
        assert browser.post("/api/v1/session", json=body).status_code == 422, body
    # Not JSON, not UTF-8, a lone surrogate: 422, and the answer never echoes what was sent.
    for raw in (
        b"{broken",
        b"\x9e\xb4\x02",
        b'{"token": "mlt_\\ud800"}',
        b'{"token": "mlt_' + b"z" * 250 + b'"}',
    ):
        bad = browser.post("/api/v1/session", content=raw, headers=_json())
        assert bad.status_code == 422, raw
        assert all("input" not in error for error in bad.json()["detail"]), bad.text
    form = browser.post("/api/v1/session", data={"token": "mlt_x"})
    assert form.status_code == 415 and "application/json" in form.json()["detail"]
    huge = browser.post("/api/v1/session", json={"token": "mlt_" + "x" * 5000})
    assert huge.status_code == 413

    nobody = browser.get("/api/v1/session")
    assert nobody.status_code == 401 and "sign in" in nobody.json()["detail"]
    missing = browser.get("/api/v1/alerts")
    assert missing.status_code == 401 and "missing token" in missing.json()["detail"]


def test_the_cookie_sees_and_acts_exactly_as_its_token(
    admin: httpx.Client, browser: httpx.Client, settings: Settings, alert_ids: dict[str, int]
) -> None:
    token = make_token(settings, "supervisor", frozenset({MINE}))
    session = sign_in(browser, token)
    assert browser.cookies.get(COOKIE)

    listed = browser.get("/api/v1/alerts", params={"kind": "no_hat"})
    assert listed.status_code == 200
    assert [a["id"] for a in listed.json()["items"]] == [alert_ids[MINE]]
    theirs = browser.get("/api/v1/alerts", params={"site": THEIRS})
    assert theirs.status_code == 403 and THEIRS in theirs.json()["detail"]
    assert browser.get(f"/api/v1/alerts/{alert_ids[THEIRS]}").status_code == 403

    # A change by cookie needs the CSRF header, right.
    url = f"/api/v1/alerts/{alert_ids[MINE]}/acknowledge"
    bare = browser.post(url)
    assert bare.status_code == 403 and "CSRF" in bare.json()["detail"]
    assert browser.post(url, headers={CSRF: "guess"}).status_code == 403
    assert admin.get(f"/api/v1/alerts/{alert_ids[MINE]}").json()["status"] == "open"
    done = browser.post(url, headers={CSRF: session["csrf"]}, json={"note": "hat on"})
    assert done.status_code == 200, done.text
    assert done.json()["actor"] == session["name"]
    # The header does not widen what the token may do.
    other = f"/api/v1/alerts/{alert_ids[THEIRS]}/acknowledge"
    assert browser.post(other, headers={CSRF: session["csrf"]}).status_code == 403

    # With an Authorization header the header alone counts: no CSRF, the token's own rights.
    both = browser.get("/api/v1/alerts", headers={"Authorization": "Bearer mlt_not-a-token"})
    assert both.status_code == 401 and both.json()["detail"] == "unknown or revoked token"


def test_cameras_and_evidence_by_cookie_need_no_csrf(
    browser: httpx.Client, settings: Settings, alert_ids: dict[str, int]
) -> None:
    sign_in(browser, make_token(settings, "viewer", frozenset({MINE})))
    cameras = browser.get("/api/v1/cameras")
    assert cameras.status_code == 200
    assert {c["site_id"] for c in cameras.json()} == {MINE}
    assert browser.get("/api/v1/cameras", params={"site": THEIRS}).status_code == 403
    # This alert names no evidence: 404 says so, after the cookie was accepted (not 401/403).
    evidence = browser.get(f"/api/v1/alerts/{alert_ids[MINE]}/evidence/0")
    assert evidence.status_code == 404 and "0 evidence" in evidence.json()["detail"]


def test_sign_out_ends_the_session(
    admin: httpx.Client, browser: httpx.Client, settings: Settings
) -> None:
    session = sign_in(browser, make_token(settings, "viewer", frozenset({MINE})))
    secret = browser.cookies[COOKIE]
    refused = browser.delete("/api/v1/session")
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert browser.get("/api/v1/session").status_code == 200  # still signed in

    out = browser.delete("/api/v1/session", headers={CSRF: session["csrf"]})
    assert out.status_code == 204
    cleared = out.headers["set-cookie"].lower()
    assert cleared.startswith(f"{COOKIE}=") and "max-age=0" in cleared
    assert not browser.cookies.get(COOKIE)

    # The old cookie, kept by someone, no longer works.
    with with_cookie(admin, secret) as stale:
        ended = stale.get("/api/v1/alerts")
        assert ended.status_code == 401 and "sign in again" in ended.json()["detail"]
        assert stale.get("/api/v1/session").status_code == 401
        # Signing out again ends nothing and still answers 204.
        assert stale.delete("/api/v1/session").status_code == 204


def test_revoking_the_token_ends_its_sessions(
    admin: httpx.Client, browser: httpx.Client, settings: Settings
) -> None:
    token = make_token(settings, "supervisor", frozenset({MINE}))
    session = sign_in(browser, token)
    assert browser.get("/api/v1/alerts").status_code == 200
    # GET /session answers for a cookie only: a bearer token alone has no session.
    assert admin.get("/api/v1/session").status_code == 401
    store = AlertStore(settings.alert_store_url)
    try:
        assert TokenStore(store.engine).revoke(session["name"])
    finally:
        store.close()
    gone = browser.get("/api/v1/alerts")
    assert gone.status_code == 401 and "sign in again" in gone.json()["detail"]
    assert browser.get("/api/v1/session").status_code == 401


def test_an_expired_session_is_401(admin: httpx.Client, settings: Settings) -> None:
    token = make_token(settings, "admin")
    # A session opened two hours ago for one minute, by a store whose clock says so.
    clock = ManualClock(now_ms() - 2 * 3600_000)
    store = AlertStore(settings.alert_store_url)
    try:
        opened = SessionStore(store.engine, clock=clock).open(token, 60)
    finally:
        store.close()
    assert isinstance(opened, OpenedSession)
    with with_cookie(admin, opened.secret) as stale:
        expired = stale.get("/api/v1/alerts")
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_with_auth_off_the_console_is_the_anonymous_admin(
    tmp_path: Path, broker: Mosquitto, influxd: Influxd, registry: Registry
) -> None:
    settings = make_settings(tmp_path, broker, influxd, auth={"enabled": False})
    with serve(create_app(settings, registry, run_ingest=False)) as client:
        signed = client.post("/api/v1/session", json={"token": "anything"})
        assert signed.status_code == 200 and "set-cookie" not in signed.headers
        body = signed.json()
        assert (body["name"], body["role"], body["sites"]) == ("anonymous", "admin", None)
        current = client.get("/api/v1/session").json()
        assert (current["name"], current["role"]) == ("anonymous", "admin")
        assert client.post("/api/v1/session", json={}).status_code == 422


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


def _name_of(store: AlertStore, token: str) -> str:
    principal = TokenStore(store.engine).verify(token)
    assert principal is not None
    return principal.name
