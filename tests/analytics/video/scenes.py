"""Scripted scenes through a real encoder, fed to one camera's analytics."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import numpy.typing as npt

from analytics.events import Clear, Raise, Signal, Source
from analytics.video.camera import CameraAnalytics
from analytics.video.profile import CameraProfile, Zone, ZoneKind
from simulators.codec import decoded
from simulators.scenes import Scene, parse_script

FPS = 5
EVERY = 2  # analytics take every other frame: 2.5 a second, about the default rate


# The scene's own zones, as an operator would draw them in the camera's profile.
SCENE_ZONES = {"stove": ZoneKind.STOVE, "floor": ZoneKind.FLOOR, "no_vending": ZoneKind.NO_VENDING}


def profile_for(scene: Scene, mask_clock: bool = True) -> CameraProfile:
    zones = []
    if mask_clock:
        osd = scene.zone_polygon("osd", margin_px=4)
        zones.append(Zone(name="clock", kind=ZoneKind.MASK, polygon=tuple(osd)))
    for name, kind in SCENE_ZONES.items():
        if name in scene.zones:
            polygon = tuple(scene.zone_polygon(name))
            zones.append(Zone(name=name, kind=kind, polygon=polygon))
    # These scenes go through x264 with key frames every 2 s and keep their sensor noise:
    # frozen can be told from still here (docs/analytics.md says when it cannot).
    return CameraProfile(zones=tuple(zones), health={"frozen_enabled": True})


@dataclass(frozen=True)
class Run:
    scene: Scene
    signals: list[Signal]

    def raised(self) -> list[tuple[str, float]]:
        return [(s.kind, s.at_ms / 1000) for s in self.signals if isinstance(s, Raise)]

    def cleared(self) -> list[tuple[str, float]]:
        return [(s.kind, s.at_ms / 1000) for s in self.signals if isinstance(s, Clear)]


def run(
    kind: str,
    script: str,
    seconds: float,
    *,
    profile: CameraProfile | None = None,
    width: int = 640,
    height: int = 360,
    seed: int = 1,
    opening_hours: str | None = None,
    street: bool = False,
    start_ms: int = 0,
) -> Run:
    """The signals of one camera watching `seconds` of the scene, scene time 0 at
    `start_ms` (signals' at_ms are scene time). `opening_hours` makes it a kitchen camera."""
    scene = Scene(
        "cam-1", kind, width=width, height=height, fps=FPS, script=parse_script(script), seed=seed
    )
    analytics = CameraAnalytics(
        Source("site-1", "cam-1"),
        profile or profile_for(scene),
        opening_hours=opening_hours,
        street=street,
    )
    signals: list[Signal] = []
    for index, luma, bgr in decoded(scene, seconds, every=EVERY, colour=True):
        at = start_ms + index * 1000 // FPS
        found = analytics.observe(luma, at, lambda w, bgr=bgr: shrink(bgr, w))
        signals += [replace(s, at_ms=s.at_ms - start_ms) for s in found]
    return Run(scene, signals)


def shrink(bgr: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.uint8]:
    height = max(2, round(bgr.shape[0] * width / bgr.shape[1] / 2) * 2)
    return np.asarray(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
