"""The latest-frame slot and the sampler analytics take frames through."""

from __future__ import annotations

import threading

import av
import numpy as np
import pytest

from ingest.video.frames import Frame, FrameSlot
from ingest.video.sampler import FrameSampler
from tests.support import wait_until


def frame(seq: int, luma: int = 100, camera: str = "cam") -> Frame:
    picture = np.full((24, 16), 128, np.uint8)
    picture[:16] = luma
    return Frame(camera, seq, seq * 1000, av.VideoFrame.from_ndarray(picture, format="yuv420p"))


def test_a_newer_frame_replaces_an_unread_one_and_is_counted() -> None:
    slot = FrameSlot("cam")
    assert slot.latest() is None and slot.take(timeout=0) is None
    for seq in (1, 2, 3):
        slot.put(frame(seq))
    taken = slot.take(timeout=0)
    assert taken is not None and taken.seq == 3
    assert slot.take(3, timeout=0) is None  # nothing newer
    counts = slot.counts()
    assert (counts.put, counts.taken, counts.skipped) == (3, 1, 2)


def test_take_waits_for_a_newer_frame() -> None:
    slot = FrameSlot("cam")
    slot.put(frame(1))
    got: list[Frame | None] = []
    waiter = threading.Thread(target=lambda: got.append(slot.take(1, timeout=30)))
    waiter.start()
    slot.put(frame(2))
    waiter.join(30)
    assert got and got[0] is not None and got[0].seq == 2


def test_luma_is_the_y_plane_without_conversion() -> None:
    f = frame(1, luma=77)
    luma = f.luma()
    assert luma.shape == (16, 16) and int(luma.mean()) == 77
    assert f.bgr().shape == (16, 16, 3)


def test_the_sampler_hands_only_the_newest_unseen_frame() -> None:
    slot = FrameSlot("cam")
    seen: list[int] = []
    sampler = FrameSampler(lambda: [slot], fps=1000, consumer=lambda f: seen.append(f.seq))
    slot.put(frame(1))
    assert sampler.sample_once() == 1 and seen == [1]
    assert sampler.sample_once() == 0  # nothing new: nothing handed twice
    for seq in (2, 3, 4):
        slot.put(frame(seq))
    assert sampler.sample_once() == 1 and seen == [1, 4]
    assert slot.counts().skipped == 2


def test_a_failing_consumer_does_not_stop_the_sampler() -> None:
    slot = FrameSlot("cam")
    seen: list[int] = []

    def consumer(f: Frame) -> None:
        seen.append(f.seq)
        if f.seq == 1:
            raise RuntimeError("detector bug")

    sampler = FrameSampler(lambda: [slot], fps=50, consumer=consumer)
    sampler.start()
    try:
        slot.put(frame(1))
        wait_until(lambda: sampler.failures == 1, 30, "the failure to be counted")
        slot.put(frame(2))
        wait_until(lambda: 2 in seen, 30, "the next frame")
    finally:
        sampler.stop()
    assert seen == [1, 2]


def test_sampler_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        FrameSampler(lambda: [], fps=0, consumer=lambda f: None)
