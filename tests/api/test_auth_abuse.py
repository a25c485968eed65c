"""Authentication under abuse, over HTTP against the real service: wrong tokens, sign-ins,
session cookies and camera tokens from one address are slowed down and counted; expired
tokens are refused, saying so.

Each test speaks from addresses of its own (X-Forwarded-For, which uvicorn trusts from the
loopback address the tests connect from) and the throttle runs on a clock the test moves."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from alerts.store import AlertStore, now_ms
from api.auth import iso_ms
from api.guard import make_throttle
from config.settings import Settings
from devices.registry import Registry
from devices.sessions import OpenedSession, SessionStore
from devices.tokens import Role, TokenStore
from service.mingliang import create_app
from simulators.local_services import Influxd, Mosquitto
from tests.support import (
    ManualClock,
    ManualSeconds,
    bearer,
    make_camera_token,
    make_settings,
    make_token,
    serve,
    unique,
)

COOKIE = "mingliang_session"
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, broker: Mosquitto, influxd: Influxd
) -> Settings:
    return make_settings(tmp_path_factory.mktemp("abuse"), broker, influxd)


@pytest.fixture(scope="module")
def app(settings: Settings, registry: Registry) -> FastAPI:
    return create_app(settings, registry, run_ingest=False)


@pytest.fixture(scope="module")
def api(app: FastAPI) -> Iterator[httpx.Client]:
    with serve(app) as client:
        yield client


@pytest.fixture
def seconds(app: FastAPI, api: httpx.Client, settings: Settings) -> ManualSeconds:
    """The running service's throttle, fresh, on a clock the test moves."""
    clock = ManualSeconds()
    app.state.mingliang.guard.throttle = make_throttle(settings.auth, clock)
    return clock


@pytest.fixture
def admin_token(settings: Settings) -> str:
    return make_token(settings)


