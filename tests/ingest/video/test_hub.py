"""The camera hub in one process: WHIP offers in, decoded frames in the analytics slot, WHEP out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import av
import pytest
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from config.settings import CamerasSettings, load_settings
from devices.registry import Registry
from ingest.video.frames import Frame
from ingest.video.hub import (
    ANY_OWNER,
    BadOffer,
    CameraHub,
    NotYours,
    NoVideo,
    UnknownCamera,
    UnknownSession,
    ViewerLimit,
    without_mdns_candidates,
)
from simulators.camera import SceneTrack
from tests.support import is_pattern_level, pattern

CAMERA = "kitchen-0001-cam-1"
T = TypeVar("T")


async def until(check: Callable[[], T], timeout: float, what: str) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = check()
        if found:
            return found
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)  # polling interval of a condition


async def offer_from(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def watching(
    hub: CameraHub, camera: str = CAMERA
) -> tuple[RTCPeerConnection, asyncio.Queue[av.VideoFrame], list[asyncio.Future[None]]]:
    """A WHEP viewer of `camera`: its peer, the frames it receives, and the tasks pulling them."""
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    viewer.addTransceiver("video", direction="recvonly")
    received: asyncio.Queue[av.VideoFrame] = asyncio.Queue()
    pulls: list[asyncio.Future[None]] = []

    @viewer.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        async def pull() -> None:
            while True:
                received.put_nowait(await track.recv())

        pulls.append(asyncio.ensure_future(pull()))

    _, view_answer = await hub.view(camera, await offer_from(viewer), "token:tester")
    await viewer.setRemoteDescription(RTCSessionDescription(view_answer, "answer"))
    return viewer, received, pulls


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.fixture
def cameras_settings() -> CamerasSettings:
    return load_settings({}, cameras={"viewers_per_camera": 1}).cameras


def publisher(codec: str, fps: float = 10.0) -> tuple[RTCPeerConnection, SceneTrack]:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = SceneTrack(pattern, fps)
    transceiver = pc.addTransceiver(track, direction="sendonly")
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType == f"video/{codec}"])
    return pc, track


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_whip_frames_reach_the_analytics_slot(
    pushed_only: Registry, cameras_settings: CamerasSettings, codec: str
) -> None:
    async def scenario() -> None:
        async with CameraHub(cameras_settings, pushed_only) as hub:
            pc, _ = publisher(codec)
            _, answer = await hub.publish(CAMERA, await offer_from(pc))
            assert f"{codec}/90000" in answer
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            slot = hub.slot(CAMERA)
            frame = await asyncio.to_thread(slot.take, 0, 20)
            assert frame is not None, "no frame reached the slot"
            assert (frame.width, frame.height) == (320, 180)
            later = await asyncio.to_thread(slot.take, frame.seq, 20)
            assert later is not None and later.seq > frame.seq
            luma = later.luma()
            assert luma.shape == (180, 320)
            # The picture is the publisher's: a flat luma of one of the pattern's levels.
            level = float(luma.mean())
            assert is_pattern_level(level)
            stats = (await hub.stats())[0]
            assert stats.transport == "whip" and stats.connected and stats.frames_decoded >= 2
            await pc.close()

    run(scenario)


async def publishing(hub: CameraHub) -> RTCPeerConnection:
    """A VP8 publisher of CAMERA, once its first frame is in the slot."""
    pc, _ = publisher("VP8")
    _, answer = await hub.publish(CAMERA, await offer_from(pc))
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await until(lambda: hub.slot(CAMERA).latest(), 20, "the first frame")
    return pc


def test_whep_viewer_receives_decoded_frames(
    pushed_only: Registry, cameras_settings: CamerasSettings
) -> None:
    async def scenario() -> None:
        async with CameraHub(cameras_settings, pushed_only) as hub:
            pc = await publishing(hub)

            viewer, received, _ = await watching(hub)
            frames = [await asyncio.wait_for(received.get(), 20) for _ in range(3)]
            assert all((f.width, f.height) == (320, 180) for f in frames)

            # The camera allows one viewer here: a second is refused with the reason.
            other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            other.addTransceiver("video", direction="recvonly")
            with pytest.raises(ViewerLimit, match="1 viewers, its limit"):
                await hub.view(CAMERA, await offer_from(other), "token:tester")
            for peer in (viewer, other, pc):
                await peer.close()

    run(scenario)


def test_offers_arriving_together_cannot_pass_the_viewer_cap(
    pushed_only: Registry, cameras_settings: CamerasSettings
) -> None:
    async def scenario() -> None:
        async with CameraHub(cameras_settings, pushed_only) as hub:
            pc = await publishing(hub)
            viewers = []
            for _ in range(3):
                viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                viewer.addTransceiver("video", direction="recvonly")
                viewers.append(viewer)
            offers = [await offer_from(v) for v in viewers]
            # Made answers await inside aiortc: all three are in flight at once.
            results = await asyncio.gather(
                *(hub.view(CAMERA, offer, "token:tester") for offer in offers),
                return_exceptions=True,
            )
            admitted = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, ViewerLimit)]
            assert (len(admitted), len(refused)) == (1, 2), results
            assert (await hub.stats())[0].viewers == 1
            for peer in (*viewers, pc):
                await peer.close()

    run(scenario)


def test_only_its_owner_or_an_administrator_ends_a_viewing_session(
    pushed_only: Registry,
) -> None:
    settings = load_settings({}, cameras={"viewers_per_camera": 4}).cameras

    async def scenario() -> None:
        async with CameraHub(settings, pushed_only) as hub:
            pc = await publishing(hub)
            peers = []
            sessions = []
            for _ in range(2):
                viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                viewer.addTransceiver("video", direction="recvonly")
                peers.append(viewer)
                session, _ = await hub.view(CAMERA, await offer_from(viewer), "token:wang")
                sessions.append(session)
            with pytest.raises(NotYours):
                await hub.unview(CAMERA, sessions[0], "token:li")
            await hub.unview(CAMERA, sessions[0], "token:wang")
            await hub.unview(CAMERA, sessions[1], ANY_OWNER)
            assert (await hub.stats())[0].viewers == 0
            for peer in (*peers, pc):
                await peer.close()

    run(scenario)


def test_bad_requests_start_nothing(
    pushed_only: Registry, cameras_settings: CamerasSettings
) -> None:
    async def scenario() -> None:
        async with CameraHub(cameras_settings, pushed_only) as hub:
            with pytest.raises(UnknownCamera):
                await hub.publish("kitchen-0001-fridge-1", "v=0")
            with pytest.raises(BadOffer):
                await hub.publish(CAMERA, "this is not SDP")
            with pytest.raises(NoVideo):
                viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                viewer.addTransceiver("video", direction="recvonly")
                await hub.view(CAMERA, await offer_from(viewer), "token:tester")
            await viewer.close()
            assert [s for s in await hub.stats() if s.connected] == []

    run(scenario)


def test_a_second_publisher_takes_over(
    pushed_only: Registry, cameras_settings: CamerasSettings
) -> None:
    async def scenario() -> None:
        async with CameraHub(cameras_settings, pushed_only) as hub:
            first, _ = publisher("VP8")
            first_id, answer = await hub.publish(CAMERA, await offer_from(first))
            await first.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.to_thread(hub.slot(CAMERA).take, 0, 20)

            second, _ = publisher("H264")  # the camera rebooted, with another codec
            second_id, answer = await hub.publish(CAMERA, await offer_from(second))
            await second.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            feed = hub.feed(CAMERA)
            assert feed.publisher is not None and feed.publisher.id == second_id
            assert feed.takeovers == 1
            with pytest.raises(UnknownSession):  # the first session is gone
                await hub.unpublish(CAMERA, first_id)
            seq = hub.slot(CAMERA).latest().seq  # type: ignore[union-attr]
            assert await asyncio.to_thread(hub.slot(CAMERA).take, seq, 20) is not None
            await hub.unpublish(CAMERA, second_id)
            assert not feed.live
            for peer in (first, second):
                await peer.close()

    run(scenario)


def test_analytics_consumers_get_luma_at_their_rate(
    pushed_only: Registry, cameras_settings: CamerasSettings
) -> None:
    levels: list[float] = []

    def detector(frame: Frame) -> None:
        levels.append(float(frame.luma().mean()))

    async def scenario() -> None:
        async with CameraHub(cameras_settings, pushed_only, consumers=[detector]) as hub:
            pc, _ = publisher("VP8", fps=10.0)
            _, answer = await hub.publish(CAMERA, await offer_from(pc))
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await until(lambda: len(levels) >= 3, 30, "three frames for the detector")
            # analytics_fps (2) is below the camera's 10 fps: the rest were skipped, not queued.
            await until(lambda: hub.slot(CAMERA).counts().skipped > 0, 30, "skipped frames")
            await pc.close()

    run(scenario)
    assert all(is_pattern_level(level) for level in levels)


def test_a_browsers_mdns_host_candidates_are_dropped_from_its_offer() -> None:
    offer = (
        "v=0\r\n"
        "a=candidate:1 1 udp 2113937151 0b3e2f4c-9a1d-4c5e-8f00-123456789abc.local 51234 typ host"
        " generation 0\r\n"
        "a=candidate:2 1 udp 2113939711 192.168.1.20 51235 typ host generation 0\r\n"
        "a=candidate:3 1 udp 1677729535 203.0.113.7 51236 typ srflx raddr 0.0.0.0 rport 0\r\n"
        "a=end-of-candidates\r\n"
    )
    kept = without_mdns_candidates(offer)
    assert ".local" not in kept
    assert kept == offer.replace(offer.splitlines(keepends=True)[1], "")
    assert without_mdns_candidates(kept) == kept
