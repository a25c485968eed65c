"""The console in a real browser: Debian's Chromium driven by Playwright, against the whole
service (camera workers included) on real Mosquitto and InfluxDB, with the kitchen simulator
and a WHIP camera publishing.

Screenshots of the main pages go to `artefacts/console/` (or $MINGLIANG_ARTEFACTS/console).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from config.settings import Settings
from devices.registry import Registry
from service.mingliang import create_app
from simulators.browser import CHROMIUM_ARGS, BrowserMissing, chromium
from simulators.camera import SceneTrack, WhipPublisher
from simulators.local_services import Influxd, Mosquitto, stop_process
from simulators.scenes import Happening, Scene
from tests.support import LoopThread, make_camera_token, make_settings, make_token, serve

ROOT = Path(__file__).resolve().parents[3]
ARTEFACTS = Path(os.environ.get("MINGLIANG_ARTEFACTS", ROOT / "artefacts")) / "console"
KITCHEN = "kitchen-0001"
OTHER_KITCHEN = "kitchen-0002"
CAMERA = "kitchen-0001-cam-1"
OTHER_CAMERA = "kitchen-0002-cam-1"


@dataclass(frozen=True)
class District:
    """The running system as the browser tests see it."""

    base_url: str
    settings: Settings
    admin: httpx.Client  # the API with an administrator's bearer token
    supervisor: str  # an API token of a supervisor of KITCHEN only
    broker: Mosquitto


@pytest.fixture(scope="package")
def district(
    tmp_path_factory: pytest.TempPathFactory,
    broker: Mosquitto,
    influxd: Influxd,
    registry: Registry,
) -> Iterator[District]:
    settings = make_settings(
        tmp_path_factory.mktemp("console"),
        broker,
        influxd,
        cameras={"workers": 1, "offline_after_s": 5.0, "health_every_s": 1.0},
        alerts={"tick_s": 0.2},
        analytics={"enabled": False},  # the console is under test here, not the detectors
    )
    app = create_app(settings, registry.with_streams([]))
    supervisor = make_token(settings, "supervisor", frozenset({KITCHEN}))
    with serve(app, make_token(settings)) as admin, LoopThread() as peers:
        base_url = str(admin.base_url).rstrip("/")
        with contextlib.ExitStack() as cameras:
            for camera_id in (CAMERA, OTHER_CAMERA):
                token = make_camera_token(settings, camera_id)
                cameras.enter_context(camera(peers, base_url, camera_id, token))
            yield District(base_url, settings, admin, supervisor, broker)


@contextlib.contextmanager
def camera(peers: LoopThread, base_url: str, camera_id: str, token: str) -> Iterator[None]:
    async def make() -> tuple[WhipPublisher, asyncio.Event]:
        # A kitchen with staff walking through: something to see on the wall and live.
        scene = Scene(
            camera_id,
            "kitchen",
            width=320,
            height=180,
            fps=10.0,
            script=[Happening("person_walking", start, 8.0) for start in range(2, 600, 12)],
        )
        track = functools.partial(SceneTrack, scene.frame, 10.0)
        return WhipPublisher(f"{base_url}/whip/{camera_id}", token, track), asyncio.Event()

    publisher, stop = peers.run(make())
    running = peers.start(publisher.run(stop))
    try:
        yield
    finally:
        peers.loop.call_soon_threadsafe(stop.set)
        running.result(30)


@pytest.fixture(scope="package")
def kitchens(
    district: District, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """The kitchen simulator for both kitchens, with a gas alarm in each a few simulated
    seconds in: started by the first test that asks for it, stopped after the last."""
    env = {
        **os.environ,
        "MINGLIANG_MQTT__HOST": district.broker.host,
        "MINGLIANG_MQTT__PORT": str(district.broker.port),
    }
    command = [
        sys.executable,
        "-m",
        "simulators",
        *("--sites", f"{KITCHEN},{OTHER_KITCHEN}", "--no-street"),
        *("--speed", "5", "--interval", "10", "--status-every", "60"),
        *("--fault", f"gas_spike:{KITCHEN}@10s+1h"),
        *("--fault", f"gas_spike:{OTHER_KITCHEN}@10s+1h"),
    ]
    log_path = tmp_path_factory.mktemp("kitchens") / "simulator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
    try:
        yield process
    finally:
        stop_process(process)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        try:
            path = chromium()
        except BrowserMissing as exc:
            pytest.fail(str(exc))
        launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def new_context(browser: Browser, district: District) -> BrowserContext:
    """A browser profile of its own (cookies, storage), as a supervisor's office PC has."""
    made = browser.new_context(
        base_url=district.base_url,
        locale="zh-CN",
        timezone_id="Asia/Shanghai",
        viewport={"width": 1366, "height": 860},
    )
    made.set_default_timeout(30_000)
    return made


@pytest.fixture
def context(browser: Browser, district: District) -> Iterator[BrowserContext]:
    made = new_context(browser, district)
    try:
        yield made
    finally:
        made.close()


def sign_in(page: Page, token: str) -> None:
    page.goto("/console/")
    page.fill("#token", token)
    page.click("form.signin button[type=submit]")
    expect(page.locator("#bar")).to_be_visible()


def screenshot(page: Page, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
