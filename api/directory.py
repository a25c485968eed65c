"""The site and device directory, with when each last sent telemetry."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from api.auth import Caller, require_site
from api.state import AppState, app_state
from devices.models import Device, Site, SiteKind
from timeseries.queries import last_seen

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
    online: bool = Field(
        description="Reporting, and no open device_offline or camera_offline alert."
    )


class DeviceList(BaseModel):
    count: int
    reporting: int
    devices: list[DeviceView]


def _reporting(state: AppState, seen: int | None) -> bool:
    return seen is not None and seen >= (time.time() - state.settings.api.reporting_window_s) * 1000


OFFLINE_KINDS = ("device_offline", "camera_offline")


@router.get("/sites", response_model=SiteList, summary="Sites, with their latest telemetry")
async def list_sites(state: State, caller: Caller, kind: SiteKind | None = None) -> SiteList:
    seen = await last_seen(state.influx, "site_id", state.settings.api.last_seen_lookback_s)
    views = [
        SiteView(
            **site.model_dump(),
            devices=len(state.registry.devices_at(site.site_id)),
            last_seen_ms=seen.get(site.site_id),
            reporting=_reporting(state, seen.get(site.site_id)),
        )
        for site in state.registry.sites.values()
        if (kind is None or site.kind == kind) and caller.can_see(site.site_id)
    ]
    return SiteList(count=len(views), reporting=sum(v.reporting for v in views), sites=views)


@router.get(
    "/sites/{site_id}", response_model=SiteView, summary="One site, with its latest telemetry"
)
async def get_site(state: State, caller: Caller, site_id: str) -> SiteView:
    site = state.registry.sites.get(site_id)
    if site is None:
        raise HTTPException(404, f"no site {site_id!r} in the inventory")
    require_site(caller, site_id)
    seen = await last_seen(
        state.influx, "site_id", state.settings.api.last_seen_lookback_s, site_id=site_id
    )
    return SiteView(
        **site.model_dump(),
        devices=len(state.registry.devices_at(site_id)),
        last_seen_ms=seen.get(site_id),
        reporting=_reporting(state, seen.get(site_id)),
    )


@router.get("/devices", response_model=DeviceList, summary="Devices, with their latest telemetry")
async def list_devices(
    state: State,
    caller: Caller,
    site: Annotated[str | None, Query(description="Only the devices of this site.")] = None,
    type: Annotated[str | None, Query(description="Only devices of this type.")] = None,
) -> DeviceList:
    if site is not None:
        if site not in state.registry.sites:
            raise HTTPException(404, f"no site {site!r} in the inventory")
        require_site(caller, site)
    if type is not None and type not in state.registry.device_types:
        known = ", ".join(state.registry.device_types)
        raise HTTPException(422, f"no device type {type!r}; known types: {known}")
    devices = (
        state.registry.devices_at(site) if site is not None else state.registry.devices.values()
    )
    seen = await last_seen(
        state.influx, "device_id", state.settings.api.last_seen_lookback_s, site_id=site
    )
    offline = await asyncio.to_thread(
        state.alerts.devices_with_unresolved,
        OFFLINE_KINDS,
        frozenset({site}) if site else caller.site_scope,
    )
    views = []
    for device in devices:
        if (type is not None and device.type != type) or not caller.can_see(device.site_id):
            continue
        reporting = _reporting(state, seen.get(device.device_id))
        views.append(
            DeviceView(
                **device.model_dump(),
                last_seen_ms=seen.get(device.device_id),
                reporting=reporting,
                online=reporting and device.device_id not in offline,
            )
        )
    return DeviceList(count=len(views), reporting=sum(v.reporting for v in views), devices=views)
