"""GStreamer's receiver of WHIP publishers: frames, figures, odd offers and vanished publishers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)

from config.settings import load_settings
from devices.registry import Registry
from ingest.video.gst_receiver import GstOfferError, i420_array, i420_size, offered_video
from ingest.video.hub import BadOffer, CameraHub
from simulators.camera import SceneTrack
from tests.ingest.video.test_hub import CAMERA, offer_from, publisher, run, until
from tests.support import pattern


def gst_layout(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> bytes:
    """Planes laid out as GStreamer's I420 (rows padded to 4 bytes, chroma after an even
    number of luma rows)."""

    def padded(plane: np.ndarray, rows: int) -> bytes:
        stride = (plane.shape[1] + 3) & ~3
        out = np.zeros((rows, stride), np.uint8)
        out[: plane.shape[0], : plane.shape[1]] = plane
        return out.tobytes()

    rows = (y.shape[0] + 1) & ~1
    return padded(y, rows) + padded(u, rows // 2) + padded(v, rows // 2)


def test_an_i420_picture_comes_out_as_its_planes() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 255, (4, 8), np.uint8)
    u, v = rng.integers(0, 255, (2, 4), np.uint8), rng.integers(0, 255, (2, 4), np.uint8)
    data = gst_layout(y, u, v)
    assert len(data) == i420_size(8, 4)
    planes = i420_array(data, 8, 4)
    assert np.array_equal(planes[:4], y)
    assert np.array_equal(planes[4:].ravel(), np.concatenate([u.ravel(), v.ravel()]))


def test_padded_rows_and_odd_sizes_lose_only_the_odd_row_and_column() -> None:
    y = np.arange(7 * 5, dtype=np.uint8).reshape(5, 7)  # 7 wide: rows padded to 8
    u = np.full((3, 4), 90, np.uint8)
    v = np.full((3, 4), 160, np.uint8)
    data = gst_layout(y, u, v)
    assert len(data) == i420_size(7, 5)
    planes = i420_array(data, 7, 5)
    assert planes.shape == (6, 6)
    assert np.array_equal(planes[:4], y[:4, :6])
    assert np.array_equal(planes[4:].ravel(), [90] * 6 + [160] * 6)


def test_offers_without_video_or_not_sdp_are_refused() -> None:
    with pytest.raises(GstOfferError, match="cannot be parsed"):
        offered_video("this is not SDP")
    audio_only = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
    )
    with pytest.raises(GstOfferError, match="no video"):
        offered_video(audio_only)


def test_video_beside_audio_is_received_and_the_audio_refused(pushed_only: Registry) -> None:
    settings = load_settings({}, cameras={"webrtc_receiver": "gstreamer"}).cameras

    async def scenario() -> None:
        async with CameraHub(settings, pushed_only) as hub:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
            video = pc.addTransceiver(SceneTrack(pattern, 10.0), direction="sendonly")
            codecs = RTCRtpSender.getCapabilities("video").codecs
            video.setCodecPreferences([c for c in codecs if c.mimeType == "video/VP8"])
            _, answer = await hub.publish(CAMERA, await offer_from(pc))
            audio_section = answer.split("m=audio", 1)[1].split("m=video", 1)[0]
            assert "a=inactive" in audio_section
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            frame = await asyncio.to_thread(hub.slot(CAMERA).take, 0, 20)
            assert frame is not None and (frame.width, frame.height) == (320, 180)
            await pc.close()

    run(scenario)


def test_health_figures_come_from_webrtcbin(pushed_only: Registry) -> None:
    settings = load_settings({}, cameras={"webrtc_receiver": "gstreamer"}).cameras

    async def scenario() -> None:
        async with CameraHub(settings, pushed_only) as hub:
            pc, _ = publisher("VP8")
            _, answer = await hub.publish(CAMERA, await offer_from(pc))
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.to_thread(hub.slot(CAMERA).take, 3, 20)
            stats = (await hub.stats())[0]
            assert stats.connected and stats.transport == "whip"
            assert stats.packets_received is not None and stats.packets_received >= 4
            assert stats.packets_lost == 0 and stats.jitter_ms is not None
            assert stats.bytes_received > 0
            assert stats.key_frames_received >= 1
            assert stats.frames_received >= stats.frames_decoded >= 4
            assert not stats.key_frames_only
            await pc.close()

    run(scenario)


def test_a_publisher_that_goes_quiet_is_ended_and_may_come_back(pushed_only: Registry) -> None:
    """No DELETE, no frames: webrtcbin would keep the session for ever; offline_after_s ends it."""
    settings = load_settings(
        {}, cameras={"webrtc_receiver": "gstreamer", "offline_after_s": 2.0}
    ).cameras

    async def scenario() -> None:
        async with CameraHub(settings, pushed_only) as hub:
            pc, track = publisher("VP8")
            _, answer = await hub.publish(CAMERA, await offer_from(pc))
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await asyncio.to_thread(hub.slot(CAMERA).take, 0, 20)
            feed = hub.feed(CAMERA)

            async def hung() -> None:
                await asyncio.Event().wait()

            track.recv = hung  # type: ignore[method-assign]  # the camera hangs: no more frames
            await until(lambda: not feed.live, 15, "the quiet publisher's session to end")
            await pc.close()

            again, _ = publisher("VP8")  # ... and reboots
            _, answer = await hub.publish(CAMERA, await offer_from(again))
            await again.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            seq = hub.slot(CAMERA).latest().seq  # type: ignore[union-attr]
            assert await asyncio.to_thread(hub.slot(CAMERA).take, seq, 20) is not None
            assert feed.live and feed.takeovers == 0
            await again.close()

    run(scenario)


def test_an_offer_with_no_codec_it_decodes_is_refused(pushed_only: Registry) -> None:
    settings = load_settings({}, cameras={"webrtc_receiver": "gstreamer"}).cameras

    async def scenario() -> None:
        async with CameraHub(settings, pushed_only) as hub:
            pc, _ = publisher("VP8")
            offer = (await offer_from(pc)).replace("VP8/90000", "AV1X/90000")
            with pytest.raises(BadOffer):
                await hub.publish(CAMERA, offer)
            assert not hub.feed(CAMERA).live
            await pc.close()

    run(scenario)
