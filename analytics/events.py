"""The one event model: what telemetry rules, video detectors and devices report.

A `Raise` says a condition holds at a source; raising the same (source, rule) again while its
alert is open only counts a repeat. A `Clear` says the condition ended; the alert resolves
itself. The alert store turns these signals into alerts (docs/alerts.md).

Taxonomy: every kind belongs to one category and has a default severity. Deployed kitchen
systems alert on rodents at once, give smoking or an open bin lid a deadline, and treat
missing gloves, hat, mask or work clothes as routine supervision; street cases are reviewed
and dispatched; camera health is its own concern; sensors cover the cold chain, gas, smoke
and devices going silent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    KITCHEN = "kitchen"
    STREET = "street"
    CAMERA_HEALTH = "camera_health"
    SENSOR = "sensor"


class Severity(StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    WARNING = "warning"

    @property
    def rank(self) -> int:
        """0 for critical ... 3 for warning: lower is more urgent."""
        return _SEVERITY_ORDER.index(self)


_SEVERITY_ORDER = (Severity.CRITICAL, Severity.MAJOR, Severity.MINOR, Severity.WARNING)


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    category: Category
    severity: Severity
    description: str


def _kinds(category: Category, *items: tuple[str, Severity, str]) -> dict[str, Kind]:
    return {name: Kind(name, category, sev, text) for name, sev, text in items}


C, MA, MI, W = Severity.CRITICAL, Severity.MAJOR, Severity.MINOR, Severity.WARNING
TAXONOMY: Mapping[str, Kind] = {
    **_kinds(
        Category.KITCHEN,
        ("rodent", C, "Rodent seen in the kitchen: immediate action"),
        ("cat_dog", MA, "Cat or dog in the kitchen"),
        ("smoking", MA, "Smoking in the kitchen: fix by the deadline"),
        ("bin_lid_open", MA, "Waste bin left open: fix by the deadline"),
        ("flame_unattended", C, "Open flame with nobody at the stove"),
        ("fire_outside_stove", C, "Open flame outside the stoves"),
        ("after_hours_presence", MA, "Someone in the kitchen while it is closed"),
        ("phone_use", MI, "Phone use while handling food"),
        ("no_gloves", W, "Food handler without gloves"),
        ("no_hat", W, "Food handler without a hat"),
        ("no_mask", W, "Food handler without a mask"),
        ("no_work_clothes", W, "Food handler without work clothes"),
    ),
    **_kinds(
        Category.STREET,
        ("street_vending", MI, "Street vending in a no-vending zone"),
        ("exposed_garbage", MI, "Exposed garbage"),
        ("piled_materials", MI, "Materials piled on the street"),
        ("illegal_parking", MI, "Illegal parking"),
        ("standing_water", MI, "Standing water"),
        ("crowding", MA, "Crowding"),
    ),
    **_kinds(
        Category.CAMERA_HEALTH,
        ("camera_offline", MA, "No video from the camera"),
        ("camera_covered", MA, "The lens is covered"),
        ("camera_blurred", MI, "The picture is blurred"),
        ("camera_frozen", MA, "The picture is frozen"),
        ("camera_moved", MI, "The camera was knocked aside"),
    ),
    **_kinds(
        Category.SENSOR,
        ("cold_chain_temperature", MA, "Chilled or frozen storage too warm"),
        ("gas_leak", C, "Combustible gas above the alarm level"),
        ("smoke", C, "Smoke detected"),
        ("door_left_open", MI, "Door left open"),
        ("door_open_after_hours", W, "Door opened outside service hours"),
        ("disinfection_fault", MI, "Disinfection cabinet not reaching its temperature"),
        ("device_offline", MA, "Device silent"),
        ("sensor_flatline", W, "Reading stuck while the device still reports"),
        ("rapid_change", W, "Reading changing faster than physically plausible"),
        ("device_fault", MI, "The device reports a fault of its own"),
    ),
}


@dataclass(frozen=True, slots=True)
class Source:
    """Where a condition holds: a site, and the device (sensor or camera) if there is one."""

    site_id: str
    device_id: str | None = None

    @property
    def key(self) -> str:
        return f"{self.site_id}/{self.device_id or ''}"


@dataclass(frozen=True, slots=True)
class Raise:
    """A condition holds. `rule` names what found it: a rule id, a detector, or `device`."""

    source: Source
    kind: str
    rule: str
    severity: Severity
    at_ms: int
    details: Mapping[str, Any] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Clear:
    """The condition found by `rule` at `source` no longer holds."""

    source: Source
    kind: str
    rule: str
    at_ms: int
    details: Mapping[str, Any] = field(default_factory=dict)


Signal = Raise | Clear
