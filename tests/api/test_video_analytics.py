"""Video analytics end to end: a camera publishing over WHIP has its lens covered at a known
time; the alert appears in the API with a snapshot and a clip the API serves, and clears when
the lens is uncovered."""

from __future__ import annotations

import asyncio
import functools
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
import pytest

from config.settings import Settings
from devices.registry import Registry
from service.mingliang import create_app
from simulators.camera import SceneClock, SceneTrack, WhipPublisher
from simulators.local_services import Influxd, Mosquitto
from simulators.scenes import Scene, parse_script
from tests.support import (
    LoopThread,
    bearer,
    make_camera_token,
    make_settings,
    make_token,
    serve,
    wait_until,
)

CAMERA = "kitchen-0001-cam-1"
COVERED_AT_S, COVERED_FOR_S = 16, 30


@pytest.fixture
def settings(tmp_path: Path, broker: Mosquitto, influxd: Influxd) -> Settings:
    return make_settings(
        tmp_path,
        broker,
        influxd,
        cameras={"workers": 1, "analytics_fps": 2.0, "health_every_s": 1.0},
        analytics={
            "health_every_s": 1.0,
            "signal_poll_s": 0.5,
            "evidence": {"clip_before_s": 12.0, "clip_after_s": 4.0},
        },
        alerts={"tick_s": 0.2},
    )


@pytest.fixture
def api(settings: Settings, registry: Registry) -> Iterator[httpx.Client]:
    with serve(create_app(settings, registry.with_streams([])), make_token(settings)) as client:
        yield client


def alerts_of(api: httpx.Client, kind: str) -> list[dict[str, Any]]:
    response = api.get("/api/v1/alerts", params={"kind": kind, "device": CAMERA})
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_a_covered_lens_is_an_alert_with_snapshot_and_clip_and_clears(
    api: httpx.Client, settings: Settings
) -> None:
    scene = Scene(
        CAMERA,
        "kitchen",
        width=320,
        height=180,
        fps=5,
        script=parse_script(f"lens_covered@{COVERED_AT_S}+{COVERED_FOR_S}"),
        seed=3,
    )
    token = make_camera_token(settings, CAMERA)
    with LoopThread() as peers:

        async def make() -> tuple[WhipPublisher, asyncio.Event, SceneClock]:
            clock = SceneClock.now()
            track = functools.partial(SceneTrack, scene.frame, scene.fps, clock)
            publisher = WhipPublisher(f"{api.base_url}/whip/{CAMERA}", token, track)
            return publisher, asyncio.Event(), clock

        publisher, stop, clock = peers.run(make())
        running = peers.start(publisher.run(stop))
        try:
            alert = wait_until(
                lambda: alerts_of(api, "camera_covered"), 90, "a camera_covered alert"
            )[0]
            raised_after_s = peers.run(_since(clock))
            assert alert["rule"] == "video.camera_covered" and alert["status"] == "open"
            assert alert["severity"] == "major"
            # Found within 20 s of the lens being covered (the learning took the first 10 s).
            assert COVERED_AT_S < raised_after_s <= COVERED_AT_S + 20, raised_after_s
            snapshot_name, clip_name = alert["evidence"]
            assert snapshot_name.endswith(".jpg") and clip_name.endswith(".webm")

            # The snapshot: a JPEG of the covered picture, with the region drawn in red.
            url = f"/api/v1/alerts/{alert['id']}/evidence"
            snapshot = api.get(f"{url}/0")
            assert snapshot.status_code == 200 and snapshot.headers["content-type"] == "image/jpeg"
            picture = cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape == (180, 320, 3)
            blue, green, red = (float(c) for c in picture[1, 160])  # the frame's top edge
            assert red > 150 and green < 100 and blue < 100

            # The clip: seconds before and after the alert, written once the after has passed.
            clip = wait_until(
                lambda: (r := api.get(f"{url}/1")).status_code == 200 and r, 30, "the clip"
            )
            assert clip.headers["content-type"] == "video/webm"
            with av.open(io.BytesIO(clip.content)) as container:
                frames = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
            assert len(frames) >= 24  # 12 s before + 4 s after at 2 a second, give or take
            assert (frames[0].shape[1], frames[0].shape[0]) == (320, 180)
            # It begins before the lens was covered (the kitchen, bright) and ends covered.
            assert frames[0].mean() > 80 and frames[-1].mean() < 40

            # Only who may see the alert may see its evidence.
            other = make_token(settings, "viewer", frozenset({"kitchen-0002"}))
            refused = api.get(f"{url}/0", headers=bearer(other))
            assert refused.status_code == 403
            assert api.get(f"{url}/2").status_code == 404

            # Uncovered: the alert clears itself.
            resolved = wait_until(
                lambda: [a for a in alerts_of(api, "camera_covered") if a["status"] == "resolved"],
                90,
                "the camera_covered alert to clear",
            )[0]
            assert resolved["id"] == alert["id"] and resolved["resolution"] == "auto"
            cleared_after_s = peers.run(_since(clock))
            uncovered_at_s = COVERED_AT_S + COVERED_FOR_S
            assert uncovered_at_s < cleared_after_s <= uncovered_at_s + 20
            # Nothing else was raised on the way.
            everything = api.get("/api/v1/alerts", params={"device": CAMERA}).json()["items"]
            assert [a["kind"] for a in everything] == ["camera_covered"]
        finally:
            peers.loop.call_soon_threadsafe(stop.set)
            running.result(30)


