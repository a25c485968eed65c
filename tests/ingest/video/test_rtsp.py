"""RTSP pull: a camera served by the simulator (GStreamer's RTSP server), pulled by a hub."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import CamerasSettings, load_settings
from devices.models import Stream
from devices.registry import Registry
from ingest.video.hub import CameraHub
from simulators.rtsp import RtspCameraServer

CAMERA = "street-cam-00001"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RtspCameraServer]:
    with RtspCameraServer({CAMERA: "street"}, width=320, height=180, fps=10.0) as running:
        yield running


@pytest.fixture
def cameras() -> CamerasSettings:
    return load_settings(
        {},
        cameras={"rtsp_timeout_s": 2.0, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
    ).cameras


def test_an_rtsp_camera_reconnects_after_its_server_restarts(
    registry: Registry, server: RtspCameraServer, cameras: CamerasSettings
) -> None:
    pulled = registry.with_streams([Stream(camera_id=CAMERA, url=server.url(CAMERA))])

    async def scenario() -> None:
        async with CameraHub(cameras, pulled) as hub:
            slot = hub.slot(CAMERA)
            first = await asyncio.to_thread(slot.take, 0, 30)
            assert first is not None, "no frame pulled"
            assert (first.width, first.height) == (320, 180)
            assert (await hub.stats())[0].transport == "rtsp"

            await asyncio.to_thread(server.restart)
            feed = hub.feed(CAMERA)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while feed.reconnects == 0:  # the pull notices the lost server
                assert loop.time() < deadline, "the pull never noticed the restart"
                await asyncio.sleep(0.05)  # polling interval of a condition
            seq = feed.slot.latest().seq  # type: ignore[union-attr]
            after = await asyncio.to_thread(slot.take, seq, 30)
            assert after is not None, "no frame after the server restarted"
            stats = (await hub.stats())[0]
            assert stats.connected and stats.reconnects >= 1 and stats.bytes_received > 0

    asyncio.run(asyncio.wait_for(scenario(), 90))
