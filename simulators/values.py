"""Sensor values as the catalogue defines them, and the interface every device model has."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from devices.models import Device, Metric, MetricType

Value = float | int | bool | str
Values = dict[str, Value]


@dataclass(frozen=True)
class MetricSpec:
    """What `conform` needs of a catalogue metric."""

    name: str
    type: MetricType
    lo: float | None
    hi: float | None
    max_length: int

    @classmethod
    def of(cls, metric: Metric) -> MetricSpec:
        return cls(metric.name, metric.type, metric.min, metric.max, metric.max_length)


def specs_of(metrics: Mapping[str, Metric]) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec.of(m) for m in metrics.values())


def _clamp(x: float, spec: MetricSpec) -> float:
    if spec.lo is not None and x < spec.lo:
        return spec.lo
    if spec.hi is not None and x > spec.hi:
        return spec.hi
    return x


def conform(raw: Mapping[str, Value], specs: tuple[MetricSpec, ...]) -> Values:
    """Keep only the device type's metrics, in the catalogue's types and ranges.

    Models aim inside the ranges already; this is the guarantee, so that a tuning mistake
    shows as a flat line instead of a stream of readings ingest rejects.
    """
    out: Values = {}
    for spec in specs:
        value = raw.get(spec.name)
        if value is None:
            continue
        if spec.type is MetricType.BOOL:
            out[spec.name] = bool(value)
        elif spec.type is MetricType.STRING:
            out[spec.name] = str(value)[: spec.max_length]
        else:
            number = float(value)
            if not math.isfinite(number):
                continue
            number = _clamp(number, spec)
            out[spec.name] = int(number) if spec.type is MetricType.INT else number
    return out


class DeviceModel(ABC):
    """A device's readings as a pure function of simulated epoch time."""

    device: Device
    specs: tuple[MetricSpec, ...]

    @abstractmethod
    def raw(self, t: float) -> Values:
        """The model's values before `conform`: may carry extra keys, unclamped numbers."""

    def values(self, t: float) -> Values:
        return conform(self.raw(t), self.specs)
