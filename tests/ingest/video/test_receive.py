"""What a publisher's worker decodes: every frame while watched, key frames only otherwise."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCSessionDescription
from aiortc.jitterbuffer import JitterFrame
from aiortc.rate import RateCounter
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from config.settings import load_settings
from devices.registry import Registry
from ingest.video.frames import Frame
from ingest.video.hub import CameraHub
from ingest.video.receive import (
    KEY_RETRY_S,
    KEY_WAIT_S,
    DecodeStream,
    FrameGate,
    QuickRateCounter,
    is_key_frame,
)
from ingest.video.stats import CameraStats
from tests.ingest.video.test_hub import CAMERA, offer_from, publisher, run, until, watching

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
KEY = b"\x00" + bytes(9)  # a VP8 frame tag with the P bit clear: a key frame
INTER = b"\x01" + bytes(9)


# -- key frames -----------------------------------------------------------------------------


def encoded(codec: str, frames: int, **options: str) -> list[bytes]:
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = 320, 180, "yuv420p"
    context.options = options
    rng = np.random.default_rng(7)
    packets: list[bytes] = []
    for i in range(frames):
        picture = rng.integers(0, 255, (270, 320), np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = i
        packets += [bytes(p) for p in context.encode(frame)]
    packets += [bytes(p) for p in context.encode(None)]
    return packets


def test_key_frames_are_told_from_the_frames_that_need_others() -> None:
    vp8 = encoded("libvpx", 5, deadline="realtime", **{"lag-in-frames": "0"})
    assert [is_key_frame("VP8", p) for p in vp8] == [True, False, False, False, False]
    h264 = encoded("libx264", 5, tune="zerolatency", preset="ultrafast")
    assert [is_key_frame("H264", p) for p in h264] == [True, False, False, False, False]
    assert not is_key_frame("VP8", b"")
    assert not is_key_frame("opus", b"\x00")


# -- the REMB estimator's rate counter --------------------------------------------------------


def test_the_quick_rate_counter_gives_aiortcs_figures() -> None:
    for seed in range(50):
        rng = random.Random(seed)
        theirs, ours = RateCounter(1000, 8000), QuickRateCounter(1000, 8000)
        now = rng.randint(0, 10**6)
        for _ in range(300):
            now += rng.choice([0, 0, 1, 3, 66, 200, 999, 1000, 1001, 5000])
            if rng.random() < 0.6:
                size = rng.randint(1, 1500)
                theirs.add(size, now)
                ours.add(size, now)
            else:
                assert theirs.rate(now) == ours.rate(now)
            if rng.random() < 0.01:
                theirs.reset()
                ours.reset()


# -- the gate, frame by frame -----------------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.watching = False
        self.arrived: list[tuple[bool, bool]] = []

    def watched(self) -> bool:
        return self.watching

    def frame_arrived(self, key: bool, decoded: bool) -> None:
        self.arrived.append((key, decoded))

    def decoded(self, image: av.VideoFrame) -> None:
        raise AssertionError("nothing is decoded here")


class Pool:
    """Takes what the gate sends to the decoders, decoding nothing."""

    def __init__(self) -> None:
        self.decoded: list[bytes] = []

    def stream(self, on_frame: Any, on_error: Any) -> DecodeStream:
        return DecodeStream(0, on_frame, on_error)

    def submit(self, stream: DecodeStream, codec: Any, frame: JitterFrame) -> None:
        self.decoded.append(frame.data)


class Camera:
    """A publisher at `fps` in front of a gate, on a clock of its own."""

    def __init__(self, fps: float, analytics_fps: float = 2.0, allowed: bool = True) -> None:
        self.now = 100.0
        self.fps = fps
        self.sink = Sink()
        self.pool = Pool()
        self.plis = 0
        self.loop = asyncio.new_event_loop()
        self.gate = FrameGate(
            self.sink,
            self.pool,  # type: ignore[arg-type]
            self.loop,
            analytics_fps=analytics_fps,
            key_frames_when_unwatched=allowed,
            clock=lambda: self.now,
        )
        self.gate.bind(self._pli)

    def _pli(self) -> None:
        self.plis += 1

    def send(self, data: bytes) -> None:
        self.now += 1 / self.fps
        self.gate.frame(VP8, JitterFrame(data, round(self.now * 90000)))

    def burst(self, data: bytes, frames: int) -> None:
        """Frames of the camera's rate (by their time stamps) arriving all at once."""
        stamp = round(self.now * 90000)
        for i in range(1, frames + 1):
            self.gate.frame(VP8, JitterFrame(data, stamp + round(i * 90000 / self.fps)))
        self.now += frames / self.fps

    def run(self, frames: int, answer: bool = True) -> None:
        """`frames` frames; a key frame for each key frame asked for, if `answer`."""
        for _ in range(frames):
            asked = self.plis
            self.send(INTER)
            if answer and self.plis > asked:
                self.send(KEY)

    def decoded(self) -> int:
        return len(self.pool.decoded)

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def camera() -> Iterator[Callable[..., Camera]]:
    made: list[Camera] = []

    def make(*args: Any, **kwargs: Any) -> Camera:
        made.append(Camera(*args, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_unwatched_only_key_frames_are_decoded_and_one_is_asked_for_per_take(
    camera: Callable[..., Camera],
) -> None:
    cam = camera(10.0)
    cam.send(KEY)
    cam.send(INTER)  # the rate is known now: 10 fps, five times analytics' 2
    assert cam.gate.sparse and cam.plis == 1  # does the publisher answer key frame requests?
    assert cam.decoded() == 2  # ... meanwhile every frame is decoded
    cam.send(KEY)  # it does
    for _ in range(5):
        cam.send(INTER)
    assert cam.decoded() == 3 and cam.plis == 1  # frames between key frames: skipped
    cam.gate.key_wanted()  # analytics took the newest frame
    assert cam.plis == 2
    cam.gate.key_wanted()  # once per key frame
    assert cam.plis == 2
    cam.send(KEY)
    assert cam.decoded() == 4
    assert [decoded for _, decoded in cam.sink.arrived].count(False) == 5
    assert sum(key for key, _ in cam.sink.arrived) == 3


def test_without_takes_a_key_frame_is_asked_for_now_and_then(
    camera: Callable[..., Camera],
) -> None:
    """Analytics off, or not taking: the camera is still decoded, and so known to be live."""
    cam = camera(10.0)
    cam.send(KEY)
    cam.run(60)  # six seconds, nobody taking
    keys = cam.decoded()
    assert 3 <= keys <= 8  # one every 2 / analytics_fps (1 s), not every frame
    assert cam.sink.arrived.count((False, False)) >= 45


def test_a_viewer_gets_every_frame_from_the_next_key_frame(
    camera: Callable[..., Camera],
) -> None:
    cam = camera(10.0)
    cam.send(KEY)
    cam.run(10)
    assert cam.gate.sparse
    before = cam.plis
    cam.sink.watching = True
    cam.gate.key_wanted()  # the viewer joins: the next key frame at once
    assert cam.plis == before + 1
    cam.send(INTER)  # still to be skipped: the decoder waits for a key frame
    decoded = cam.decoded()
    cam.send(KEY)
    for _ in range(10):
        cam.send(INTER)
    assert cam.decoded() == decoded + 11 and not cam.gate.sparse
    cam.sink.watching = False  # the viewer left
    cam.send(INTER)
    assert cam.gate.sparse and cam.decoded() == decoded + 11


def test_a_publisher_that_does_not_answer_is_decoded_in_full(
    camera: Callable[..., Camera],
) -> None:
    cam = camera(10.0)
    cam.send(KEY)
    cam.run(50, answer=False)
    assert cam.decoded() == 51  # nothing skipped: no key frame would have come
    assert 3 <= cam.plis <= 6  # asked again every KEY_RETRY_S
    assert KEY_RETRY_S < KEY_WAIT_S


def test_a_key_frame_that_does_not_come_is_asked_for_again(
    camera: Callable[..., Camera],
) -> None:
    cam = camera(10.0)
    cam.send(KEY)
    cam.run(5)  # the publisher answered once: frames are skipped
    plis = cam.plis
    cam.gate.key_wanted()
    cam.run(round(KEY_RETRY_S * 10) + 1, answer=False)  # lost
    assert cam.plis == plis + 2


def test_the_frame_rate_is_the_cameras_not_that_of_arrivals(
    camera: Callable[..., Camera],
) -> None:
    """5 fps frames arriving bunched (a busy loop) are still 5 fps: every frame decoded."""
    cam = camera(5.0)
    cam.send(KEY)
    for _ in range(10):
        cam.burst(INTER, 6)
    assert cam.decoded() == 61 and cam.plis == 0 and not cam.gate.sparse


@pytest.mark.parametrize(("fps", "allowed"), [(5.0, True), (10.0, False)])
def test_every_frame_is_decoded_when_analytics_need_most_or_the_setting_says_so(
    camera: Callable[..., Camera], fps: float, allowed: bool
) -> None:
    cam = camera(fps, allowed=allowed)
    cam.send(KEY)
    cam.run(30)
    assert cam.decoded() == 31 and cam.plis == 0 and not cam.gate.sparse


# -- a real publisher ------------------------------------------------------------------------


def test_nobody_watching_analytics_still_get_their_frames_and_a_viewer_every_frame(
    pushed_only: Registry,
) -> None:
    """10 fps in, analytics at 2: key frames only, until a WHEP viewer joins."""
    settings = load_settings(
        {}, cameras={"analytics_fps": 2.0, "unwatched_decode": "key_frames"}
    ).cameras
    taken: list[Frame] = []

    async def scenario() -> None:
        async with CameraHub(settings, pushed_only, consumers=[taken.append]) as hub:
            pc, _ = publisher("VP8", fps=10.0)
            _, answer = await hub.publish(CAMERA, await offer_from(pc))
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

            async def stats() -> CameraStats:
                return (await hub.stats())[0]

            async def until_stats(check: Callable[[CameraStats], bool], what: str) -> CameraStats:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 30
                while not check(found := await stats()):
                    if loop.time() > deadline:
                        raise AssertionError(f"timed out waiting for {what}: {found}")
                    await asyncio.sleep(0.05)  # polling interval of a condition
                return found

            unwatched = await until_stats(
                lambda s: s.key_frames_only and s.frames_not_decoded >= 20, "frames skipped"
            )
            assert unwatched.frames_received > unwatched.frames_decoded
            assert unwatched.key_frames_received >= 2
            analysed = len(taken)
            await until(lambda: len(taken) >= analysed + 4, 30, "analytics' next frames")
            assert len({f.seq for f in taken}) == len(taken)  # each frame taken once

            viewer, received, pulls = await watching(hub)
            await asyncio.wait_for(received.get(), 20)
            watched = await until_stats(
                lambda s: not s.key_frames_only and s.frames_decoded > unwatched.frames_decoded,
                "decoding for the viewer",
            )
            # From the key frame the viewer asked for on: every frame decoded, none skipped.
            await until_stats(
                lambda s: s.frames_decoded >= watched.frames_decoded + 20, "20 frames decoded"
            )
            later = await stats()
            assert later.frames_not_decoded == watched.frames_not_decoded
            assert (
                later.frames_received - watched.frames_received
                == later.frames_decoded - watched.frames_decoded
            )
            for _ in range(5):
                await asyncio.wait_for(received.get(), 20)

            await viewer.close()  # the viewer leaves: key frames only again
            await until_stats(
                lambda s: s.key_frames_only and s.frames_not_decoded > later.frames_not_decoded,
                "frames skipped again",
            )
            for pull in pulls:
                pull.cancel()
            await pc.close()

    run(scenario)
