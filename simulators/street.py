"""Street cameras' health heartbeats: video up, frame rate, bit rate following the traffic."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

from devices.models import Device, SiteKind
from devices.registry import Registry
from simulators.clock import DAY_S, seconds_of_day
from simulators.noise import generator, smooth, stable_key, uniform
from simulators.values import DeviceModel, MetricSpec, Values, specs_of


def traffic(t: float) -> float:
    """Street activity in [0.15, 1]: quiet at night, peaks at the morning and evening rush."""
    hour = seconds_of_day(t) / 3600.0
    rush = math.exp(-(((hour - 8.0) / 1.5) ** 2)) + math.exp(-(((hour - 18.0) / 2.0) ** 2))
    day = 0.5 - 0.5 * math.cos(2.0 * math.pi * (seconds_of_day(t) - 4 * 3600) / DAY_S)
    return min(1.0, 0.15 + 0.35 * day + 0.5 * rush)


@dataclass(frozen=True)
class StreetCamera(DeviceModel):
    device: Device
    specs: tuple[MetricSpec, ...]
    key: int
    fps: float
    base_kbps: float
    motion_kbps: float

    @classmethod
    def draw(cls, device: Device, specs: tuple[MetricSpec, ...], seed: int) -> StreetCamera:
        g = generator(seed, device.device_id, "params")
        return cls(
            device=device,
            specs=specs,
            key=stable_key(seed, device.device_id, "noise"),
            fps=25.0 if g.random() < 0.7 else 30.0,
            base_kbps=float(g.uniform(1500, 2500)),
            motion_kbps=float(g.uniform(1000, 2500)),
        )

    def raw(self, t: float) -> Values:
        # Variable bit rate: moving traffic costs bits.
        kbps = (
            self.base_kbps
            + self.motion_kbps * traffic(t) * (0.85 + 0.15 * smooth(self.key, t, 300))
            + 100.0 * smooth(self.key + 1, t, 60)
        )
        return {
            "online": True,
            "fps": round(self.fps - 0.5 * uniform(self.key + 2, math.floor(t)), 1),
            "bitrate_kbps": float(round(kbps)),
        }


def street_cameras(registry: Registry, sites: Collection[str] | None = None) -> list[Device]:
    """The street cameras of the grids `sites` (all grids when None), in inventory order."""
    grids = {s.site_id for s in registry.sites_of_kind(SiteKind.STREET_GRID)}
    if sites is not None:
        grids &= set(sites)
    devices = registry.devices.values()
    return [d for d in devices if d.site_id in grids and d.type == "street_camera"]


def street_models(
    registry: Registry, seed: int, sites: Collection[str] | None = None
) -> dict[str, StreetCamera]:
    return {
        d.device_id: StreetCamera.draw(d, specs_of(registry.metrics_of(d)), seed)
        for d in street_cameras(registry, sites)
    }
