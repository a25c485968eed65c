"""Kitchen detectors that need no trained model: someone in the kitchen after hours, a rodent
on the floor at night, an open flame outside the stoves.

They look where the motion gate saw change (motion.py), inside the camera's zones:

- after-hours presence: while the kitchen is closed (its opening hours, widened by
  `early_s` before and `late_s` after for the staff), a moving region of a person's size
  anywhere but on the stoves;
- rodent: while the kitchen is closed, small moving regions (`rodent_min_area` to
  `rodent_max_area` of the picture) whose centre is in a `floor` zone, and nothing of a
  person's size moving (a cook's feet are not a rat);
- fire outside the stoves: flame-coloured pixels (orange to yellow, saturated, bright) that
  flicker, their shape changing from frame to frame as flames do (a red apron or a lamp does
  not), outside every `stove` zone. Smoke is not detected;
- flame unattended: a burner flickers in a `stove` zone (small motion there) while nothing of
  a person's size has moved at the stove for `unattended_s` (one product alerts after 10
  minutes).

Pure: pictures, motion and time in, observations out.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt

from analytics.video.health import Observation
from analytics.video.image import shrink
from analytics.video.motion import Box, Motion
from analytics.video.profile import CameraProfile, Mask, ZoneKind

PRESENCE = "after_hours_presence"
RODENT = "rodent"
FIRE = "fire_outside_stove"
UNATTENDED = "flame_unattended"
KINDS = (PRESENCE, RODENT, FIRE, UNATTENDED)
_FLAME_SEEN_MS = 5000  # a burner's flicker seen this recently: the flame is still on

Bgr = npt.NDArray[np.uint8]
_FIRE_W = 160  # flames are judged on a small picture: colour and flicker survive, cost does not


def _centre_in(box: Box, mask: Mask) -> bool:
    h, w = mask.shape
    x = min(w - 1, int((box[0] + box[2] / 2) * w))
    y = min(h - 1, int((box[1] + box[3] / 2) * h))
    return bool(mask[y, x])


def flame_pixels(bgr: Bgr) -> Mask:
    """Orange to yellow, saturated and bright: the colour of an open flame's body."""
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return ((hue <= 25) | (hue >= 172)) & (sat >= 110) & (val >= 190)


class KitchenWatch:
    def __init__(self, profile: CameraProfile) -> None:
        self.params = profile.kitchen
        self._profile = profile
        self._masks: dict[tuple[int, int, ZoneKind], Mask] = {}
        self._prev_flame: Mask | None = None
        self._flame_seen_ms: int | None = None
        self._prev_small: npt.NDArray[np.uint8] | None = None
        self._person_seen_ms: int | None = None

    def _zone_mask(self, kind: ZoneKind, width: int, height: int) -> Mask:
        key = (width, height, kind)
        mask = self._masks.get(key)
        if mask is None:
            mask = np.zeros((height, width), bool)
            for zone in self._profile.zones_of(kind):
                mask |= zone.mask(width, height)
            self._masks[key] = mask
        return mask

    def _burner_flickers(self, luma: npt.NDArray[np.uint8]) -> bool:
        """A flame on a burner: a few pixels of the stove zone change from frame to frame
        (too small and quick for the motion gate), and not most of it (that is someone)."""
        h = max(2, round(_FIRE_W * luma.shape[0] / luma.shape[1]))
        small = shrink(luma, _FIRE_W, h)
        prev, self._prev_small = self._prev_small, small
        stove = self._zone_mask(ZoneKind.STOVE, _FIRE_W, h)
        if prev is None or prev.shape != small.shape or not stove.any():
            return False
        changed = (cv2.absdiff(small, prev) > 10) & stove
        count = int(changed.sum())
        return count >= 3 and count < 0.3 * int(stove.sum())

    def observe(
        self,
        motion: Motion,
        is_open: bool,
        bgr: Callable[[int], Bgr],
        at_ms: int,
        luma: npt.NDArray[np.uint8],
    ) -> dict[str, Observation]:
        """`bgr(width)` gives the picture in colour at that width (made only when needed)."""
        p = self.params
        if self._burner_flickers(luma):
            self._flame_seen_ms = at_ms
        stove = self._zone_mask(ZoneKind.STOVE, 64, 36)
        floor = self._zone_mask(ZoneKind.FLOOR, 64, 36)
        at_stove = self._zone_mask(ZoneKind.STOVE, 16, 9)
        at_stove = cv2.dilate(at_stove.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if self._person_seen_ms is None:
            self._person_seen_ms = at_ms  # nobody is known to have been away before
        for box in motion.boxes:
            if box[2] * box[3] >= p.presence_area and _centre_in(box, at_stove):
                self._person_seen_ms = at_ms
        away = [b for b in motion.boxes if not _centre_in(b, stove)]
        person = [b for b in away if b[2] * b[3] >= p.presence_area]
        small = [
            b
            for b in away
            if p.rodent_min_area <= b[2] * b[3] <= p.rodent_max_area and _centre_in(b, floor)
        ]
        out = {
            PRESENCE: Observation(
                not is_open and bool(person),
                {"box": list(person[0]), "area": round(person[0][2] * person[0][3], 4)}
                if person
                else {},
            ),
            RODENT: Observation(
                not is_open and bool(small) and not person,
                {"box": list(small[0])} if small else {},
            ),
        }
        out[FIRE] = self._fire(motion, bgr)
        burning = self._flame_seen_ms is not None and at_ms - self._flame_seen_ms < _FLAME_SEEN_MS
        alone_s = (at_ms - self._person_seen_ms) / 1000
        out[UNATTENDED] = Observation(
            burning and alone_s >= p.unattended_s,
            {"nobody_at_stove_s": round(alone_s, 1)} if burning else {},
        )
        return out

    def _fire(self, motion: Motion, bgr: Callable[[int], Bgr]) -> Observation:
        p = self.params
        if not motion.moving:  # flames flicker: no motion, no flame (and no colour work)
            self._prev_flame = None
            return Observation(False)
        picture = bgr(_FIRE_W)
        h, w = picture.shape[:2]
        flame = flame_pixels(picture) & ~self._zone_mask(ZoneKind.STOVE, w, h)
        flame &= self._profile.mask(w, h)
        prev, self._prev_flame = self._prev_flame, flame
        area = float(flame.mean())
        if area < p.fire_min_area or prev is None or prev.shape != flame.shape:
            return Observation(False, {"flame_area": round(area, 4)})
        changed = float((flame ^ prev).sum()) / max(float(flame.sum()), 1.0)
        ys, xs = np.nonzero(flame)
        x0, y0 = int(xs.min()), int(ys.min())
        box = [x0 / w, y0 / h, (int(xs.max()) - x0 + 1) / w, (int(ys.max()) - y0 + 1) / h]
        holds = changed >= p.fire_flicker
        return Observation(
            holds, {"flame_area": round(area, 4), "flicker": round(changed, 3), "box": box}
        )
