"""What video analytics look for on one camera: its zones, masks and detector parameters.

A profile is data, validated as it is loaded (config/profiles.py layers the files: built-in
defaults, the camera type, the room type, the camera itself). Zones are polygons in relative
coordinates, (0, 0) the top-left corner of the picture and (1, 1) the bottom-right, so one
profile fits a camera whatever resolution it sends.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from analytics.events import TAXONOMY
from analytics.video.condition import Timing

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Mask = npt.NDArray[np.bool_]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneKind(StrEnum):
    MASK = "mask"  # ignored by every detector: on-screen clocks, a window onto the street, a TV
    STOVE = "stove"  # flames here are cooking
    FLOOR = "floor"  # where rodents run at night
    NO_VENDING = "no_vending"
    NO_PARKING = "no_parking"
    NO_PILING = "no_piling"
    CROWD = "crowd"  # where crowding is measured


class Zone(_Model):
    name: str = Field(
        description="The zone's name, shown in alerts and part of their rule.",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.-]+$",
    )
    kind: ZoneKind = Field(description="What the zone is for.")
    polygon: tuple[tuple[Fraction, Fraction], ...] = Field(
        description="Corners as [x, y] fractions of the picture's width and height.",
        min_length=3,
        max_length=64,
    )
    dwell_s: float | None = Field(
        None, description="Street zones: how long an object stays before it is a case.", gt=0
    )

    @field_validator("polygon")
    @classmethod
    def _has_area(cls, corners: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        if cv2.contourArea(np.array(corners, np.float32)) <= 0:
            raise ValueError("the polygon has no area (corners in a line or repeated)")
        return corners

    def mask(self, width: int, height: int) -> Mask:
        """The zone as a (height, width) boolean mask at a picture's size."""
        canvas = np.zeros((height, width), np.uint8)
        points = np.array([(x * width, y * height) for x, y in self.polygon], np.float32)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
        return canvas.astype(bool)


class Spell(_Model):
    """How long a condition must last to be raised, and after it ends to clear."""

    raise_after_s: float = Field(
        description="The condition must hold this long, unbroken, to be raised.", ge=0, le=86400
    )
    clear_after_s: float = Field(
        description="The alert clears once the condition is gone this long.", ge=0, le=86400
    )
    cooldown_s: float = Field(
        0.0,
        description="After a clear, the same condition is not raised again this long.",
        ge=0,
        le=86400,
    )
    grace_s: float = Field(
        0.0,
        description="A break in the condition shorter than this does not restart its count.",
        ge=0,
        le=3600,
    )

    def timing(self) -> Timing:
        return Timing(
            round(self.raise_after_s * 1000),
            round(self.clear_after_s * 1000),
            round(self.cooldown_s * 1000),
            round(self.grace_s * 1000),
        )


class HealthProfile(_Model):
    """Camera health: covered, blurred, frozen, moved. Thresholds are ratios to the camera's
    own baseline, learnt from its picture, so one profile suits bright and dim scenes."""

    enabled: bool = Field(True, description="Watch this camera's health.")
    frozen_enabled: bool = Field(
        False,
        description="Look for a frozen picture. Off by default: once compression has removed "
        "a still scene's sensor noise, a live still picture is identical frame after frame "
        "too (docs/analytics.md). Turn it on for cameras whose stream keeps its noise.",
    )
    learn_s: float = Field(
        10.0, description="Seconds of picture learnt before the first verdict.", ge=1, le=3600
    )
    adapt_s: float = Field(
        600.0,
        description="Time constant of the baselines' slow drift (light over the day).",
        ge=10,
        le=86400,
    )
    covered_contrast: float = Field(
        0.35,
        description="Covered: contrast below this share of the baseline's, and the scene gone.",
        gt=0,
        lt=1,
    )
    scene_match: float = Field(
        0.45,
        description="Correlation with the reference view below which the scene counts as gone.",
        gt=0,
        lt=1,
    )
    blur_sharpness: float = Field(
        0.4, description="Blurred: sharpness below this share of the baseline's.", gt=0, lt=1
    )
    frozen_changed_share: float = Field(
        0.03,
        description="Frozen: fewer than this share of pixels changed between two frames (a "
        "frozen picture re-encoded at a key frame still changes a few).",
        ge=0,
        lt=1,
    )
    covered: Spell = Spell(raise_after_s=8, clear_after_s=4)
    blurred: Spell = Spell(raise_after_s=12, clear_after_s=6)
    frozen: Spell = Spell(raise_after_s=12, clear_after_s=2, grace_s=1.5)
    moved: Spell = Spell(raise_after_s=10, clear_after_s=6)


