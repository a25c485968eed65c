"""The pure kitchen and street models: catalogue-conformant, daily rhythm, deterministic."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable

import pytest

from devices.models import Device, MetricType
from devices.registry import Registry
from simulators.clock import DAY_S, day_start, local_day, seconds_of_day
from simulators.hours import Phase, ServiceHours
from simulators.kitchen import KitchenModel
from simulators.street import street_models
from simulators.values import Values

SEED = 20261126
# A local day, and kitchens with different hours: elderly canteen, restaurant, hospital, company.
DAY = day_start(local_day(1_795_705_452))
KITCHENS = ("kitchen-0001", "kitchen-0002", "kitchen-0003", "kitchen-0004")


def hour(h: float) -> float:
    return DAY + h * 3600


def check_catalogue(registry: Registry, device: Device, values: Values) -> None:
    metrics = registry.metrics_of(device)
    assert set(values) <= set(metrics), f"{device.device_id}: {set(values) - set(metrics)}"
    # Everything but the optional fault text is reported every time.
    assert set(metrics) - set(values) <= {"fault"}, device.device_id
    for name, value in values.items():
        metric = metrics[name]
        if metric.type is MetricType.BOOL:
            assert type(value) is bool, (device.device_id, name, value)
        elif metric.type is MetricType.INT:
            assert type(value) is int, (device.device_id, name, value)
        elif metric.type is MetricType.FLOAT:
            assert type(value) is float, (device.device_id, name, value)
        else:
            assert type(value) is str and len(value) <= metric.max_length
        if metric.type in (MetricType.INT, MetricType.FLOAT):
            assert isinstance(value, int | float)
            assert metric.min is None or value >= metric.min, (device.device_id, name, value)
            assert metric.max is None or value <= metric.max, (device.device_id, name, value)


@pytest.fixture(scope="module")
def kitchens(registry: Registry) -> dict[str, KitchenModel]:
    return {k: KitchenModel.from_registry(registry, k, SEED) for k in KITCHENS}


def series(
    model: KitchenModel, kind: str, metric: str, start_h: float, end_h: float, step_s: float = 60
) -> list[float]:
    device_id = next(d for d, m in model.models.items() if m.device.type == kind)
    out = []
    t = hour(start_h)
    while t < hour(end_h):
        value = model.values(device_id, t)[metric]
        assert isinstance(value, int | float)
        out.append(float(value))
        t += step_s
    return out


def test_a_whole_day_stays_in_the_catalogue(
    registry: Registry, kitchens: dict[str, KitchenModel]
) -> None:
    for model in kitchens.values():
        assert not model.unmodelled
        assert set(model.models) == {d.device_id for d in registry.devices_at(model.site_id)}
        for minute in range(0, 24 * 60 + 30, 2):  # and into the next day
            t = DAY + minute * 60 + 7.3
            for device_id, values in model.snapshot(t).items():
                check_catalogue(registry, registry.devices[device_id], values)


def test_street_cameras_stay_in_the_catalogue(registry: Registry) -> None:
    models = street_models(registry, SEED)
    assert len(models) == 1500
    for model in list(models.values())[:50]:
        for minute in range(0, 24 * 60, 10):
            values = model.values(DAY + minute * 60)
            check_catalogue(registry, model.device, values)
            assert values["online"] is True
            assert 1000 <= float(values["bitrate_kbps"]) <= 6000


def test_opening_hours_give_the_day_its_phases() -> None:
    hours = ServiceHours.parse("10:30-14:00;16:30-21:30")
    assert hours.phase(hour(12)) is Phase.SERVICE
    assert hours.phase(hour(10)) is Phase.PREP
    assert hours.phase(hour(15)) is Phase.STAFF
    assert hours.phase(hour(3)) is Phase.NIGHT
    assert hours.activity(hour(12)) == 1.0
    assert hours.activity(hour(3)) == 0.0
    assert 0.0 < hours.activity(hour(10)) < 1.0
    late = ServiceHours.parse("18:00-02:00")
    assert late.phase(hour(1)) is Phase.SERVICE
    with pytest.raises(ValueError, match="25:00"):
        ServiceHours.parse("10:00-25:00")


def rising_edges(states: list[bool]) -> list[int]:
    return [i for i in range(1, len(states)) if states[i] and not states[i - 1]]


def test_fridge_doors_open_more_during_service_than_at_night(
    kitchens: dict[str, KitchenModel],
) -> None:
    model = kitchens["kitchen-0002"]  # restaurant, 10:30-14:00;16:30-21:30
    fridge = next(d for d, m in model.models.items() if m.device.type == "fridge")
    step = 3.0
    times = [hour(0) + i * step for i in range(int(DAY_S / step))]
    states = [bool(model.values(fridge, t)["door_open"]) for t in times]
    opened = [times[i] for i in rising_edges(states)]
    service_h = 3.5 + 5.0
    in_service = sum(1 for t in opened if model.hours.in_service(t)) / service_h
    at_night = sum(1 for t in opened if seconds_of_day(t) < 5 * 3600) / 5.0
    assert in_service >= 6, in_service  # openings per hour
    assert in_service > 10 * max(at_night, 0.1), (in_service, at_night)


def test_cold_chain_temperatures_are_plausible(kitchens: dict[str, KitchenModel]) -> None:
    for model in kitchens.values():
        fridge = series(model, "fridge", "temp_c", 0, 24)
        assert 2.5 < statistics.mean(fridge) < 5.5
        assert min(fridge) > 1.0
        assert max(fridge) < 9.0
        # A defrost every ~6 h lifts the fridge 2-3 °C above its night-time median.
        assert max(fridge) - statistics.median(fridge) > 1.5

        freezer = series(model, "freezer", "temp_c", 0, 24)
        assert -19.5 < statistics.median(freezer) < -16.5
        assert -13.0 < max(freezer) < -6.0  # defrost every ~8 h, up to about -10 °C

        cold_room = series(model, "cold_room", "temp_c", 0, 24)
        assert 1.0 < statistics.mean(cold_room) < 4.0
        humidity = series(model, "cold_room", "humidity_pct", 0, 24)
        assert 78 < statistics.mean(humidity) < 92


def test_cooking_raises_gas_and_smoke_far_below_alarm(kitchens: dict[str, KitchenModel]) -> None:
    model = kitchens["kitchen-0002"]
    for kind, metric, margin, ceiling in (
        ("gas_detector", "gas_lel_pct", 0.5, 10.0),
        ("smoke_detector", "smoke_obs_pct_m", 0.1, 2.0),
    ):
        service = series(model, kind, metric, 11, 13.5)
        night = series(model, kind, metric, 1, 5)
        assert statistics.mean(service) > statistics.mean(night) + margin
        assert max(service + night) < ceiling
        device_id = next(d for d, m in model.models.items() if m.device.type == kind)
        assert not any(model.values(device_id, hour(h / 4))["alarm"] for h in range(96))


def test_disinfection_cycle_runs_after_each_service(kitchens: dict[str, KitchenModel]) -> None:
    model = kitchens["kitchen-0002"]  # services end at 14:00 and 21:30
    cabinet = next(d for d, m in model.models.items() if m.device.type == "disinfection_cabinet")

    def at(h: float) -> Values:
        return model.values(cabinet, hour(h))

    for end in (14.0, 21.5):
        assert at(end + 0.25)["running"] is False
        assert at(end + 0.25)["cycle_min"] == 0.0
        heating = at(end + 0.5 + 5 / 60)
        assert heating["running"] is True
        assert 4.9 <= float(heating["cycle_min"]) <= 5.1
        holding = at(end + 0.5 + 25 / 60)
        assert holding["running"] is True
        assert float(holding["temp_c"]) >= 115
        assert 24.9 <= float(holding["cycle_min"]) <= 25.1
        assert at(end + 1.5)["running"] is False
    night = at(4.0)
    assert night["running"] is False
    assert 18 < float(night["temp_c"]) < 32


def test_door_sensor_counts_up_across_midnight(kitchens: dict[str, KitchenModel]) -> None:
    counts = series(kitchens["kitchen-0003"], "door_sensor", "open_count", 16, 32, step_s=30)
    assert all(b >= a for a, b in itertools.pairwise(counts))
    assert counts[-1] > counts[0]


def test_gateway_and_cameras(kitchens: dict[str, KitchenModel]) -> None:
    model = kitchens["kitchen-0001"]
    rssi = series(model, "gateway", "rssi_dbm", 0, 24, step_s=600)
    assert all(-95 <= r <= -45 for r in rssi)
    assert -82 < statistics.mean(rssi) < -58
    uptime = series(model, "gateway", "uptime_s", 0, 1, step_s=600)
    assert uptime == sorted(uptime)
    fps = series(model, "kitchen_camera", "fps", 0, 24, step_s=600)
    assert all(14 <= f <= 15 for f in fps) or all(24 <= f <= 25 for f in fps)
    kbps = series(model, "kitchen_camera", "bitrate_kbps", 0, 24, step_s=300)
    assert min(kbps) > 900 and max(kbps) < 4000


def snapshots(registry: Registry, seed: int) -> list[dict[str, Values]]:
    model = KitchenModel.from_registry(registry, "kitchen-0005", seed)
    return [model.snapshot(hour(h)) for h in (0.1, 8.2, 12.3, 17.9, 23.95)]


def test_same_seed_same_values_other_seed_other_values(registry: Registry) -> None:
    first = snapshots(registry, 1)
    assert snapshots(registry, 1) == first
    assert snapshots(registry, 2) != first


def test_values_are_a_function_of_time_not_of_call_order(registry: Registry) -> None:
    model: Callable[[], KitchenModel] = lambda: KitchenModel.from_registry(  # noqa: E731
        registry, "kitchen-0006", 3
    )
    forward, backward = model(), model()
    times = [hour(h / 3) for h in range(72)]
    ahead = [forward.snapshot(t) for t in times]
    behind = [backward.snapshot(t) for t in reversed(times)]
    assert ahead == list(reversed(behind))
