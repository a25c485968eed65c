"""The district inventory, loaded from config/inventory and validated as a whole.

The manifest (inventory.toml) names a version and three files: the metric catalogue and
device types (TOML), the sites (CSV) and the devices (CSV). CSV because district inventories
come out of spreadsheets. Every error names the file, the line and the column.
"""

from __future__ import annotations

import csv
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.redact import redact
from devices.models import CAMERA_TYPES, Device, DeviceType, Metric, Site, SiteKind, Stream


class InventoryError(Exception):
    """The inventory files are not usable; the message says where and why."""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(description="Inventory version, bumped on every change.", min_length=1)
    description: str = Field("", description="What this inventory covers.")
    device_types: str = Field(description="Metric catalogue and device types (TOML).")
    sites: str = Field(description="Sites file (CSV).")
    devices: str = Field(description="Devices file (CSV).")
    streams: str = Field("", description="Pull addresses of cameras that cannot push (CSV).")


@dataclass(frozen=True)
class Registry:
    """Lookups over a validated inventory. Built by `load_registry`."""

    version: str
    metrics: Mapping[str, Metric]
    device_types: Mapping[str, DeviceType]
    sites: Mapping[str, Site]
    devices: Mapping[str, Device]
    _by_site: Mapping[str, tuple[Device, ...]] = field(repr=False)
    streams: Mapping[str, Stream] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        version: str,
        metrics: Iterable[Metric],
        device_types: Iterable[DeviceType],
        sites: Iterable[Site],
        devices: Iterable[Device],
        streams: Iterable[Stream] = (),
    ) -> Registry:
        by_site: dict[str, list[Device]] = {}
        device_list = list(devices)
        for device in device_list:
            by_site.setdefault(device.site_id, []).append(device)
        return cls(
            version=version,
            metrics={m.name: m for m in metrics},
            device_types={t.name: t for t in device_types},
            sites={s.site_id: s for s in sites},
            devices={d.device_id: d for d in device_list},
            _by_site={k: tuple(v) for k, v in by_site.items()},
            streams={s.camera_id: s for s in streams},
        )

    def devices_at(self, site_id: str) -> tuple[Device, ...]:
        return self._by_site.get(site_id, ())

    def sites_of_kind(self, kind: SiteKind) -> list[Site]:
        return [s for s in self.sites.values() if s.kind == kind]

    def cameras(self) -> list[Device]:
        return [d for d in self.devices.values() if d.type in CAMERA_TYPES]

    def with_streams(self, streams: Iterable[Stream]) -> Registry:
        """The same inventory with these pull addresses instead (tests, the demo)."""
        return replace(self, streams={s.camera_id: s for s in streams})

    def metrics_of(self, device: Device) -> dict[str, Metric]:
        return {name: self.metrics[name] for name in self.device_types[device.type].metrics}


_M = TypeVar("_M", bound=BaseModel)


def _describe(where: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(record)"
        if err["type"] == "extra_forbidden":
            parts.append(f"{where}, {key}: unknown field")
        else:
            # A stream's URL may carry a camera's password.
            parts.append(f"{where}, {key}: {err['msg']} (got {redact(repr(err.get('input')))})")
    return "; ".join(parts)


def _read_csv(path: Path, model: type[_M]) -> Iterator[tuple[int, _M]]:
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise InventoryError(f"{path}: cannot open: {exc.strerror}") from exc
    with fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise InventoryError(f"{path}: empty file, expected a header line")
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row:
                raise InventoryError(f"{where}: more cells than the header has columns")
            # Empty cells mean "not given" so that the model's default applies.
            data = {k: v for k, v in row.items() if v != ""}
            try:
                yield reader.line_num, model.model_validate(data)
            except ValidationError as exc:
                raise InventoryError(_describe(where, exc)) from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise InventoryError(f"{path}: cannot open: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"{path}: not valid TOML: {exc}") from exc


def _validated(model: type[_M], data: Any, where: str) -> _M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InventoryError(_describe(where, exc)) from exc


def _load_types(path: Path) -> tuple[list[Metric], list[DeviceType]]:
    raw = _read_toml(path)
    unknown = set(raw) - {"metrics", "types"}
    if unknown:
        raise InventoryError(f"{path}: unknown table(s) {sorted(unknown)}")
    metrics = [
        _validated(Metric, {"name": name, **body}, f"{path}, metrics.{name}")
        for name, body in raw.get("metrics", {}).items()
    ]
    names = {m.name for m in metrics}
    types = []
    for name, body in raw.get("types", {}).items():
        dtype = _validated(DeviceType, {"name": name, **body}, f"{path}, types.{name}")
        for metric in dtype.metrics:
            if metric not in names:
                raise InventoryError(f"{path}, types.{name}.metrics: unknown metric {metric!r}")
        types.append(dtype)
    return metrics, types


def load_registry(manifest_path: Path) -> Registry:
    """Load and cross-check the whole inventory; raise InventoryError on the first problem."""
    manifest = _validated(Manifest, _read_toml(manifest_path), str(manifest_path))
    base = manifest_path.parent
    types_path, sites_path, devices_path = (
        base / manifest.device_types,
        base / manifest.sites,
        base / manifest.devices,
    )
    metrics, device_types = _load_types(types_path)
    type_names = {t.name for t in device_types}

    sites: dict[str, Site] = {}
    for line, site in _read_csv(sites_path, Site):
        if site.site_id in sites:
            raise InventoryError(f"{sites_path} line {line}, site_id: duplicate {site.site_id!r}")
        sites[site.site_id] = site

    devices: dict[str, Device] = {}
    for line, device in _read_csv(devices_path, Device):
        where = f"{devices_path} line {line}"
        if device.device_id in devices:
            raise InventoryError(f"{where}, device_id: duplicate {device.device_id!r}")
        if device.site_id not in sites:
            raise InventoryError(f"{where}, site_id: unknown site {device.site_id!r}")
        if device.type not in type_names:
            raise InventoryError(f"{where}, type: unknown device type {device.type!r}")
        devices[device.device_id] = device

    streams: dict[str, Stream] = {}
    if manifest.streams:
        streams_path = base / manifest.streams
        for line, stream in _read_csv(streams_path, Stream):
            where = f"{streams_path} line {line}, camera_id"
            camera = devices.get(stream.camera_id)
            if camera is None:
                raise InventoryError(f"{where}: unknown device {stream.camera_id!r}")
            if camera.type not in CAMERA_TYPES:
                raise InventoryError(f"{where}: {stream.camera_id!r} is a {camera.type}")
            if stream.camera_id in streams:
                raise InventoryError(f"{where}: duplicate {stream.camera_id!r}")
            streams[stream.camera_id] = stream

    return Registry.build(
        manifest.version,
        metrics,
        device_types,
        sites.values(),
        devices.values(),
        streams.values(),
    )