class KitchenProfile(_Model):
    """Kitchen cameras: after-hours presence, rodents on the floor, fire outside the stoves."""

    enabled: bool = Field(True, description="Run the kitchen detectors (kitchen cameras only).")
    early_s: float = Field(
        3600.0, description="Staff may be in this long before opening.", ge=0, le=43200
    )
    late_s: float = Field(
        3600.0, description="Staff may be in this long after closing.", ge=0, le=43200
    )
    presence_area: float = Field(
        0.02, description="A moving region this share of the picture is a person.", gt=0, lt=1
    )
    rodent_min_area: float = Field(
        0.0002, description="Smallest moving region taken for a rodent.", gt=0, lt=1
    )
    rodent_max_area: float = Field(
        0.01, description="Largest moving region taken for a rodent.", gt=0, lt=1
    )
    fire_min_area: float = Field(
        0.0005, description="Flame-coloured share of the picture that may be a fire.", gt=0, lt=1
    )
    fire_flicker: float = Field(
        0.25,
        description="Share of the flame's pixels that must change between frames (flames "
        "flicker; red clothes and lamps do not).",
        gt=0,
        le=2,
    )
    unattended_s: float = Field(
        600.0,
        description="Flame unattended: a burner on with nobody at the stove this long.",
        gt=0,
        le=86400,
    )
    presence: Spell = Spell(raise_after_s=5, clear_after_s=30, cooldown_s=600, grace_s=3)
    rodent: Spell = Spell(raise_after_s=2, clear_after_s=15, cooldown_s=600, grace_s=2)
    fire: Spell = Spell(raise_after_s=3, clear_after_s=10, grace_s=1.5)
    unattended: Spell = Spell(raise_after_s=0, clear_after_s=10, cooldown_s=600, grace_s=6)


class StreetProfile(_Model):
    """Street cameras: objects dwelling in no-vending, no-parking and no-piling zones, crowds."""

    enabled: bool = Field(True, description="Run the street detectors (street cameras only).")
    learn_s: float = Field(10.0, description="Seconds of picture learnt first.", ge=1, le=3600)
    dwell_s: float = Field(
        180.0,
        description="How long an object stays in a zone before it is a case (a zone's own "
        "`dwell_s` overrides it).",
        gt=0,
        le=86400,
    )
    object_area: float = Field(
        0.003, description="Share of the picture a stopped object covers at least.", gt=0, lt=1
    )
    difference: float = Field(
        22.0, description="Grey levels a pixel must differ by to be unlike a model.", gt=0, le=255
    )
    fast_s: float = Field(
        3.0, description="Time constant of the fast background model.", gt=0, le=600
    )
    slow_s: float = Field(
        1200.0, description="Time constant of the slow background model.", gt=0, le=86400
    )
    crowd_share: float = Field(
        0.5, description="Crowding: share of a crowd zone occupied.", gt=0, le=1
    )
    clear_after_s: float = Field(
        20.0, description="A dwell case clears once the zone is empty this long.", ge=0, le=3600
    )
    crowd: Spell = Spell(raise_after_s=60, clear_after_s=60, cooldown_s=600, grace_s=5)


class ModelSpec(_Model):
    """A district's ONNX classifier and the violations its classes stand for (model.py)."""

    name: str = Field(description="Shown in alerts.", min_length=1, max_length=64)
    path: Path = Field(description="The .onnx file, relative to the profiles folder.")
    input_width: int = Field(description="Picture width the model takes.", ge=8, le=2048)
    input_height: int = Field(description="Picture height the model takes.", ge=8, le=2048)
    scale: float = Field(1 / 255, description="Pixel values are multiplied by this.", gt=0)
    mean: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="Subtracted from each channel before scaling."
    )
    rgb: bool = Field(True, description="The model takes RGB (else BGR).")
    classes: dict[str, str] = Field(
        description="Class index (as text) -> violation kind of the taxonomy.", min_length=1
    )
    threshold: float = Field(0.6, description="Score from which a class counts.", gt=0, le=1)
    min_area: float = Field(
        0.01,
        description="Moving regions at least this share of the picture are looked at.",
        gt=0,
        lt=1,
    )
    max_regions: int = Field(3, description="Regions looked at per frame, largest first.", ge=1)
    spell: Spell = Spell(raise_after_s=3, clear_after_s=15, cooldown_s=600, grace_s=2)

    @field_validator("classes")
    @classmethod
    def _known_kinds(cls, classes: dict[str, str]) -> dict[str, str]:
        for index, kind in classes.items():
            if not index.isdigit():
                raise ValueError(f"class {index!r} is not a class index")
            if kind not in TAXONOMY:
                raise ValueError(f"class {index}: {kind!r} is not a kind of the taxonomy")
        return classes


class CameraProfile(_Model):
    zones: tuple[Zone, ...] = Field((), description="Zones and masks on the picture.")
    models: tuple[ModelSpec, ...] = Field((), description="Trained models to run (model.py).")
    health: HealthProfile = HealthProfile()
    kitchen: KitchenProfile = KitchenProfile()
    street: StreetProfile = StreetProfile()

    @field_validator("zones")
    @classmethod
    def _unique_names(cls, zones: tuple[Zone, ...]) -> tuple[Zone, ...]:
        names = [z.name for z in zones]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"zone names must be unique; repeated: {', '.join(doubled)}")
        return zones

    def zones_of(self, kind: ZoneKind) -> tuple[Zone, ...]:
        return tuple(z for z in self.zones if z.kind is kind)

    def mask(self, width: int, height: int) -> Mask:
        """Where detectors look: everywhere but the mask zones."""
        keep = np.ones((height, width), bool)
        for zone in self.zones_of(ZoneKind.MASK):
            keep &= ~zone.mask(width, height)
        return keep
