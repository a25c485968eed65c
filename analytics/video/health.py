"""Camera health from the picture itself: covered, blurred, frozen, moved.

Each camera learns its own baselines over its first `learn_s` of picture (contrast,
sharpness, and a reference view) and lets them drift slowly while it is healthy; verdicts are
ratios to those baselines, so a dim washing room and a sunlit street use one profile. The
literature's recipe (short-term view against a long-term one, several measures each against
its own baseline, persistence before raising) with what deployed systems trip over in mind:

- light switched on or off, an infrared day/night switch: the whole picture's brightness jumps
  but its structure stays; the reference view is compared after normalising brightness and
  contrast, and a jump re-learns the contrast and sharpness baselines instead of raising;
- a person close to the lens looks covered or moved for a moment: conditions must persist
  (condition.py) longer than someone walking past;
- a ticking on-screen clock hides a frozen picture: mask it (a `mask` zone) and the rest of
  the picture is compared;
- compression smooths sharpness and may repeat identical frames between key frames: sharpness
  is a ratio to the camera's own compressed baseline, and frozen needs the picture to stay
  identical across several key frames.

Cost at 640x360: about a millisecond a frame on this machine's cores (bench/analytics_cost.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from analytics.video.image import shrink
from analytics.video.profile import HealthProfile, Mask

COVERED = "camera_covered"
BLURRED = "camera_blurred"
FROZEN = "camera_frozen"
MOVED = "camera_moved"
KINDS = (COVERED, BLURRED, FROZEN, MOVED)

Luma = npt.NDArray[np.uint8]
Image = npt.NDArray[np.float32]
MaskFor = Callable[[int, int], Mask]

_SMALL_W = 160  # the reference view and contrast: enough for structure, cheap to correlate
_SHARP_W = 320  # sharpness: a blur of a few pixels still shows at this width
_NO_SIGNAL_STD = 2.0  # a uniform picture (black, blue or grey screen) whatever the baseline
_LIGHT_JUMP = 0.25  # brightness change between two frames that counts as a light switch
_SAME_SCENE = 0.7  # correlation of two frames in a row that are the same scene
_RELEARN_MS = 3000  # after a light jump, contrast and sharpness re-learn for this long
_FROZEN_DIFF = 1  # luma steps a pixel must exceed to count as changed (compression dithers by 1)


@dataclass(frozen=True, slots=True)
class Observation:
    holds: bool
    details: Mapping[str, Any] = field(default_factory=dict)


def _normalised(image: Image, keep: Mask) -> Image:
    """Zero mean and unit variance inside `keep`, zero outside: brightness and gain removed."""
    values = image[keep]
    std = float(values.std())
    out = np.zeros_like(image)
    if std > 1e-6:
        out[keep] = (values - float(values.mean())) / std
    return out


def _correlation(a: Image, b: Image, keep: Mask) -> float:
    """Normalised cross-correlation of two normalised images over `keep` (-1 to 1)."""
    n = int(keep.sum())
    return float((a * b).sum() / n) if n else 0.0


def _shifted(image: Image, dx: float, dy: float) -> Image:
    matrix = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    h, w = image.shape
    return np.asarray(cv2.warpAffine(image, matrix, (w, h)), np.float32)


class HealthWatch:
    """One camera's health: `observe(luma, at_ms)` says which conditions hold in this frame,
    or nothing while it is still learning the camera's picture."""

    def __init__(self, profile: HealthProfile, mask_for: MaskFor) -> None:
        self.profile = profile
        self._mask_for = mask_for
        self._masks: dict[tuple[int, int], Mask] = {}
        self._size: tuple[int, int] | None = None
        self._started_ms: int | None = None
        self._last_ms: int | None = None
        self._learning: list[tuple[float, float, Image]] = []
        self.reference: Image | None = None  # the normalised small view it expects
        self.base_contrast = 0.0
        self.base_sharpness = 0.0
        self._relearn_until_ms = 0
        self._relearn: list[tuple[float, float]] = []
        self._prev_luma: Luma | None = None
        self._prev_small: Image | None = None
        self._prev_mean = 0.0

    @property
    def learnt(self) -> bool:
        return self.reference is not None

    def _mask(self, width: int, height: int) -> Mask:
        mask = self._masks.get((width, height))
        if mask is None:
            mask = self._mask_for(width, height)
            if not mask.any():
                raise ValueError("the masks hide the whole picture: nothing left to watch")
            self._masks[(width, height)] = mask
        return mask

    def _restart(self) -> None:
        self.reference = None
        self._learning.clear()
        self._started_ms = None
        self._prev_luma = self._prev_small = None

    def observe(self, luma: Luma, at_ms: int) -> dict[str, Observation]:
        height, width = luma.shape
        if self._size != (width, height):  # a new stream, or the camera changed resolution
            self._size = (width, height)
            self._restart()
        small_h = max(2, round(_SMALL_W * height / width))
        sharp_h = max(2, round(_SHARP_W * height / width))
        small_u8 = shrink(luma, _SMALL_W, small_h)
        keep_small = self._mask(_SMALL_W, small_h)
        small = np.asarray(cv2.GaussianBlur(small_u8, (5, 5), 0), np.float32)
        mean = float(small[keep_small].mean())
        contrast = float(small_u8[keep_small].std())
        view = _normalised(small, keep_small)
        sharp_img = shrink(luma, _SHARP_W, sharp_h)
        sharpness = self._sharpness(sharp_img, self._mask(_SHARP_W, sharp_h))
        # Only frozen needs the whole picture of the previous check: no copy of it otherwise.
        changed = self._changed_share(luma) if self.profile.frozen_enabled else None
        dt_ms = 0 if self._last_ms is None else max(0, at_ms - self._last_ms)
        self._last_ms = at_ms

        light_jump = False
        same = False
        if self._prev_small is not None:
            step = abs(mean - self._prev_mean) / max(self._prev_mean, 16.0)
            same = _correlation(view, self._prev_small, keep_small) > _SAME_SCENE
            light_jump = step > _LIGHT_JUMP and same
        steady = self._prev_small is None or same
        self._prev_small, self._prev_mean = view, mean

        if self.reference is None:
            self._learn(at_ms, contrast, sharpness, view)
            return {}  # no verdict yet: conditions already raised stay as they are
        if light_jump:
            self._relearn_until_ms = at_ms + _RELEARN_MS
            self._relearn.clear()
        relearning = at_ms < self._relearn_until_ms
        if relearning:
            self._relearn.append((contrast, sharpness))
        elif self._relearn:
            self.base_contrast = median(c for c, _ in self._relearn)
            self.base_sharpness = median(s for _, s in self._relearn)
            self._relearn.clear()

        p = self.profile
        match = _correlation(view, self.reference, keep_small)
        contrast_ratio = contrast / max(self.base_contrast, 1e-6)
        sharp_ratio = sharpness / max(self.base_sharpness, 1e-9)
        measures = {
            "brightness": round(mean, 1),
            "contrast_ratio": round(contrast_ratio, 3),
            "sharpness_ratio": round(sharp_ratio, 3),
            "scene_match": round(match, 3),
        }

        no_signal = contrast < _NO_SIGNAL_STD
        covered = no_signal or (
            not relearning and contrast_ratio < p.covered_contrast and match < p.scene_match
        )
        blurred = (
            not covered
            and not relearning
            and sharp_ratio < p.blur_sharpness
            and match >= p.scene_match  # the same scene, only soft
        )
        # Moved (knocked aside, re-aimed, or something parked against the lens): the picture
        # keeps its detail but is no longer the reference view. Where the view went is
        # measured for the alert's details.
        # A crowd or traffic right in front of the lens hides the view too, but changes from
        # one check to the next; a camera knocked aside shows a new view that holds still.
        moved = not covered and not relearning and match < p.scene_match and steady
        shift_x = shift_y = 0.0
        refound = match
        if moved:
            (dx, dy), _ = cv2.phaseCorrelate(self.reference, view)
            shift_x, shift_y = dx / _SMALL_W, dy / small_h
            refound = _correlation(_shifted(self.reference, dx, dy), view, keep_small)
        # Blur and cover smooth away the sensor noise, and a smooth picture encodes the same
        # frame after frame: frozen is only judged on a picture that has its detail.
        frozen = (
            p.frozen_enabled
            and not covered
            and not blurred
            and changed is not None
            and changed < p.frozen_changed_share
        )
        if not (covered or blurred or moved or frozen or relearning or light_jump):
            self._adapt(dt_ms, contrast, sharpness, view, match)

        cause = "no_signal" if no_signal else ("dark" if mean < 32 else "covered")
        return {
            COVERED: Observation(covered, {**measures, "cause": cause} if covered else measures),
            BLURRED: Observation(blurred, measures),
            FROZEN: Observation(frozen, {**measures, "changed_share": changed}),
            MOVED: Observation(
                moved,
                {
                    **measures,
                    "shift_x": round(shift_x, 3),
                    "shift_y": round(shift_y, 3),
                    "refound_match": round(refound, 3),
                },
            ),
        }

    def state(self) -> dict[str, Any] | None:
        """What it learnt, to carry over a restart; None while still learning."""
        if self.reference is None or self._size is None:
            return None
        return {
            "width": self._size[0],
            "height": self._size[1],
            "reference": self.reference.copy(),
            "base_contrast": self.base_contrast,
            "base_sharpness": self.base_sharpness,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take up what was learnt before a restart: a camera knocked aside or covered while
        the service was down is then still found, instead of learnt as its normal view."""
        reference = np.asarray(state["reference"], np.float32)
        width, height = int(state["width"]), int(state["height"])
        if reference.shape != (max(2, round(_SMALL_W * height / width)), _SMALL_W):
            raise ValueError(f"a saved reference of shape {reference.shape} does not fit")
        self._restart()
        self._size = (width, height)
        self.reference = reference
        self.base_contrast = float(state["base_contrast"])
        self.base_sharpness = float(state["base_sharpness"])

    def _sharpness(self, image: Luma, keep: Mask) -> float:
        """High-frequency energy relative to contrast: the Laplacian's variance over the
        picture's variance, so brightness and gain cancel out."""
        lap = cv2.Laplacian(image, cv2.CV_32F, ksize=3)
        watched = np.ascontiguousarray(keep).view(np.uint8)
        _, lap_std = cv2.meanStdDev(lap, mask=watched)
        _, image_std = cv2.meanStdDev(image, mask=watched)
        return float(lap_std[0, 0]) ** 2 / max(float(image_std[0, 0]) ** 2, 1.0)

    def _changed_share(self, luma: Luma) -> float | None:
        """Share of the watched pixels that changed since the previous frame."""
        prev, self._prev_luma = self._prev_luma, luma.copy()
        if prev is None or prev.shape != luma.shape:
            return None
        keep = self._mask(luma.shape[1], luma.shape[0])
        moved = cv2.absdiff(luma, prev) > _FROZEN_DIFF
        return float(np.count_nonzero(moved & keep)) / float(np.count_nonzero(keep))

    def _learn(self, at_ms: int, contrast: float, sharpness: float, view: Image) -> None:
        if self._started_ms is None:
            self._started_ms = at_ms
        self._learning.append((contrast, sharpness, view))
        if at_ms - self._started_ms < self.profile.learn_s * 1000 or len(self._learning) < 3:
            return
        self.base_contrast = median(c for c, _, _ in self._learning)
        self.base_sharpness = median(s for _, s, _ in self._learning)
        keep = self._mask(view.shape[1], view.shape[0])
        mean_view = np.mean([v for _, _, v in self._learning], axis=0).astype(np.float32)
        self.reference = _normalised(mean_view, keep)
        self._learning.clear()

    def _adapt(
        self, dt_ms: int, contrast: float, sharpness: float, view: Image, match: float
    ) -> None:
        """Let the baselines follow slow change (daylight) while the camera is healthy."""
        assert self.reference is not None
        alpha = min(1.0, dt_ms / (self.profile.adapt_s * 1000))
        self.base_contrast += alpha * (contrast - self.base_contrast)
        self.base_sharpness += alpha * (sharpness - self.base_sharpness)
        if match > 0.8:  # people passing by must not be blended into the reference view
            keep = self._mask(view.shape[1], view.shape[0])
            self.reference = _normalised((1 - alpha) * self.reference + alpha * view, keep)
