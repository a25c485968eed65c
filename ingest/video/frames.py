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

import av
import numpy as np
import numpy.typing as npt

Luma = npt.NDArray[np.uint8]
_PLANAR_LUMA = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "nv12", "gray"})


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture of a camera, as analytics and viewers see it."""

    camera_id: str
    seq: int  # 1 for the camera's first frame since the worker started, then +1 per frame
    received_ns: int  # wall clock when it was decoded
    image: av.VideoFrame

    @property
    def width(self) -> int:
        return int(self.image.width)

    @property
    def height(self) -> int:
        return int(self.image.height)

    def plane(self, index: int) -> Luma:
        """One plane of a planar frame as a (height, width) view of the decoder's buffer."""
        plane = self.image.planes[index]
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)
        return rows[: plane.height, : plane.width]

    def luma(self) -> Luma:
        """The Y plane as a (height, width) array: no conversion for planar YUV frames."""
        image = self.image
        if image.format.name in _PLANAR_LUMA:
            return self.plane(0)[: image.height, : image.width]
        return np.asarray(image.to_ndarray(format="gray"), np.uint8)

    def bgr(self) -> npt.NDArray[np.uint8]:
        """A (height, width, 3) BGR copy, for detectors that need colour."""
        return np.asarray(self.image.to_ndarray(format="bgr24"), np.uint8)


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