async def _since(clock: SceneClock) -> float:
    """Scene seconds since the camera's frame 0."""
    return asyncio.get_running_loop().time() - clock.loop_time


def test_a_cameras_effective_profile_follows_edits_and_shows_bad_ones(
    tmp_path: Path, broker: Mosquitto, influxd: Influxd, registry: Registry
) -> None:
    profiles = tmp_path / "profiles"
    (profiles / "rooms").mkdir(parents=True)
    (profiles / "all.toml").write_text("[health]\nlearn_s = 20\n")
    settings = make_settings(
        tmp_path / "data", broker, influxd, analytics={"profiles_dir": str(profiles)}
    )
    with serve(create_app(settings, registry), make_token(settings)) as api:
        url = f"/api/v1/cameras/{CAMERA}/profile"
        shown = api.get(url).json()
        assert shown["files"] == ["all.toml"] and shown["errors"] == []
        assert shown["profile"]["health"]["learn_s"] == 20
        room = profiles / "rooms" / "hot-kitchen.toml"
        room.write_text(
            '[[zones]]\nname = "stove"\nkind = "stove"\n'
            "polygon = [[0.1, 0.4], [0.4, 0.4], [0.4, 0.8], [0.1, 0.8]]\n"
        )
        shown = wait_until(
            lambda: (p := api.get(url).json())["profile"]["zones"] and p, 10, "the edit"
        )
        assert shown["files"] == ["all.toml", "rooms/hot-kitchen.toml"]
        assert shown["profile"]["zones"][0]["polygon"][2] == [0.4, 0.8]
        room.write_text('[[zones]]\nname = "stove"\nkind = "stove"\npolygon = [[0.1, 0.4]]\n')
        shown = wait_until(lambda: (p := api.get(url).json())["errors"] and p, 10, "the error")
        assert "hot-kitchen.toml" in shown["errors"][0] and "zones.0.polygon" in shown["errors"][0]
        assert shown["profile"]["zones"][0]["polygon"][2] == [0.4, 0.8]  # the last good one
        other = make_token(settings, "viewer", frozenset({"kitchen-0002"}))
        assert api.get(url, headers=bearer(other)).status_code == 403
        assert api.get("/api/v1/cameras/kitchen-0001-fridge-1/profile").status_code == 404


def test_the_service_refuses_to_start_on_a_bad_profile_naming_it(tmp_path: Path) -> None:
    (tmp_path / "all.toml").write_text("[health]\nlearn_s = 'soon'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
    env["MINGLIANG_ANALYTICS__PROFILES_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "api", "serve"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {tmp_path / 'all.toml'}: health.learn_s")
    assert "Traceback" not in done.stderr
