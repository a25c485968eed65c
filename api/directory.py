"""The site and device directory, with when each last sent telemetry."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from api.state import AppState, app_state
from devices.models import Device, Site, SiteKind
from ingest.queries import last_seen

router = APIRouter(prefix="/api/v1", tags=["directory"])
State = Annotated[AppState, Depends(app_state)]


class SiteView(Site):
    devices: int = Field(description="Devices registered at the site.")
    last_seen_ms: int | None = Field(
        description="Epoch ms of the newest telemetry from any device of the site, if any "
        "arrived within the look-back."
    )
    reporting: bool = Field(description="Telemetry arrived within the reporting window.")


class SiteList(BaseModel):
    count: int
    reporting: int = Field(description="Sites that sent telemetry within the reporting window.")
    sites: list[SiteView]


class DeviceView(Device):
    last_seen_ms: int | None
    reporting: bool


class DeviceList(BaseModel):
    count: int
    reporting: int
    devices: list[DeviceView]


def _reporting(state: AppState, seen: int | None) -> bool:
    return seen is not None and seen >= (time.time() - state.settings.api.reporting_window_s) * 1000


@router.get("/sites", response_model=SiteList, summary="Sites, with their latest telemetry")
async def list_sites(state: State, kind: SiteKind | None = None) -> SiteList:
    seen = await last_seen(state.influx, "site_id", state.settings.api.last_seen_lookback_s)
    views = [
        SiteView(
            **site.model_dump(),
            devices=len(state.registry.devices_at(site.site_id)),
            last_seen_ms=seen.get(site.site_id),
            reporting=_reporting(state, seen.get(site.site_id)),
        )
        for site in state.registry.sites.values()
        if kind is None or site.kind == kind
    ]
    return SiteList(count=len(views), reporting=sum(v.reporting for v in views), sites=views)


@router.get("/devices", response_model=DeviceList, summary="Devices, with their latest telemetry")
async def list_devices(
    state: State,
    site: Annotated[str | None, Query(description="Only the devices of this site.")] = None,
    type: Annotated[str | None, Query(description="Only devices of this type.")] = None,
) -> DeviceList:
    if site is not None and site not in state.registry.sites:
        raise HTTPException(404, f"no site {site!r} in the inventory")
    if type is not None and type not in state.registry.device_types:
        known = ", ".join(state.registry.device_types)
        raise HTTPException(422, f"no device type {type!r}; known types: {known}")
    devices = (
        state.registry.devices_at(site) if site is not None else state.registry.devices.values()
    )
    seen = await last_seen(
        state.influx, "device_id", state.settings.api.last_seen_lookback_s, site_id=site
    )
    views = [
        DeviceView(
            **device.model_dump(),
            last_seen_ms=seen.get(device.device_id),
            reporting=_reporting(state, seen.get(device.device_id)),
        )
        for device in devices
        if type is None or device.type == type
    ]
    return DeviceList(count=len(views), reporting=sum(v.reporting for v in views), devices=views)
