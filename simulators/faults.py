"""Scripted faults: `kind:target@start+duration`, an overlay on the pure device models.

Times are simulated seconds since the simulator started (`90s`, `10m`, `2h`, `1d`; a bare
number is seconds), so a script means the same at any speed. Value faults (`fridge_warming`,
`gas_spike`) are pure functions of that elapsed time; `silent` and `malformed` tell the fleet
what (not) to publish.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from devices.models import Device, SiteKind
from devices.registry import Registry
from simulators.malformed import REASONS, BadMessage, bad_messages
from simulators.noise import smooth, stable_key
from simulators.values import Values

__all__ = [
    "REASONS",
    "BadMessage",
    "Fault",
    "FaultError",
    "FaultKind",
    "FaultPlan",
    "FaultSpec",
    "bad_messages",
    "parse_duration",
]


class FaultError(ValueError):
    """A fault spec that cannot be parsed or does not fit the inventory; names the spec."""


class FaultKind(StrEnum):
    FRIDGE_WARMING = "fridge_warming"
    GAS_SPIKE = "gas_spike"
    SILENT = "silent"
    MALFORMED = "malformed"


_SPEC_RE = re.compile(r"^(?P<kind>[^:]+):(?P<target>[^@]+)@(?P<start>[^+]+)\+(?P<duration>.+)$")
_DURATION_RE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[smhd]?)$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

WARMING_C_PER_MIN = 0.5
# Where a failing appliance levels off: the kitchen's air for a fridge, thawing for a freezer.
WARMING_CAP_C: Mapping[str, float] = {"fridge": 14.0, "cold_room": 14.0, "freezer": -2.0}
_NOMINAL_C: Mapping[str, float] = {"fridge": 3.5, "cold_room": 2.0, "freezer": -18.0}
RECOVERY_TAU_S = 8 * 60  # the compressor pulls the temperature back down
GAS_SPIKE_LEL = (25.0, 40.0)


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `10m`, `2h`, `1d` or `45`; ValueError otherwise."""
    match = _DURATION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m, 2h")
    return float(match["number"]) * _UNIT_S[match["unit"]]


@dataclass(frozen=True)
class FaultSpec:
    kind: FaultKind
    target: str
    start_s: float
    duration_s: float

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        match = _SPEC_RE.match(text.strip())
        if match is None:
            raise FaultError(
                f"fault {text!r}: expected kind:target@start+duration, "
                "e.g. fridge_warming:kitchen-0007@60s+20m"
            )
        try:
            kind = FaultKind(match["kind"])
        except ValueError:
            raise FaultError(
                f"fault {text!r}: unknown kind {match['kind']!r} "
                f"(known: {', '.join(k.value for k in FaultKind)})"
            ) from None
        try:
            start, duration = parse_duration(match["start"]), parse_duration(match["duration"])
        except ValueError as exc:
            raise FaultError(f"fault {text!r}: {exc}") from None
        if duration <= 0:
            raise FaultError(f"fault {text!r}: the duration must be positive")
        return cls(kind, match["target"].strip(), start, duration)

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    def active(self, elapsed: float) -> bool:
        return self.start_s <= elapsed < self.end_s

    def __str__(self) -> str:
        return f"{self.kind}:{self.target}@{self.start_s:g}s+{self.duration_s:g}s"


@dataclass(frozen=True)
class Fault:
    """A spec bound to the inventory: the devices it affects."""

    spec: FaultSpec
    devices: frozenset[str]
    site_id: str | None  # the whole site was targeted
    site_kind: SiteKind | None

    @property
    def drops_connection(self) -> bool:
        """A silenced kitchen loses its gateway's MQTT connection (street cameras share theirs)."""
        return self.spec.kind is FaultKind.SILENT and self.site_kind is SiteKind.KITCHEN


_TYPES_OF_KIND: Mapping[FaultKind, tuple[frozenset[str], frozenset[str]]] = {
    # kind: (types a device target may have, types a site target selects)
    FaultKind.FRIDGE_WARMING: (frozenset(WARMING_CAP_C), frozenset({"fridge"})),
    FaultKind.GAS_SPIKE: (frozenset({"gas_detector"}), frozenset({"gas_detector"})),
}


