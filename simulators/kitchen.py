"""The sensors of a sunshine kitchen as pure functions of (seed, device id, simulated time).

Every model draws its fixed parameters (setpoint, compressor period, ...) once from a
generator seeded by (seed, device id), and its events of a day (door openings) from a generator
seeded by (seed, device id, local day), cached. Values at an instant then cost a few dozen
arithmetic operations, so that a fleet can sample thousands of sensors per second.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from devices.models import Device, Metric
from devices.registry import Registry
from simulators.clock import DAY_S, day_start, local_day, seconds_of_day
from simulators.hours import Rates, ServiceHours
from simulators.noise import generator, smooth, stable_key, uniform, white
from simulators.street import StreetCamera
from simulators.values import DeviceModel, MetricSpec, Values, specs_of

# Door-opening counters count from the sensor's installation, some day before this one.
_INSTALLED_BY = local_day(1_735_660_800)  # 2025-01-01
_TWO_PI = 2.0 * math.pi


def _draw(g: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(g.uniform(bounds[0], bounds[1]))


@dataclass(frozen=True)
class Battery:
    """Drains from 100 % to 80 % over months, then is replaced."""

    period_s: float
    phase_s: float

    @classmethod
    def draw(cls, g: np.random.Generator) -> Battery:
        period = float(g.uniform(60, 150)) * DAY_S
        return cls(period, float(g.uniform(0, period)))

    def level(self, t: float) -> float:
        used = ((t + self.phase_s) % self.period_s) / self.period_s
        return round(100.0 - 20.0 * used, 1)


# -- doors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DoorProfile:
    """How a door is used: openings per hour by phase, how long, how much heat gets in."""

    rates: Rates
    open_s: tuple[float, float]  # shortest and longest opening
    bump_c: tuple[float, float]  # temperature rise of one opening
    tau_s: float  # how fast the appliance pulls the temperature back down

    def per_day(self, hours: ServiceHours) -> int:
        return _openings_per_day(self, hours)


@lru_cache(maxsize=1024)
def _openings_per_day(profile: DoorProfile, hours: ServiceHours) -> int:
    # Fixed per day, so that a counter of openings since installation is O(1) to compute.
    return max(1, round(float(profile.rates.per_minute(hours.phases[:-1]).sum()) / 60.0))


@dataclass(frozen=True)
class Openings:
    """One local day's door openings, sorted; epoch seconds."""

    starts: tuple[float, ...]
    ends: tuple[float, ...]
    bumps: tuple[float, ...]


@lru_cache(maxsize=32768)
def door_openings(key: int, day: int, hours: ServiceHours, profile: DoorProfile) -> Openings:
    g = np.random.default_rng([key, day & 0xFFFFFFFF])
    rates = profile.rates.per_minute(hours.phases[:-1])
    n = profile.per_day(hours)
    minutes = g.choice(rates.size, size=n, p=rates / rates.sum())
    starts = np.sort(day_start(day) + minutes * 60.0 + g.random(n) * 60.0)
    lo, hi = profile.open_s
    # Log-normal: most openings are short, a few (a delivery, a stock check) are long.
    lengths = np.clip(g.lognormal(math.log(math.sqrt(lo * hi)), 0.5, n), lo, hi)
    bumps = g.uniform(profile.bump_c[0], profile.bump_c[1], n)
    out_starts: list[float] = []
    out_ends: list[float] = []
    free_from = -math.inf
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        start = max(start, free_from)  # a door cannot open again before it has closed
        out_starts.append(start)
        out_ends.append(start + length)
        free_from = start + length + 1.0
    return Openings(tuple(out_starts), tuple(out_ends), tuple(bumps.tolist()))


@dataclass(frozen=True)
class Door:
    key: int
    hours: ServiceHours
    profile: DoorProfile
    installed_day: int

    def day(self, day: int) -> Openings:
        return door_openings(self.key, day, self.hours, self.profile)

    def state(self, t: float) -> tuple[bool, float, int]:
        """(open now, sum of the recent openings' temperature bumps, openings so far)."""
        today = local_day(t)
        sched = self.day(today)
        i = bisect_right(sched.starts, t)
        count = self.profile.per_day(self.hours) * (today - self.installed_day) + i
        is_open = i > 0 and t < sched.ends[i - 1]
        horizon = t - 8.0 * self.profile.tau_s - self.profile.open_s[1]
        bump = 0.0
        j = i - 1
        while True:
            while j >= 0 and sched.starts[j] > horizon:
                start, end, size = sched.starts[j], sched.ends[j], sched.bumps[j]
                if t < end:
                    bump += size * (t - start) / (end - start)
                else:
                    bump += size * math.exp(-(t - end) / self.profile.tau_s)
                j -= 1
            if j >= 0 or day_start(today) <= horizon:
                break
            # Still inside the horizon at midnight: yesterday's last openings count too.
            today -= 1
            sched = self.day(today)
            j = len(sched.starts) - 1
            if j >= 0 and i == 0 and t < sched.ends[j]:
                is_open = True
        return is_open, bump, max(0, count)


