"""Analytics take frames at their own rate: every 1/fps s, each camera's newest unseen frame.

One thread per worker walks the cameras' latest-frame slots; a frame replaced before its turn
is skipped (the slot counts it), so a detector slower than the cameras never builds a queue.
A consumer that raises is logged and counted, and the sampler goes on with the next frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from ingest.video.frames import Frame, FrameSlot

log = logging.getLogger(__name__)

FrameConsumer = Callable[[Frame], None]


class FrameSampler:
    def __init__(
        self, slots: Callable[[], Iterable[FrameSlot]], fps: float, consumer: FrameConsumer
    ) -> None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        self._slots = slots
        self._period = 1.0 / fps
        self._consumer = consumer
        self._seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frame-sampler", daemon=True)
        self.taken = 0
        self.failures = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def sample_once(self) -> int:
        """Hand each camera's newest unseen frame to the consumer; how many were handed."""
        handed = 0
        for slot in list(self._slots()):
            frame = slot.take(self._seen.get(slot.camera_id, 0), timeout=0)
            if frame is None:
                continue
            self._seen[slot.camera_id] = frame.seq
            handed += 1
            try:
                self._consumer(frame)
            except Exception:
                self.failures += 1
                log.exception("analytics failed on a frame of %s", slot.camera_id)
        self.taken += handed
        return handed

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            self.sample_once()
            # Behind (a slow consumer): start again from now rather than rush to catch up.
            due = max(due + self._period, time.monotonic())