def _bind(spec: FaultSpec, text: str, registry: Registry) -> Fault:
    wanted = _TYPES_OF_KIND.get(spec.kind)
    site = registry.sites.get(spec.target)
    if site is not None:
        devices = registry.devices_at(site.site_id)
        if wanted is not None:
            devices = tuple(d for d in devices if d.type in wanted[1])
            if not devices:
                raise FaultError(
                    f"fault {text!r}: site {site.site_id!r} has no {'/'.join(sorted(wanted[1]))}"
                )
        ids = frozenset(d.device_id for d in devices)
        return Fault(spec, ids, site.site_id, site.kind)
    device = registry.devices.get(spec.target)
    if device is None:
        raise FaultError(f"fault {text!r}: {spec.target!r} is neither a site nor a device")
    if wanted is not None and device.type not in wanted[0]:
        raise FaultError(
            f"fault {text!r}: {spec.kind} needs a {'/'.join(sorted(wanted[0]))}, "
            f"{device.device_id!r} is a {device.type}"
        )
    return Fault(spec, frozenset({device.device_id}), None, None)


class FaultPlan:
    """All scripted faults of a run, indexed for per-reading lookups."""

    def __init__(self, faults: Sequence[Fault] = (), seed: int = 0) -> None:
        self.faults = tuple(faults)
        self.seed = seed
        by_device: dict[str, list[Fault]] = {}
        offline: dict[str, list[FaultSpec]] = {}
        for fault in self.faults:
            if fault.drops_connection:
                assert fault.site_id is not None
                offline.setdefault(fault.site_id, []).append(fault.spec)
                continue  # its devices are behind the dropped gateway, not silent themselves
            for device_id in fault.devices:
                by_device.setdefault(device_id, []).append(fault)
        self._by_device = {k: tuple(v) for k, v in by_device.items()}
        self._offline = {k: tuple(v) for k, v in offline.items()}

    @classmethod
    def build(
        cls, specs: Iterable[str | FaultSpec], registry: Registry, seed: int = 0
    ) -> FaultPlan:
        faults = []
        for item in specs:
            spec = FaultSpec.parse(item) if isinstance(item, str) else item
            faults.append(_bind(spec, str(item), registry))
        return cls(faults, seed)

    def _active(self, device_id: str, kind: FaultKind, elapsed: float) -> bool:
        faults = self._by_device.get(device_id, ())
        return any(f.spec.kind is kind and f.spec.active(elapsed) for f in faults)

    def silent(self, device_id: str, elapsed: float) -> bool:
        """The device itself publishes nothing (a device, or a street grid, was silenced)."""
        return self._active(device_id, FaultKind.SILENT, elapsed)

    def malformed(self, device_id: str, elapsed: float) -> bool:
        return self._active(device_id, FaultKind.MALFORMED, elapsed)

    def offline(self, site_id: str, elapsed: float) -> bool:
        """The kitchen's gateway connection is down."""
        return any(spec.active(elapsed) for spec in self._offline.get(site_id, ()))

    @property
    def offline_sites(self) -> frozenset[str]:
        return frozenset(self._offline)

    def overlay(self, device: Device, values: Values, elapsed: float) -> Values:
        """`values` as the value faults active at `elapsed` change them."""
        faults = self._by_device.get(device.device_id)
        if not faults:
            return values
        out = values
        for fault in faults:
            spec = fault.spec
            if spec.kind is FaultKind.FRIDGE_WARMING and "temp_c" in out:
                out = {**out, "temp_c": _warmed(device.type, out["temp_c"], spec, elapsed)}
            elif spec.kind is FaultKind.GAS_SPIKE and spec.active(elapsed):
                key = stable_key(self.seed, device.device_id, "gas_spike")
                lo, hi = GAS_SPIKE_LEL
                level = lo + (hi - lo) * (0.5 + 0.5 * smooth(key, elapsed, 20.0))
                out = {**out, "gas_lel_pct": round(level, 2), "alarm": True}
        return out


def _warmed(device_type: str, temp: object, spec: FaultSpec, elapsed: float) -> float:
    assert isinstance(temp, float | int)
    cap = WARMING_CAP_C.get(device_type, 14.0)
    room = cap - _NOMINAL_C.get(device_type, 3.5)
    if elapsed < spec.start_s:
        return float(temp)
    if elapsed < spec.end_s:
        excess = min(room, WARMING_C_PER_MIN * (elapsed - spec.start_s) / 60.0)
    else:
        since = elapsed - spec.end_s
        if since > 10 * RECOVERY_TAU_S:
            return float(temp)
        peak = min(room, WARMING_C_PER_MIN * spec.duration_s / 60.0)
        excess = peak * math.exp(-since / RECOVERY_TAU_S)
    return round(min(temp + excess, max(cap, temp)), 2)