# -- cold chain --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdProfile:
    setpoint_c: float
    spread_c: float  # device-to-device offset of the setpoint
    cycle_min: tuple[float, float]  # compressor period
    cycle_amp_c: tuple[float, float]
    defrost_every_s: float
    defrost_s: float
    defrost_amp_c: tuple[float, float]
    door: DoorProfile
    humidity_pct: tuple[float, float] | None  # centre, slow swing
    humidity_bounds: tuple[float, float]
    # Door bumps and defrost add up, but a compressor running flat out limits the rise.
    disturbance_cap_c: float


COLD_PROFILES: Mapping[str, ColdProfile] = {
    "fridge": ColdProfile(
        setpoint_c=3.5,
        spread_c=0.4,
        cycle_min=(20, 30),
        cycle_amp_c=(0.4, 0.6),
        defrost_every_s=6 * 3600,
        defrost_s=20 * 60,
        defrost_amp_c=(2.0, 3.0),
        door=DoorProfile(Rates(0.2, 3, 6, 12), (5, 40), (1.0, 2.0), 180),
        humidity_pct=(70.0, 6.0),
        humidity_bounds=(58.0, 85.0),
        disturbance_cap_c=4.0,
    ),
    "freezer": ColdProfile(
        setpoint_c=-18.0,
        spread_c=0.5,
        cycle_min=(25, 40),
        cycle_amp_c=(0.6, 0.9),
        defrost_every_s=8 * 3600,
        defrost_s=25 * 60,
        defrost_amp_c=(7.0, 8.5),
        door=DoorProfile(Rates(0.1, 2, 4, 6), (3, 20), (2.0, 4.0), 240),
        humidity_pct=None,
        humidity_bounds=(0.0, 100.0),
        disturbance_cap_c=10.0,
    ),
    "cold_room": ColdProfile(
        setpoint_c=2.0,
        spread_c=0.3,
        cycle_min=(30, 45),
        cycle_amp_c=(0.3, 0.5),
        defrost_every_s=6 * 3600,
        defrost_s=20 * 60,
        defrost_amp_c=(1.0, 1.8),
        door=DoorProfile(Rates(0.1, 4, 10, 8), (15, 120), (1.0, 2.0), 360),
        humidity_pct=(85.0, 4.0),
        humidity_bounds=(75.0, 95.0),
        disturbance_cap_c=3.5,
    ),
}


def _soft_cap(x: float, cap: float) -> float:
    knee = 0.6 * cap
    if x <= knee:
        return x
    room = cap - knee
    return knee + room * (1.0 - math.exp(-(x - knee) / room))


@dataclass(frozen=True)
class ColdStorage(DeviceModel):
    """Fridge, freezer or cold room: compressor saw, door bumps, periodic defrost."""

    device: Device
    specs: tuple[MetricSpec, ...]
    profile: ColdProfile
    key: int
    setpoint_c: float
    cycle_s: float
    cycle_phase_s: float
    cycle_amp_c: float
    defrost_phase_s: float
    defrost_amp_c: float
    door: Door
    battery: Battery

    def raw(self, t: float) -> Values:
        p = self.profile
        x = ((t + self.cycle_phase_s) % self.cycle_s) / self.cycle_s
        # Warms slowly while the compressor rests, cools fast while it runs.
        saw = -1.0 + 2.0 * x / 0.75 if x < 0.75 else 1.0 - 2.0 * (x - 0.75) / 0.25
        into = (t + self.defrost_phase_s) % p.defrost_every_s
        defrost = self.defrost_amp_c * math.sin(math.pi * into / p.defrost_s)
        if into >= p.defrost_s:
            defrost = 0.0
        is_open, bump, _ = self.door.state(t)
        temp = (
            self.setpoint_c
            + self.cycle_amp_c * saw
            + _soft_cap(bump + defrost, p.disturbance_cap_c)
            + 0.05 * white(self.key, t)
        )
        values: Values = {
            "temp_c": round(temp, 2),
            "door_open": is_open,
            "battery_pct": self.battery.level(t),
        }
        if p.humidity_pct is not None:
            centre, swing = p.humidity_pct
            humidity = (
                centre
                + swing * smooth(self.key + 1, t, 3 * 3600)
                + 0.8 * white(self.key + 2, t)
                + 2.0 * min(bump, 3.0)  # warm, moist kitchen air comes in with the door
            )
            lo, hi = p.humidity_bounds
            values["humidity_pct"] = round(min(hi, max(lo, humidity)), 1)
        return values


