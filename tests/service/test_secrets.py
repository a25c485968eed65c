"""Secrets never reach a log or an error message: camera passwords in RTSP URLs, API and camera
tokens, passwords and tokens in the configuration.

The service runs as in production (`python -m api serve`, debug logging, two camera workers);
everything it and its workers print is captured, FFmpeg's own output included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from simulators.local_services import Influxd, Mosquitto, free_port
from simulators.rtsp import RtspCameraServer
from tests.conftest import INVENTORY
from tests.support import bearer, make_camera_token, make_settings, make_token, wait_until

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "S3cr%40t-Q9"  # percent-encoded in the URL; FFmpeg sees "S3cr@t-Q9"
SECRETS = (PASSWORD, "S3cr@t-Q9")
REFUSED, NOT_FOUND = "street-cam-00001", "street-cam-00002"


def service_env(settings: Settings, inventory: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
    env.update(
        {
            "MINGLIANG_MQTT__HOST": settings.mqtt.host,
            "MINGLIANG_MQTT__PORT": str(settings.mqtt.port),
            "MINGLIANG_MQTT__CLIENT_ID": settings.mqtt.client_id,
            "MINGLIANG_INFLUX__URL": settings.influx.url,
            "MINGLIANG_INFLUX__DATABASE": settings.influx.database,
            "MINGLIANG_API__PORT": str(settings.api.port),
            "MINGLIANG_PATHS__DATA_DIR": str(settings.data_dir),
            "MINGLIANG_PATHS__INVENTORY": str(inventory),
            "MINGLIANG_CAMERAS__WORKERS": "2",
            "MINGLIANG_CAMERAS__RECONNECT_INITIAL_S": "0.2",
            "MINGLIANG_CAMERAS__RECONNECT_MAX_S": "1",
        }
    )
    return env


@pytest.fixture
def rtsp_server() -> Iterator[RtspCameraServer]:
    with RtspCameraServer({"street-cam-00003": "street"}, width=320, height=180) as server:
        yield server


@pytest.fixture
def inventory(tmp_path: Path, rtsp_server: RtspCameraServer) -> Path:
    """Two pulled cameras with passwords that fail: a closed port, and a path the server lacks."""
    folder = tmp_path / "inventory"
    shutil.copytree(INVENTORY.parent, folder)
    closed = free_port()
    (folder / "streams.csv").write_text(
        "camera_id,url\n"
        f"{REFUSED},rtsp://admin:{PASSWORD}@127.0.0.1:{closed}/ch1\n"
        f"{NOT_FOUND},rtsp://admin:{PASSWORD}@127.0.0.1:{rtsp_server.port}/no-such-path\n"
    )
    return folder / INVENTORY.name


def test_no_camera_password_or_token_in_the_logs_of_failing_pulls(
    tmp_path: Path, broker: Mosquitto, influxd: Influxd, inventory: Path
) -> None:
    settings = make_settings(tmp_path / "data", broker, influxd, api={"port": free_port()})
    api_token = make_token(settings)
    camera_token = make_camera_token(settings, "kitchen-0001-cam-1")
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        service = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--log-level", "debug"],
            cwd=ROOT,
            env=service_env(settings, inventory),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        base = f"http://127.0.0.1:{settings.api.port}"

        def logged() -> str:
            return log_path.read_text(errors="replace")

        def up() -> bool:
            assert service.poll() is None, logged()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, 90, "the service to start")
        with httpx.Client(base_url=base, timeout=10) as client:
            # Tokens travel in requests, refused ones included.
            assert client.get("/api/v1/cameras", headers=bearer(api_token)).status_code == 200
            wrong = client.post(
                "/whip/kitchen-0002-cam-1",
                content="v=0\r\n",
                headers={**bearer(camera_token), "Content-Type": "application/sdp"},
            )
            assert wrong.status_code == 403

        def tried_often() -> bool:
            text = logged()
            return all(text.count(f"camera {c}: RTSP") >= 3 for c in (REFUSED, NOT_FOUND))

        wait_until(tried_often, 60, "three failed pulls of each camera in the log")
    finally:
        service.terminate()
        service.wait(30)
    text = logged()
    # The failures are there, with what an operator needs: camera, user, host, reason.
    assert "rtsp://admin:***@127.0.0.1" in text
    assert "Connection refused" in text and "404" in text, text[-3000:]
    for secret in (*SECRETS, api_token, camera_token):
        assert secret not in text, f"{secret[:6]}... is in the service's log"


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        # A section refused as a whole must not be echoed: it holds the token.
        (
            {"MINGLIANG_INFLUX__API": "v2", "MINGLIANG_INFLUX__TOKEN": "tok-Zq81xx"},
            "needs org, bucket",
        ),
        ({"MINGLIANG_MQTT__PASSWORD": "tok-Zq81xx", "MINGLIANG_MQTT__PORT": "0"}, "mqtt.port"),
        (
            {"MINGLIANG_INFLUX__URL": "http://admin:tok-Zq81xx@influx.example:8086/db"},
            "influx.url",
        ),
        (
            {
                "MINGLIANG_ALERTS__STORE_URL": "postgresql://mingliang:tok-Zq81xx@db/alerts",
                "MINGLIANG_ALERTS__TICK_S": "-1",
            },
            "alerts.tick_s",
        ),
        ({"MINGLIANG_ALERTS__STORE_URL": "nonsense://u:tok-Zq81xx@db"}, "unsupported database"),
    ],
)
def test_a_bad_configuration_names_the_key_but_not_the_secret(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = run_cli({"MINGLIANG_PATHS__DATA_DIR": str(tmp_path), **env}, "tokens", "list")
    assert result.returncode in (1, 2), result.stdout
    assert named in result.stderr, result.stderr
    assert "tok-Zq81xx" not in result.stderr + result.stdout, result.stderr
