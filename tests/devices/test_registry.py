from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from devices.generate import generate
from devices.models import SiteKind
from devices.registry import InventoryError, Registry, load_registry
from tests.conftest import INVENTORY

KITCHEN_SENSORS = {
    "gateway", "fridge", "freezer", "cold_room", "gas_detector",
    "smoke_detector", "disinfection_cabinet", "door_sensor",
}  # fmt: skip


def test_district_has_254_kitchens_with_every_sensor_and_a_camera(registry: Registry) -> None:
    kitchens = registry.sites_of_kind(SiteKind.KITCHEN)
    assert len(kitchens) == 254
    for site in kitchens:
        types = Counter(d.type for d in registry.devices_at(site.site_id))
        assert set(types) >= KITCHEN_SENSORS, site.site_id
        assert types["kitchen_camera"] >= 1, site.site_id
        assert site.opening_hours


def test_district_has_1500_street_cameras_grouped_by_grid(registry: Registry) -> None:
    cameras = [d for d in registry.devices.values() if d.type == "street_camera"]
    assert len(cameras) == 1500
    grids = {d.site_id for d in cameras}
    assert all(registry.sites[g].kind is SiteKind.STREET_GRID for g in grids)
    assert all(d.location for d in cameras)  # the street it watches


def test_every_device_type_metric_is_in_the_catalogue(registry: Registry) -> None:
    for device in registry.devices.values():
        assert registry.metrics_of(device)


def test_committed_inventory_is_the_generators_output(tmp_path: Path) -> None:
    for name in ("inventory.toml", "device_types.toml"):
        shutil.copy(INVENTORY.parent / name, tmp_path / name)
    generate(tmp_path)
    for name in ("sites.csv", "devices.csv"):
        assert (tmp_path / name).read_bytes() == (INVENTORY.parent / name).read_bytes(), name


@pytest.fixture
def inventory_copy(tmp_path: Path) -> Path:
    for path in INVENTORY.parent.iterdir():
        if path.is_file():
            shutil.copy(path, tmp_path / path.name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_unknown_device_type_names_file_line_and_column(inventory_copy: Path) -> None:
    devices = inventory_copy / "devices.csv"
    _edit(
        devices,
        "kitchen-0001-fridge-1,kitchen-0001,fridge,",
        "kitchen-0001-fridge-1,kitchen-0001,fridgee,",
    )
    with pytest.raises(InventoryError) as err:
        load_registry(inventory_copy / "inventory.toml")
    assert f"{devices} line 3, type: unknown device type 'fridgee'" in str(err.value)


def test_bad_id_names_the_field_and_value(inventory_copy: Path) -> None:
    sites = inventory_copy / "sites.csv"
    _edit(sites, "kitchen-0002,", "Kitchen 2,")
    with pytest.raises(InventoryError) as err:
        load_registry(inventory_copy / "inventory.toml")
    assert f"{sites} line 3, site_id" in str(err.value)
    assert "'Kitchen 2'" in str(err.value)


def test_device_at_unknown_site_and_duplicates_are_refused(inventory_copy: Path) -> None:
    devices = inventory_copy / "devices.csv"
    _edit(devices, "kitchen-0001-gw,kitchen-0001,", "kitchen-0001-gw,kitchen-9999,")
    with pytest.raises(InventoryError, match="line 2, site_id: unknown site 'kitchen-9999'"):
        load_registry(inventory_copy / "inventory.toml")
    _edit(devices, "kitchen-0001-gw,kitchen-9999,", "kitchen-0001-fridge-1,kitchen-0001,")
    with pytest.raises(InventoryError, match="device_id: duplicate 'kitchen-0001-fridge-1'"):
        load_registry(inventory_copy / "inventory.toml")


def test_unknown_column_and_unknown_metric_are_refused(inventory_copy: Path) -> None:
    types = inventory_copy / "device_types.toml"
    _edit(types, '"temp_c", "humidity_pct", "door_open"', '"temp_c", "humidty_pct", "door_open"')
    with pytest.raises(
        InventoryError, match=r"types\.fridge\.metrics: unknown metric 'humidty_pct'"
    ):
        load_registry(inventory_copy / "inventory.toml")
    shutil.copy(INVENTORY.parent / "device_types.toml", types)
    sites = inventory_copy / "sites.csv"
    _edit(sites, "site_id,kind,", "site_id,colour,kind,")
    with pytest.raises(InventoryError, match="unknown field"):
        load_registry(inventory_copy / "inventory.toml")


def test_streams_name_cameras_of_the_inventory(inventory_copy: Path, registry: Registry) -> None:
    assert set(registry.streams) == {f"street-cam-0000{n}" for n in (1, 2, 3, 4)}
    streams = inventory_copy / "streams.csv"
    _edit(streams, "street-cam-00002,", "kitchen-0001-fridge-1,")
    with pytest.raises(InventoryError) as err:
        load_registry(inventory_copy / "inventory.toml")
    assert f"{streams} line 3, camera_id: 'kitchen-0001-fridge-1' is a fridge" in str(err.value)
    _edit(streams, "kitchen-0001-fridge-1,rtsp://", "street-cam-00002,http://")
    with pytest.raises(InventoryError) as err:
        load_registry(inventory_copy / "inventory.toml")
    assert "url: String should match pattern" in str(err.value)