def _cold_storage(
    device: Device, hours: ServiceHours, specs: tuple[MetricSpec, ...], seed: int
) -> ColdStorage:
    p = COLD_PROFILES[device.type]
    g = generator(seed, device.device_id, "params")
    cycle_s = _draw(g, p.cycle_min) * 60
    door = Door(
        stable_key(seed, device.device_id, "door"),
        hours,
        p.door,
        _INSTALLED_BY - int(g.integers(0, 365)),
    )
    return ColdStorage(
        device=device,
        specs=specs,
        profile=p,
        key=stable_key(seed, device.device_id, "noise"),
        setpoint_c=p.setpoint_c + float(g.uniform(-p.spread_c, p.spread_c)),
        cycle_s=cycle_s,
        cycle_phase_s=float(g.uniform(0, cycle_s)),
        cycle_amp_c=_draw(g, p.cycle_amp_c),
        defrost_phase_s=float(g.uniform(0, p.defrost_every_s)),
        defrost_amp_c=_draw(g, p.defrost_amp_c),
        door=door,
        battery=Battery.draw(g),
    )


# -- the hot kitchen ---------------------------------------------------------------------------


def kitchen_air_c(hours: ServiceHours, key: int, t: float) -> float:
    """Room temperature: warmest mid-afternoon, warmer still while the stoves are on."""
    hour_angle = _TWO_PI * (seconds_of_day(t) - 9 * 3600) / DAY_S
    return 24.0 + 2.0 * math.sin(hour_angle) + 3.0 * hours.activity(t) + 0.3 * smooth(key, t, 1800)


@dataclass(frozen=True)
class GasDetector(DeviceModel):
    device: Device
    specs: tuple[MetricSpec, ...]
    hours: ServiceHours
    key: int
    baseline: float
    cooking: float

    def raw(self, t: float) -> Values:
        burners = self.hours.activity(t) * self.cooking * (0.75 + 0.25 * smooth(self.key, t, 600))
        lel = self.baseline + 0.15 * white(self.key + 1, t, 10.0) + burners
        return {"gas_lel_pct": round(max(0.0, lel), 2), "alarm": False}


@dataclass(frozen=True)
class SmokeDetector(DeviceModel):
    device: Device
    specs: tuple[MetricSpec, ...]
    hours: ServiceHours
    key: int
    baseline: float
    cooking: float
    battery: Battery

    def raw(self, t: float) -> Values:
        fumes = self.hours.activity(t) * self.cooking * (0.6 + 0.4 * smooth(self.key, t, 900))
        obscuration = self.baseline + 0.02 * white(self.key + 1, t, 10.0) + fumes
        return {
            "smoke_obs_pct_m": round(max(0.0, obscuration), 3),
            "alarm": False,
            "battery_pct": self.battery.level(t),
        }


@dataclass(frozen=True)
class DisinfectionCabinet(DeviceModel):
    """Runs a cycle `delay_s` after each service ends: heat up, hold ~120 °C, cool down."""

    device: Device
    specs: tuple[MetricSpec, ...]
    hours: ServiceHours
    key: int
    delay_s: float
    heat_s: float
    hold_s: float
    hold_c: float
    cool_tau_s: float

    def raw(self, t: float) -> Values:
        air = kitchen_air_c(self.hours, self.key, t)
        temp, running, minutes = air, False, 0.0
        start = self.hours.latest_end_before(t, self.delay_s)
        if start is not None:
            x = t - start
            run_s = self.heat_s + self.hold_s
            if x < self.heat_s:
                # Heater at full power: fast at first, slower as losses grow with temperature.
                reached = (1.0 - math.exp(-3.0 * x / self.heat_s)) / (1.0 - math.exp(-3.0))
                temp, running = air + (self.hold_c - air) * reached, True
            elif x < run_s:
                temp, running = self.hold_c + 0.8 * white(self.key + 1, t), True
            elif x < run_s + 8 * self.cool_tau_s:
                temp = air + (self.hold_c - air) * math.exp(-(x - run_s) / self.cool_tau_s)
            if running:
                minutes = round(x / 60.0, 1)
        return {"temp_c": round(temp, 1), "running": running, "cycle_min": minutes}


@dataclass(frozen=True)
class DoorSensor(DeviceModel):
    device: Device
    specs: tuple[MetricSpec, ...]
    door: Door
    battery: Battery

    def raw(self, t: float) -> Values:
        is_open, _, count = self.door.state(t)
        return {"door_open": is_open, "open_count": count, "battery_pct": self.battery.level(t)}


