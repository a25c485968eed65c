"""The video path end to end: WHIP publishers and WHEP viewers through the API and its camera
worker processes, health in InfluxDB, camera-offline alerts through the alert engine."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import pytest
from fastapi import FastAPI

from config.settings import Settings
from devices.models import Stream
from devices.registry import Registry
from service.mingliang import create_app
from simulators.camera import Render, SceneTrack, WhipError, WhipPublisher
from simulators.local_services import Influxd, Mosquitto
from simulators.rtsp import RtspCameraServer
from simulators.viewer import WhepViewer
from tests.support import (
    LoopThread,
    bearer,
    is_pattern_level,
    make_camera_token,
    make_settings,
    make_token,
    pattern,
    query,
    serve,
    wait_until,
)

CAMERA = "kitchen-0001-cam-1"  # kitchen-0001; kitchen-0001-cam-2 is another camera there
OTHER = "kitchen-0002-cam-1"


@pytest.fixture
def settings(tmp_path: Path, broker: Mosquitto, influxd: Influxd) -> Settings:
    return make_settings(
        tmp_path,
        broker,
        influxd,
        cameras={
            "workers": 2,
            "offline_after_s": 3.0,
            "health_every_s": 0.5,
            "viewers_per_camera": 2,
        },
        alerts={"tick_s": 0.2},
    )


@pytest.fixture
def app(settings: Settings, registry: Registry) -> FastAPI:
    return create_app(settings, registry.with_streams([]))


@pytest.fixture
def api(app: FastAPI, settings: Settings) -> Iterator[httpx.Client]:
    with serve(app, make_token(settings)) as client:
        yield client


@pytest.fixture
def peers() -> Iterator[LoopThread]:
    with LoopThread() as loop:
        yield loop


@contextlib.contextmanager
def publishing(
    peers: LoopThread, api: httpx.Client, camera: str, token: str, render: Render = pattern
) -> Iterator[WhipPublisher]:
    """A WHIP publisher of `render` at 10 fps for the with-block, stopped cleanly after it."""

    async def make() -> tuple[WhipPublisher, asyncio.Event]:
        track = functools.partial(SceneTrack, render, 10.0)
        return WhipPublisher(f"{api.base_url}/whip/{camera}", token, track), asyncio.Event()

    publisher, stop = peers.run(make())
    running = peers.start(publisher.run(stop))
    try:
        yield publisher
    finally:
        peers.loop.call_soon_threadsafe(stop.set)
        running.result(30)


def halves(index: int) -> npt.NDArray[np.uint8]:
    """An I420 picture dark on the left, bright on the right: survives any re-encoding."""
    frame = np.full((270, 320), 128, np.uint8)
    frame[:180, :160] = 40
    frame[:180, 160:] = 200
    return frame


def camera_view(api: httpx.Client, camera: str, site: str | None = None) -> dict[str, Any]:
    site = site or camera.rsplit("-cam", 1)[0]
    response = api.get("/api/v1/cameras", params={"site": site})
    response.raise_for_status()
    return next(c for c in response.json() if c["camera_id"] == camera)


def offline_alerts(api: httpx.Client, camera: str) -> list[dict[str, Any]]:
    response = api.get("/api/v1/alerts", params={"kind": "camera_offline", "device": camera})
    response.raise_for_status()
    alerts: list[dict[str, Any]] = response.json()["items"]
    return alerts


def test_a_whip_camera_end_to_end(api: httpx.Client, settings: Settings, peers: LoopThread) -> None:
    token = make_camera_token(settings, CAMERA)
    camera = contextlib.ExitStack()
    camera.enter_context(publishing(peers, api, CAMERA, token))

    # Frames reach the analytics slot: the snapshot is the slot's newest frame.
    def snapshot() -> bytes | None:
        response = api.get(f"/api/v1/cameras/{CAMERA}/snapshot.jpg")
        return response.content if response.status_code == 200 else None

    jpeg = wait_until(snapshot, 30, "a snapshot of the published camera")
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert picture.shape == (180, 320)
    # JPEG is full range: video luma 16..235 became 0..255.
    assert is_pattern_level(16 + float(picture.mean()) * 219 / 255)
    view = wait_until(
        lambda: (v := camera_view(api, CAMERA))["online"] and v, 30, "the camera shown online"
    )
    assert view["transport"] == "whip" and (view["width"], view["height"]) == (320, 180)

    # Health in InfluxDB, every health_every_s.
    where = f"WHERE camera_id = '{CAMERA}'"
    rows = wait_until(
        lambda: [
            r
            for r in query(settings, f"SELECT * FROM camera_health {where}")
            if r["fps"] and r["fps"] > 5
        ],
        30,
        "camera health with a frame rate",
    )
    assert rows[-1]["width"] == 320 and rows[-1]["transport"] == "whip"
    assert rows[-1]["online"] is True and rows[-1]["last_frame_age_s"] < 2

    # It stops: camera_offline after offline_after_s, through the alert engine.
    assert offline_alerts(api, CAMERA) == []
    camera.close()  # the camera stops sending
    alert = wait_until(lambda: offline_alerts(api, CAMERA), 30, "a camera_offline alert")[0]
    assert alert["status"] == "open" and alert["rule"] == "video.no_frames"
    assert not camera_view(api, CAMERA)["online"]

    # It comes back: the alert clears itself.
    with publishing(peers, api, CAMERA, token):
        resolved = wait_until(
            lambda: [a for a in offline_alerts(api, CAMERA) if a["status"] == "resolved"],
            30,
            "the camera_offline alert to clear",
        )[0]
    assert resolved["id"] == alert["id"] and resolved["resolution"] == "auto"


def test_a_whep_viewer_receives_decoded_frames(
    api: httpx.Client, settings: Settings, peers: LoopThread
) -> None:
    token = make_camera_token(settings, CAMERA)
    viewer_token = make_token(settings, "viewer", frozenset({"kitchen-0001"}))

    other_viewer = make_token(settings, "viewer", frozenset({"kitchen-0001"}))

    async def watch() -> npt.NDArray[np.uint8]:
        viewer = WhepViewer(f"{api.base_url}/whep/{CAMERA}", viewer_token)
        await viewer.connect()
        try:
            await viewer.wait_frames(5, 30)
            assert viewer.latest is not None
            # Another viewer of the same site may not end this one's session.
            session = viewer.location
            assert session is not None
            async with httpx.AsyncClient(headers=bearer(other_viewer)) as client:
                stolen = await client.delete(session)
            assert stolen.status_code == 403, stolen.text
            await viewer.wait_frames(viewer.frames + 2, 30)  # still watching
            return np.asarray(viewer.latest.to_ndarray(format="gray"), np.uint8)
        finally:
            await viewer.close()

    with publishing(peers, api, CAMERA, token, halves):
        wait_until(lambda: camera_view(api, CAMERA)["online"], 30, "the camera online")
        luma = peers.run(watch())
    # The camera's picture, decoded: dark left half, bright right half.
    assert luma.shape == (180, 320)
    assert luma[:, 10:150].mean() < 60 and luma[:, 170:310].mean() > 180

    # A viewer of another site is refused before anything starts.
    async def refused() -> WhipError:
        other = WhepViewer(f"{api.base_url}/whep/{OTHER}", viewer_token)
        with pytest.raises(WhipError) as caught:
            await other.connect()
        return caught.value

    error = peers.run(refused())
    assert error.status == 403 and "kitchen-0002" in str(error)


def test_mjpeg_and_the_viewer_cap(api: httpx.Client, settings: Settings, peers: LoopThread) -> None:
    camera = publishing(peers, api, CAMERA, make_camera_token(settings, CAMERA))
    url = f"/api/v1/cameras/{CAMERA}/stream.mjpeg"
    with camera:
        wait_until(lambda: camera_view(api, CAMERA)["online"], 30, "the camera online")
        with api.stream("GET", url) as first, api.stream("GET", url) as second:
            assert first.status_code == 200 and second.status_code == 200
            assert first.headers["content-type"].startswith("multipart/x-mixed-replace")
            head = b""
            chunks = first.iter_raw()
            while head.count(b"\xff\xd9") < 1:
                head += next(chunks)
            assert head.startswith(b"--mingliang-frame\r\nContent-Type: image/jpeg")
            refused = api.get(url)
            assert refused.status_code == 503
            assert "2 viewers, its limit" in refused.json()["detail"]
            # Closed streams free their places.
            first.close()
            second.close()
            wait_until(lambda: camera_view(api, CAMERA)["viewers"] == 0, 30, "the viewers to leave")


def chunked_post(
    api: httpx.Client, path: str, authorization: str, chunks: int, size: int
) -> tuple[int, int]:
    """POST an SDP body in chunks, without a length, watching for the answer after each: its
    status, and how many chunks were sent before it came (all of them if the server reads the
    whole body first)."""
    url = httpx.URL(str(api.base_url))
    assert url.host and url.port
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: {authorization}\r\n"
            "Content-Type: application/sdp\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        body = b"a=" + b"x" * (size - 3) + b"\n"
        sent = 0
        with contextlib.suppress(OSError):  # the server may close once it has answered
            while sent < chunks:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(f"{len(body):x}\r\n".encode() + body + b"\r\n")
                sent += 1
            sock.sendall(b"0\r\n\r\n")
        head = sock.recv(4096)
    return int(head.split()[1]), sent


def test_bad_or_missing_camera_tokens_start_nothing(
    api: httpx.Client, settings: Settings, app: FastAPI
) -> None:
    offer = "v=0\r\n"
    url = f"/whip/{CAMERA}"
    sdp = {"Content-Type": "application/sdp"}
    no_auth = httpx.Client(base_url=str(api.base_url), timeout=30)
    with no_auth:
        missing = no_auth.post(url, content=offer, headers=sdp)
        assert missing.status_code == 401 and "camera token" in missing.json()["detail"]
        for bad in ("nonsense", make_token(settings)):  # an API token does not publish
            refused = no_auth.post(
                url, content=offer, headers={**sdp, "Authorization": f"Bearer {bad}"}
            )
            assert refused.status_code == 401, refused.text
        other = make_camera_token(settings, OTHER)
        wrong = no_auth.post(
            url, content=offer, headers={**sdp, "Authorization": f"Bearer {other}"}
        )
        assert wrong.status_code == 403 and OTHER in wrong.json()["detail"]
        mine = {"Authorization": f"Bearer {make_camera_token(settings, CAMERA)}"}
        text = no_auth.post(url, content=offer, headers={**mine, "Content-Type": "text/plain"})
        assert text.status_code == 415
        garbage = no_auth.post(url, content="not sdp at all", headers={**mine, **sdp})
        assert garbage.status_code == 400
        # Camera ids cannot be enumerated: without the camera's own token, an id that is
        # not a camera is refused like one that is.
        for device in ("kitchen-0001-fridge-1", "no-such-camera"):
            anonymous = no_auth.post(f"/whip/{device}", content=offer, headers=sdp)
            assert anonymous.status_code == 401, anonymous.text
            elsewhere = no_auth.post(f"/whip/{device}", content=offer, headers={**mine, **sdp})
            assert elsewhere.status_code == 403, elsewhere.text
        # A body over cameras.max_sdp_bytes is refused by its declared length, or, sent in
        # chunks without one, as soon as it passes the limit: never read whole.
        too_big = "v=0\r\n" + "a=x\r\n" * 20_000
        declared = no_auth.post(url, content=too_big, headers={**mine, **sdp})
        assert declared.status_code == 413 and "at most 65536" in declared.json()["detail"]
        status, chunks_sent = chunked_post(api, url, mine["Authorization"], 1000, 65_536)
        assert status == 413 and chunks_sent < 1000
    # Nothing was started on any worker: two health polls later, no camera has a feed.
    monitor = app.state.mingliang.camera_monitor
    polls = monitor.polls
    wait_until(lambda: monitor.polls >= polls + 2, 30, "two health polls")
    assert [c for c in monitor.latest().values() if c.connected or c.transport] == []


def test_a_killed_worker_is_restarted_and_its_publisher_returns(
    api: httpx.Client, settings: Settings, app: FastAPI, peers: LoopThread
) -> None:
    token = make_camera_token(settings, CAMERA)
    with publishing(peers, api, CAMERA, token) as publisher:
        wait_until(lambda: camera_view(api, CAMERA)["online"], 30, "the camera online")
        pool = app.state.mingliang.cameras
        owner = pool.owner(CAMERA)
        pid = owner.process.pid
        pool.kill(owner.index)
        wait_until(lambda: owner.process.pid != pid and owner.ready.is_set(), 60, "a new worker")
        wait_until(lambda: publisher.stats.connects >= 2, 60, "the publisher to reconnect")
        wait_until(
            lambda: api.get(f"/api/v1/cameras/{CAMERA}/snapshot.jpg").status_code == 200,
            30,
            "frames on the new worker",
        )


def test_a_pulled_camera_goes_offline_and_back_with_its_server(
    settings: Settings, registry: Registry
) -> None:
    street = "street-cam-00001"
    with RtspCameraServer({street: "street"}, width=320, height=180, fps=5.0) as server:
        pulled = registry.with_streams([Stream(camera_id=street, url=server.url(street))])
        with serve(create_app(settings, pulled), make_token(settings)) as api:
            wait_until(
                lambda: (
                    (v := camera_view(api, street, "grid-0001"))["online"]
                    and v["transport"] == "rtsp"
                ),
                60,
                "the pulled camera online",
            )
            server.stop()
            # (Worker start-up may have raised and cleared one already: look for an open one.)
            alert = wait_until(
                lambda: [a for a in offline_alerts(api, street) if a["status"] == "open"],
                30,
                "camera_offline",
            )[0]
            server.start()
            wait_until(
                lambda: [
                    a
                    for a in offline_alerts(api, street)
                    if a["id"] == alert["id"] and a["status"] == "resolved"
                ],
                60,
                "the alert to clear once the server is back",
            )
            rows = query(
                settings, f"SELECT last(reconnects) FROM camera_health WHERE camera_id = '{street}'"
            )
            assert rows and rows[0]["last"] >= 1


def test_an_offline_alert_from_before_a_restart_clears_when_the_camera_returns(
    settings: Settings, registry: Registry, peers: LoopThread
) -> None:
    token = make_camera_token(settings, CAMERA)
    admin = make_token(settings)
    pushed_only = registry.with_streams([])
    with serve(create_app(settings, pushed_only), admin) as api:
        with publishing(peers, api, CAMERA, token):
            wait_until(lambda: camera_view(api, CAMERA)["online"], 30, "the camera online")
        alert = wait_until(lambda: offline_alerts(api, CAMERA), 30, "camera_offline")[0]
    # The service restarts; the camera comes back afterwards.
    with (
        serve(create_app(settings, pushed_only), admin) as api,
        publishing(peers, api, CAMERA, token),
    ):
        resolved = wait_until(
            lambda: [a for a in offline_alerts(api, CAMERA) if a["status"] == "resolved"],
            30,
            "the alert raised before the restart to clear",
        )[0]
    assert resolved["id"] == alert["id"]
