"""Street detectors: an object that stays in a no-vending, no-parking or no-piling zone past
its dwell time, and a crowd that fills a zone.

Two background models of the picture at different speeds (Porikli et al., 2008): the fast one
takes in what stopped within seconds, the slow one only over many minutes. A pixel unlike the
slow model but like the fast one belongs to something that stopped; a pixel unlike both is
moving. Each frame is first brought to the slow model's brightness and contrast, so a cloud or
an infrared switch is not an object. A region where the slow model has more edges than the
picture now is a "ghost" (something that was there has left, such as a parked car driving
off): it is taken into the slow model at once instead of being reported.

- dwell: the stopped pixels of a zone cover at least `object_area` of the picture; raised when
  that has lasted the zone's `dwell_s` (default `dwell_s`, 3 minutes);
- crowd: the pixels unlike the slow model, stopped or moving, cover at least `crowd_share` of a
  `crowd` zone, for the crowd spell.

People standing still for minutes in a zone look like an object: a person reviews every case.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from analytics.video.health import Observation
from analytics.video.image import shrink
from analytics.video.profile import CameraProfile, Mask, Zone, ZoneKind

DWELL_KINDS = {
    ZoneKind.NO_VENDING: "street_vending",
    ZoneKind.NO_PARKING: "illegal_parking",
    ZoneKind.NO_PILING: "piled_materials",
}
CROWDING = "crowding"
_W = 160
Luma = npt.NDArray[np.uint8]
Image = npt.NDArray[np.float32]


def key_of(kind: str, zone: Zone) -> str:
    """Conditions are per zone: two vendors in two zones are two cases."""
    return f"{kind}:{zone.name}"


class StreetWatch:
    def __init__(self, profile: CameraProfile) -> None:
        self.params = profile.street
        self._profile = profile
        self.zones = [
            (key_of(DWELL_KINDS[z.kind], z), z) for z in profile.zones if z.kind in DWELL_KINDS
        ] + [(key_of(CROWDING, z), z) for z in profile.zones_of(ZoneKind.CROWD)]
        self._masks: dict[str, Mask] = {}
        self._keep: Mask | None = None
        self._fast: Image | None = None
        self._slow: Image | None = None
        self._learning: list[Image] = []
        self._started_ms: int | None = None
        self._last_ms: int | None = None

    def observe(self, luma: Luma, at_ms: int) -> dict[str, Observation]:
        if not self.zones:
            return {}
        h = max(2, round(_W * luma.shape[0] / luma.shape[1]))
        small = shrink(luma, _W, h)
        current = cv2.GaussianBlur(small, (3, 3), 0).astype(np.float32)
        if self._keep is None or self._keep.shape != current.shape:
            self._keep = self._profile.mask(_W, h)
            self._masks = {key: zone.mask(_W, h) & self._keep for key, zone in self.zones}
            self._fast = self._slow = None
            self._learning.clear()
            self._started_ms = None
        dt_s = 0.0 if self._last_ms is None else max(0.0, (at_ms - self._last_ms) / 1000)
        self._last_ms = at_ms
        if self._slow is None or self._fast is None:
            self._learn(current, at_ms)
            return {}
        p = self.params
        keep = self._keep
        current = self._matched(current, self._slow, keep)
        unlike_slow = (np.abs(current - self._slow) > p.difference) & keep
        unlike_fast = (np.abs(current - self._fast) > p.difference) & keep
        stopped = unlike_slow & ~unlike_fast
        stopped = self._without_ghosts(stopped, current)
        picture_px = float(keep.size)
        out: dict[str, Observation] = {}
        for key, zone in self.zones:
            zone_mask = self._masks[key]
            zone_px = max(1.0, float(zone_mask.sum()))
            if zone.kind is ZoneKind.CROWD:
                share = float((unlike_slow & zone_mask).sum()) / zone_px
                out[key] = Observation(share >= p.crowd_share, {"occupied": round(share, 3)})
                continue
            here = stopped & zone_mask
            area = float(here.sum()) / picture_px
            details: dict[str, object] = {"zone": zone.name, "object_area": round(area, 4)}
            if area >= p.object_area:
                ys, xs = np.nonzero(here)
                x0, y0 = int(xs.min()), int(ys.min())
                details["box"] = [
                    x0 / _W,
                    y0 / h,
                    (int(xs.max()) - x0 + 1) / _W,
                    (int(ys.max()) - y0 + 1) / h,
                ]
            out[key] = Observation(area >= p.object_area, details)
        # The fast model takes in everything; the slow one only what is not moving now.
        cv2.accumulateWeighted(current, self._fast, min(1.0, dt_s / p.fast_s))
        cv2.accumulateWeighted(
            current, self._slow, min(1.0, dt_s / p.slow_s), (~unlike_fast).astype(np.uint8)
        )
        return out

    def reset(self) -> None:
        """The camera is not seeing its scene (covered, moved, blurred): learn it again once
        it does, rather than take what it saw meanwhile for objects."""
        self._fast = self._slow = None
        self._learning.clear()
        self._started_ms = None

    def _learn(self, current: Image, at_ms: int) -> None:
        if self._started_ms is None:
            self._started_ms = at_ms
        self._learning.append(current)
        if at_ms - self._started_ms < self.params.learn_s * 1000 or len(self._learning) < 3:
            return
        background = np.median(np.stack(self._learning), axis=0).astype(np.float32)
        self._slow, self._fast = background, background.copy()
        self._learning.clear()

    def _matched(self, current: Image, reference: Image, keep: Mask) -> Image:
        """`current` brought to `reference`'s light: the gain and offset that map one onto the
        other over the pixels that did not change (fitted, then fitted again without the
        pixels that stand out: a crowd or a cart must not set the light level)."""
        cur, ref = current[keep][::3], reference[keep][::3]
        inliers = np.ones(cur.shape, bool)
        gain, offset = 1.0, 0.0
        for _ in range(3):
            if int(inliers.sum()) < 50:
                break
            if float(ref[inliers].std()) < 10.0:  # too flat to tell gain from offset
                gain, offset = 1.0, float(np.median(cur[inliers] - ref[inliers]))
            else:
                gain, offset = (float(v) for v in np.polyfit(ref[inliers], cur[inliers], 1))
                if gain < 0.2:  # no plausible light change maps one onto the other
                    return current
            inliers = np.abs(cur - (gain * ref + offset)) < 2 * self.params.difference
        return np.asarray((current - offset) / gain, np.float32)

    def _without_ghosts(self, stopped: Mask, current: Image) -> Mask:
        """Drop the stopped regions where the slow model had more detail than the picture
        has now (something left), and let the slow model take the picture there at once."""
        assert self._slow is not None and self._fast is not None
        count, labels, stats, _ = cv2.connectedComponentsWithStats(stopped.astype(np.uint8))
        if count <= 1:
            return stopped
        edges_now = _edges(current)
        edges_before = _edges(self._slow)
        out = stopped.copy()
        for label in range(1, count):
            if stats[label, cv2.CC_STAT_AREA] < 4:
                continue
            region = labels == label
            now, before = float(edges_now[region].sum()), float(edges_before[region].sum())
            if before > 0 and now < 0.5 * before:  # a ghost: heal the slow model there
                out &= ~region
                self._slow[region] = current[region]
        return out


def _edges(image: Image) -> npt.NDArray[np.float32]:
    gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3)
    return np.asarray(np.abs(gx) + np.abs(gy) > 40, np.float32)