@dataclass(frozen=True)
class Gateway(DeviceModel):
    device: Device
    specs: tuple[MetricSpec, ...]
    key: int
    rssi_dbm: float
    reboot_every_s: float
    reboot_phase_s: float

    def raw(self, t: float) -> Values:
        rssi = self.rssi_dbm + 4.0 * smooth(self.key, t, 1800) + 1.5 * white(self.key + 1, t)
        return {
            "rssi_dbm": round(min(-45.0, max(-95.0, rssi)), 1),
            "uptime_s": int((t + self.reboot_phase_s) % self.reboot_every_s),
        }


@dataclass(frozen=True)
class KitchenCamera(DeviceModel):
    device: Device
    specs: tuple[MetricSpec, ...]
    hours: ServiceHours
    key: int
    fps: float
    base_kbps: float
    motion_kbps: float

    def raw(self, t: float) -> Values:
        # Motion (cooks at work) costs bits with a variable-bit-rate encoder.
        motion = self.hours.activity(t) * self.motion_kbps * (0.8 + 0.2 * smooth(self.key, t, 120))
        kbps = self.base_kbps + motion + 150.0 * smooth(self.key + 1, t, 300)
        return {
            "online": True,
            "fps": round(self.fps - 0.4 * uniform(self.key + 2, math.floor(t)), 1),
            "bitrate_kbps": round(kbps),
        }


def _builder(
    device: Device, hours: ServiceHours, specs: tuple[MetricSpec, ...], seed: int
) -> DeviceModel | None:
    g = generator(seed, device.device_id, "params")
    key = stable_key(seed, device.device_id, "noise")
    kind = device.type
    if kind in COLD_PROFILES:
        return _cold_storage(device, hours, specs, seed)
    if kind == "gas_detector":
        return GasDetector(device, specs, hours, key, _draw(g, (0.2, 0.6)), _draw(g, (1.5, 3.0)))
    if kind == "smoke_detector":
        return SmokeDetector(
            device,
            specs,
            hours,
            key,
            _draw(g, (0.06, 0.12)),
            _draw(g, (0.3, 0.8)),
            Battery.draw(g),
        )
    if kind == "disinfection_cabinet":
        return DisinfectionCabinet(
            device,
            specs,
            hours,
            key,
            delay_s=30 * 60,
            heat_s=_draw(g, (12, 18)) * 60,
            hold_s=_draw(g, (18, 22)) * 60,
            hold_c=_draw(g, (118, 123)),
            cool_tau_s=15 * 60,
        )
    if kind == "door_sensor":
        storeroom = DoorProfile(Rates(0.05, 3, 10, 4), (10, 90), (0.0, 0.0), 60)
        door = Door(
            stable_key(seed, device.device_id, "door"),
            hours,
            storeroom,
            _INSTALLED_BY - int(g.integers(0, 365)),
        )
        return DoorSensor(device, specs, door, Battery.draw(g))
    if kind == "gateway":
        every = _draw(g, (10, 40)) * DAY_S
        return Gateway(device, specs, key, _draw(g, (-75, -65)), every, float(g.uniform(0, every)))
    if kind == "kitchen_camera":
        fps = 25.0 if g.random() < 0.6 else 15.0
        return KitchenCamera(
            device, specs, hours, key, fps, _draw(g, (1100, 1800)), _draw(g, (800, 1800))
        )
    if kind == "street_camera":
        return StreetCamera.draw(device, specs, seed)
    return None


def model_for(
    device: Device, hours: ServiceHours, metrics: Mapping[str, Metric], seed: int
) -> DeviceModel | None:
    """The model of `device`, or None for a device type the simulator does not know."""
    return _builder(device, hours, specs_of(metrics), seed)


class KitchenModel:
    """One kitchen's devices, each a pure function of simulated epoch time."""

    def __init__(
        self,
        site_id: str,
        opening_hours: str,
        devices: Iterable[Device],
        metrics_of: Callable[[Device], Mapping[str, Metric]],
        seed: int,
    ) -> None:
        self.site_id = site_id
        self.hours = ServiceHours.parse(opening_hours)
        self.seed = seed
        self.models: dict[str, DeviceModel] = {}
        unknown: list[Device] = []
        for device in devices:
            model = model_for(device, self.hours, metrics_of(device), seed)
            if model is None:
                unknown.append(device)
            else:
                self.models[device.device_id] = model
        self.unmodelled = tuple(unknown)

    @classmethod
    def from_registry(cls, registry: Registry, site_id: str, seed: int) -> KitchenModel:
        site = registry.sites[site_id]
        return cls(
            site_id, site.opening_hours, registry.devices_at(site_id), registry.metrics_of, seed
        )

    def values(self, device_id: str, t: float) -> Values:
        return self.models[device_id].values(t)

    def snapshot(self, t: float) -> dict[str, Values]:
        return {device_id: model.values(t) for device_id, model in self.models.items()}
