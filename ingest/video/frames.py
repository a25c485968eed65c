"""Decoded frames and the bounded latest-frame slot each camera hands to analytics.

A camera delivers frames at its own rate; analytics take them at theirs. Between the two sits
one slot per camera holding only the newest frame: a newer frame replaces an unread one, and
the replaced frame is counted as skipped. Memory per camera is one decoded picture, whatever
the rates, which is what keeps a worker with many cameras flat over days.

Consumers run in threads (analytics are CPU work, off the event loop), so the slot is guarded
by a threading.Condition; put() never blocks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import av
import cv2
import numpy as np
import numpy.typing as npt

Luma = npt.NDArray[np.uint8]
_PLANAR_LUMA = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "nv12", "gray"})


class Picture(Protocol):
    """A decoded I420 picture (even width and height) still in its decoder's buffer, copied
    out only when someone looks at it: most frames are replaced in their slot unread."""

    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    def i420(self) -> npt.NDArray[np.uint8]:
        """The picture as one (height * 3 / 2, width) array: Y, then U, then V."""

    def video_frame(self) -> av.VideoFrame:
        """The picture as a PyAV frame (WHEP viewers, evidence)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture of a camera, as analytics and viewers see it."""

    camera_id: str
    seq: int  # 1 for the camera's first frame since the worker started, then +1 per frame
    received_ns: int  # wall clock when it was decoded
    source: av.VideoFrame | Picture

    @property
    def image(self) -> av.VideoFrame:
        source = self.source
        return source if isinstance(source, av.VideoFrame) else source.video_frame()

    @property
    def width(self) -> int:
        return int(self.source.width)

    @property
    def height(self) -> int:
        return int(self.source.height)

    def plane(self, index: int) -> Luma:
        """One plane of a planar frame as a (height, width) view of the decoder's buffer."""
        source = self.source
        if not isinstance(source, av.VideoFrame):
            width, height = source.width, source.height
            flat = source.i420().reshape(-1)
            if index == 0:
                return flat[: width * height].reshape(height, width)
            size = (width // 2) * (height // 2)
            start = width * height + (index - 1) * size
            return flat[start : start + size].reshape(height // 2, width // 2)
        plane = source.planes[index]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        return rows[: plane.height, : plane.width]

    def luma(self) -> Luma:
        """The Y plane as a (height, width) array: no conversion for planar YUV frames."""
        source = self.source
        if not isinstance(source, av.VideoFrame):
            return self.plane(0)
        if source.format.name in _PLANAR_LUMA:
            return self.plane(0)[: source.height, : source.width]
        return np.asarray(source.to_ndarray(format="gray"), np.uint8)

    def bgr(self) -> npt.NDArray[np.uint8]:
        """A (height, width, 3) BGR copy, for detectors that need colour."""
        source = self.source
        if not isinstance(source, av.VideoFrame):
            return np.asarray(cv2.cvtColor(source.i420(), cv2.COLOR_YUV2BGR_I420), np.uint8)
        return np.asarray(source.to_ndarray(format="bgr24"), np.uint8)


@dataclass(frozen=True, slots=True)
class SlotCounts:
    put: int  # frames offered
    taken: int  # frames a consumer took
    skipped: int  # frames replaced before anyone took them


class FrameSlot:
    """The newest frame of one camera; put() replaces, take() waits for a newer one.

    `on_taken`, if set, is called (outside the lock, on the taker's thread) after each take:
    the camera asks for its next key frame then when it decodes only key frames."""

    def __init__(self, camera_id: str) -> None:
        self.camera_id = camera_id
        self.on_taken: Callable[[], None] | None = None
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._unread = False
        self._put = 0
        self._taken = 0
        self._skipped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._unread:
                self._skipped += 1
            self._frame = frame
            self._unread = True
            self._put += 1
            self._cond.notify_all()

    def latest(self) -> Frame | None:
        """The newest frame without taking it (snapshots, viewers); None before the first."""
        with self._cond:
            return self._frame

    def take(self, after_seq: int = 0, timeout: float | None = None) -> Frame | None:
        """The newest frame with seq > after_seq, waiting up to `timeout`; None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._frame is None or self._frame.seq <= after_seq:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            self._unread = False
            self._taken += 1
            frame = self._frame
        if self.on_taken is not None:
            self.on_taken()
        return frame

    def counts(self) -> SlotCounts:
        with self._cond:
            return SlotCounts(self._put, self._taken, self._skipped)
