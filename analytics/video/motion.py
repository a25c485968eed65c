"""The cheap motion gate every camera runs first; heavier detectors look only where it sees
change.

After Frigate's, which users run on thousands of cameras: grayscale, 90 pixels high,
contrast stretched, blurred, compared with a running average; pixels that differ by more than
`threshold` are motion, grouped into boxes of at least `min_area`. The average learns only
while nothing moves (or slowly, once motion has lasted), so that a person standing still is not
absorbed at once. When most of the picture changes at once (lights, an infrared switch, the
camera's exposure) the gate recalibrates instead of reporting motion everywhere.

Cost: about 0.1 ms a frame at any input size (the work is on the small picture).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from analytics.video.image import percentiles, shrink
from analytics.video.profile import Mask

Luma = npt.NDArray[np.uint8]
Box = tuple[float, float, float, float]  # x, y, w, h as fractions of the picture

# 90 rows: a 16:9 picture (640x360, 1280x720, 1920x1080) shrinks by a whole factor, which is
# what OpenCV's area resize does fast.
HEIGHT = 90


@dataclass(frozen=True, slots=True)
class Motion:
    boxes: tuple[Box, ...]  # regions that moved, largest first
    share: float  # of the watched picture that moved
    recalibrated: bool  # the whole picture changed at once: not reported as motion

    @property
    def moving(self) -> bool:
        return bool(self.boxes)


STILL = Motion((), 0.0, False)


class MotionGate:
    def __init__(
        self,
        threshold: int = 25,
        min_area: float = 0.0004,
        recalibrate_share: float = 0.6,
        alpha: float = 0.05,
    ) -> None:
        """`min_area`: the smallest box that counts, as a share of the picture (0.0004 is a
        4 x 4 patch at 160 x 90: a rat across a kitchen floor)."""
        self.threshold = threshold
        self.min_area = min_area
        self.recalibrate_share = recalibrate_share
        self.alpha = alpha
        self._average: npt.NDArray[np.float32] | None = None
        self._moving_for = 0
        self._kernel = np.ones((3, 3), np.uint8)

    def observe(self, luma: Luma, keep: Mask | None = None) -> Motion:
        """`keep`: where to look, at the small picture's size (see `size`)."""
        width, height = self.size(luma.shape[1], luma.shape[0])
        small = shrink(luma, width, height)
        low, high = percentiles(small, 0.04, 0.96)
        if high - low >= 8:  # stretch the contrast; a flat picture stays as it is
            small = np.asarray(
                cv2.convertScaleAbs(
                    small, alpha=255.0 / (high - low), beta=-low * 255.0 / (high - low)
                ),
                np.uint8,
            )
        current = cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)
        if self._average is None or self._average.shape != current.shape:
            self._average = current
            return STILL
        diff = cv2.absdiff(current, self._average) > self.threshold
        if keep is not None:
            diff &= keep
        watched = float(keep.sum()) if keep is not None else float(diff.size)
        share = float(diff.sum()) / max(watched, 1.0)
        if share > self.recalibrate_share:
            self._average = current
            self._moving_for = 0
            return Motion((), share, True)
        moved = cv2.dilate(diff.astype(np.uint8), self._kernel, iterations=2)
        contours, _ = cv2.findContours(moved, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_px = self.min_area * width * height
        boxes = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if w * h >= min_px:
                boxes.append((x / width, y / height, w / width, h / height))
        boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
        # Learn while still; once motion has lasted (something that stopped), learn slowly.
        self._moving_for = self._moving_for + 1 if boxes else 0
        rate = self.alpha if not boxes else (self.alpha / 10 if self._moving_for > 10 else 0.0)
        if rate:
            cv2.accumulateWeighted(current, self._average, rate)
        return Motion(tuple(boxes), share, False)

    @staticmethod
    def size(width: int, height: int) -> tuple[int, int]:
        """The small picture's (width, height) for an input of that size."""
        return max(2, round(HEIGHT * width / height)), HEIGHT