def source(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def metric(api: httpx.Client, name: str, reason: str | None = None) -> float:
    wanted = name if reason is None else f'{name}{{reason="{reason}"}}'
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {wanted} in /metrics")


def failures(api: httpx.Client, reason: str) -> float:
    return metric(api, "mingliang_api_auth_failures_total", reason)


def throttled(api: httpx.Client) -> float:
    return metric(api, "mingliang_api_auth_throttled_total")


def test_wrong_tokens_from_one_address_are_slowed_then_a_good_one_passes_after_the_wait(
    api: httpx.Client,
    seconds: ManualSeconds,
    admin_token: str,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="api.guard")
    unknown, refused = failures(api, "unknown_token"), throttled(api)
    me, good = source("192.0.2.10"), bearer(admin_token)

    def alerts(headers: dict[str, str]) -> httpx.Response:
        return api.get("/api/v1/alerts", headers={**me, **headers})

    for n in range(settings.auth.free_failures):
        wrong = alerts(bearer(f"mlt_wrong-{n}"))
        assert wrong.status_code == 401 and wrong.json()["detail"] == "unknown or revoked token"
    slowed = alerts(bearer("mlt_wrong-again"))
    assert slowed.status_code == 429, slowed.text
    assert slowed.headers["retry-after"] == "1"
    detail = slowed.json()["detail"]
    assert "too many failed authentication attempts from 192.0.2.10 (5 in a row)" in detail
    assert "try again in 1 s" in detail and "no token" in detail
    # While the address waits, even the right token is not looked at.
    assert alerts(good).status_code == 429
    # Another address is not concerned.
    assert api.get("/api/v1/alerts", headers={**source("192.0.2.11"), **good}).status_code == 200

    seconds.now += 1
    # The wait is over: the next token is checked; one more failure doubles the wait.
    assert alerts(bearer("mlt_wrong-sixth")).status_code == 401
    doubled = alerts(good)
    assert doubled.status_code == 429 and doubled.headers["retry-after"] == "2"
    seconds.now += 1.5
    assert alerts(good).headers["retry-after"] == "1"  # half a second left: rounded up
    seconds.now += 0.5
    assert alerts(good).status_code == 200
    # The success forgot the failures: the address starts over with its free ones.
    for n in range(settings.auth.free_failures):
        assert alerts(bearer(f"mlt_wrong-later-{n}")).status_code == 401
    assert alerts(good).status_code == 429

    # Checked and refused: 5 + 1 + 5; refused unchecked: 1 + 1 + 1 + 1 + 1 (the 200s aside).
    assert failures(api, "unknown_token") - unknown == 11
    assert throttled(api) - refused == 5
    # One warning each time the address starts to wait, not one per request.
    warnings = [r.getMessage() for r in caplog.records if r.name == "api.guard"]
    assert len(warnings) == 2, warnings
    assert all("192.0.2.10" in w and "slowed down after 5 failures" in w for w in warnings)


def test_malformed_headers_count_and_missing_tokens_do_not(
    api: httpx.Client, seconds: ManualSeconds, settings: Settings
) -> None:
    me = source("192.0.2.15")
    malformed = failures(api, "malformed")
    for _ in range(2 * settings.auth.free_failures):  # no secret sent: nothing to slow down
        assert api.get("/api/v1/alerts", headers=me).status_code == 401
    for header in ("Basic d2FuZzpsaQ==", "Bearer", "Bearer nonsense", "Bearer mlt_" + "x" * 300):
        assert api.get("/api/v1/alerts", headers={**me, "Authorization": header}).status_code == 401
    assert failures(api, "malformed") - malformed == 4
    camera = make_camera_token(settings, "kitchen-0001-cam-1")  # the wrong kind of token
    assert api.get("/api/v1/alerts", headers={**me, **bearer(camera)}).status_code == 401
    assert api.get("/api/v1/alerts", headers={**me, **bearer(camera)}).status_code == 429


def test_sign_ins_with_wrong_tokens_are_slowed(
    api: httpx.Client, seconds: ManualSeconds, settings: Settings
) -> None:
    me = source("192.0.2.20")
    for n in range(settings.auth.free_failures):
        signed = api.post("/api/v1/session", json={"token": f"mlt_guess-{n}"}, headers=me)
        assert signed.status_code == 401 and "set-cookie" not in signed.headers
    good = make_token(settings, "viewer", frozenset({"kitchen-0001"}))
    slowed = api.post("/api/v1/session", json={"token": good}, headers=me)
    assert slowed.status_code == 429 and slowed.headers["retry-after"] == "1"
    assert "set-cookie" not in slowed.headers
    seconds.now += 1
    signed = api.post("/api/v1/session", json={"token": good}, headers=me)
    assert signed.status_code == 200 and signed.cookies.get(COOKIE)


def test_guessed_session_cookies_are_slowed_but_a_session_that_is_over_is_not(
    api: httpx.Client, seconds: ManualSeconds, settings: Settings
) -> None:
    guesser = source("192.0.2.30")
    guessed = {"Cookie": f"{COOKIE}=mls_{'x' * 43}"}
    for _ in range(settings.auth.free_failures):
        assert api.get("/api/v1/alerts", headers={**guesser, **guessed}).status_code == 401
    assert api.get("/api/v1/session", headers={**guesser, **guessed}).status_code == 429

    # A browser still sending the cookie of a session it signed out of (or that expired)
    # once signed in: its requests are refused, counted, and never make anyone wait.
    browser = source("192.0.2.31")
    token = make_token(settings, "viewer", frozenset({"kitchen-0001"}))
    signed = api.post("/api/v1/session", json={"token": token}, headers=browser)
    secret, csrf = signed.cookies[COOKIE], signed.json()["csrf"]
    stale = {**browser, "Cookie": f"{COOKIE}={secret}"}
    assert api.delete("/api/v1/session", headers={**stale, "X-CSRF-Token": csrf}).status_code == 204
    over = failures(api, "session_over")
    for _ in range(3 * settings.auth.free_failures):
        refused = api.get("/api/v1/alerts", headers=stale)
        assert refused.status_code == 401 and "sign in again" in refused.json()["detail"]
    assert failures(api, "session_over") - over == 3 * settings.auth.free_failures


def test_wrong_camera_tokens_are_slowed(
    api: httpx.Client, seconds: ManualSeconds, settings: Settings
) -> None:
    me, sdp = source("192.0.2.40"), {"Content-Type": "application/sdp"}
    url = "/whip/kitchen-0001-cam-1"
    for n in range(settings.auth.free_failures):
        wrong = api.post(url, content="v=0\r\n", headers={**me, **sdp, **bearer(f"mlc_{n}")})
        assert wrong.status_code == 401, wrong.text
    mine = bearer(make_camera_token(settings, "kitchen-0001-cam-1"))
    assert api.post(url, content="v=0\r\n", headers={**me, **sdp, **mine}).status_code == 429
    seconds.now += 1
    # Checked and accepted now; this node has no video path, which it says.
    accepted = api.post(url, content="v=0\r\n", headers={**me, **sdp, **mine})
    assert accepted.status_code == 503 and "video path is off" in accepted.json()["detail"]


def test_an_expired_token_is_refused_saying_when_it_expired(
    api: httpx.Client, seconds: ManualSeconds, settings: Settings
) -> None:
    me = source("192.0.2.50")
    now = now_ms()
    store = AlertStore(settings.alert_store_url)
    try:
        # Made two hours ago, by stores whose clock says so, to last one hour.
        then = ManualClock(now - 2 * HOUR_MS)
        expired_at = now - HOUR_MS
        old, _ = TokenStore(store.engine, clock=then).create(
            unique("old"), Role.ADMIN, None, expires_ms=expired_at
        )
        soon_at = now + 10 * 60_000
        soon, _ = TokenStore(store.engine).create(
            unique("soon"), Role.ADMIN, None, expires_ms=soon_at
        )
        # A session opened back then with the old token: it ended when the token expired.
        opened = SessionStore(store.engine, clock=then).open(old, 8 * 3600)
    finally:
        store.close()
    assert isinstance(opened, OpenedSession) and opened.expires_ms == expired_at
    expired = failures(api, "expired")

    refused = api.get("/api/v1/alerts", headers={**me, **bearer(old)})
    assert refused.status_code == 401
    assert refused.json()["detail"].startswith(f"token expired on {iso_ms(expired_at)}")
    assert refused.headers["www-authenticate"].startswith("Bearer")
    signing = api.post("/api/v1/session", json={"token": old}, headers=me)
    assert signing.status_code == 401 and "token expired on" in signing.json()["detail"]
    ended = api.get("/api/v1/session", headers={**me, "Cookie": f"{COOKIE}={opened.secret}"})
    assert ended.status_code == 401
    assert f"its token expired on {iso_ms(expired_at)}" in ended.json()["detail"]
    assert failures(api, "expired") - expired == 3

    # A token that expires in ten minutes works, and its session ends with it.
    assert api.get("/api/v1/alerts", headers={**me, **bearer(soon)}).status_code == 200
    signed = api.post("/api/v1/session", json={"token": soon}, headers=me)
    assert signed.status_code == 200 and signed.json()["expires_ms"] == soon_at
    max_age = int(signed.headers["set-cookie"].lower().split("max-age=")[1].split(";")[0])
    assert 590 <= max_age <= 600 < settings.console.session_ttl_s
