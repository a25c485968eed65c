"""Who is who: sites, devices, device types and the metric catalogue, as validated records."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}[a-z0-9]$"
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"

Identifier = Annotated[str, Field(pattern=ID_PATTERN, description="Lower-case id, a-z 0-9 -")]
Name = Annotated[str, Field(pattern=NAME_PATTERN, description="snake_case name")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricType(StrEnum):
    FLOAT = "float"
    INT = "int"
    BOOL = "bool"
    STRING = "string"


class Metric(_Record):
    name: Name = Field(description="Field name in payloads and in InfluxDB.")
    type: MetricType = Field(description="Value type; also the InfluxDB field type.")
    unit: str = Field("", description="Unit of measure, for display.", max_length=16)
    min: float | None = Field(None, description="Smallest physically possible value.")
    max: float | None = Field(None, description="Largest physically possible value.")
    max_length: int = Field(256, description="Longest string value.", ge=1, le=65536)
    description: str = Field(description="What the value is.", min_length=1)

    @model_validator(mode="after")
    def _bounds_fit_type(self) -> Metric:
        numeric = self.type in (MetricType.FLOAT, MetricType.INT)
        if not numeric and (self.min is not None or self.max is not None):
            raise ValueError(f"min/max make no sense for a {self.type} metric")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class DeviceType(_Record):
    name: Name = Field(description="Type name, as used in the devices file.")
    description: str = Field(description="What the device is.", min_length=1)
    metrics: tuple[Name, ...] = Field(description="Metrics the type reports.", min_length=1)


class SiteKind(StrEnum):
    KITCHEN = "kitchen"
    STREET_GRID = "street_grid"


class Site(_Record):
    site_id: Identifier = Field(description="Stable id; the {site_id} of MQTT topics.")
    kind: SiteKind = Field(description="Sunshine kitchen or street governance grid.")
    name: str = Field(description="Display name.", min_length=1, max_length=200)
    subdistrict: str = Field(description="Sub-district (jiedao) the site belongs to.", min_length=1)
    address: str = Field(description="Street address or grid description.", min_length=1)
    category: str = Field("", description="Kitchen category (school canteen, restaurant...).")
    opening_hours: str = Field(
        "",
        description="Service hours as 'HH:MM-HH:MM' ranges separated by ';'; empty for grids.",
        pattern=r"^$|^\d\d:\d\d-\d\d:\d\d(;\d\d:\d\d-\d\d:\d\d)*$",
    )
    lat: float = Field(description="Latitude (WGS 84).", ge=-90, le=90)
    lon: float = Field(description="Longitude (WGS 84).", ge=-180, le=180)


class Device(_Record):
    device_id: Identifier = Field(description="Stable id; the {device_id} of MQTT topics.")
    site_id: Identifier = Field(description="Site the device is installed at.")
    type: Name = Field(description="Device type from device_types.toml.")
    name: str = Field(description="Display name.", min_length=1, max_length=200)
    location: str = Field("", description="Where on the site (street for street cameras).")


CAMERA_TYPES = frozenset({"kitchen_camera", "street_camera"})


class Stream(_Record):
    """Where a camera that cannot push its video is pulled from."""

    camera_id: Identifier = Field(description="A device of a camera type.")
    url: str = Field(
        description="rtsp:// or rtsps:// address, credentials included if the camera needs them.",
        pattern=r"^rtsps?://[^\s]+$",
        max_length=2000,
    )
