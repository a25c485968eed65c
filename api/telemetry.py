"""A device's readings over time, read from InfluxDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from api.auth import Caller, require_site
from api.state import AppState, app_state
from timeseries import queries

router = APIRouter(prefix="/api/v1", tags=["telemetry"])
State = Annotated[AppState, Depends(app_state)]


class TelemetryResponse(BaseModel):
    device_id: str
    site_id: str
    metrics: list[str]
    units: dict[str, str]
    since: datetime
    until: datetime
    every: str | None
    points: list[dict[str, Any]] = Field(
        description='Rows {"ts": RFC 3339, "<metric>": value, ...}, oldest first.'
    )
    truncated: bool = Field(description="More points exist: narrow the range or use `every`.")


@router.get(
    "/devices/{device_id}/telemetry",
    response_model=TelemetryResponse,
    summary="A device's readings, raw or aggregated per interval",
)
async def device_telemetry(
    state: State,
    caller: Caller,
    device_id: str,
    metric: Annotated[
        list[str] | None, Query(description="Metric(s) to return; all of the type's by default.")
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Start (RFC 3339); default one hour before `until`.")
    ] = None,
    until: Annotated[datetime | None, Query(description="End (RFC 3339); default now.")] = None,
    every: Annotated[
        str | None,
        Query(
            description="Aggregate per interval (30s, 5m, 1h, 1d): mean of numbers, last of the "
            "rest. Raw readings when absent.",
            pattern=queries.EVERY_RE.pattern,
        ),
    ] = None,
) -> TelemetryResponse:
    device = state.registry.devices.get(device_id)
    if device is None:
        raise HTTPException(404, f"no device {device_id!r} in the inventory")
    require_site(caller, device.site_id)
    catalogue = state.registry.metrics_of(device)
    unknown = [m for m in metric or [] if m not in catalogue]
    if unknown:
        raise HTTPException(
            422,
            f"{', '.join(map(repr, unknown))} not a metric of {device.type!r}; "
            f"known: {', '.join(catalogue)}",
        )
    until = _aware(until) if until else datetime.now(UTC)
    since = _aware(since) if since else until - timedelta(hours=1)
    if since >= until:
        raise HTTPException(422, f"since ({since.isoformat()}) must be before until")
    max_points = state.settings.api.max_points
    if every is not None:
        buckets = (until - since).total_seconds() / queries.every_seconds(every)
        if buckets > max_points:
            raise HTTPException(
                422,
                f"{int(buckets)} intervals of {every} in the range; the limit is {max_points}: "
                "use a longer `every` or a shorter range",
            )
    chosen = [catalogue[m] for m in metric] if metric else list(catalogue.values())
    page = await queries.telemetry(state.influx, device_id, chosen, since, until, every, max_points)
    return TelemetryResponse(
        device_id=device_id,
        site_id=device.site_id,
        metrics=list(page.metrics),
        units={m.name: m.unit for m in chosen},
        since=since,
        until=until,
        every=every,
        points=page.points,
        truncated=page.truncated,
    )


# InfluxDB time stamps are 64-bit nanoseconds: 1677-09-21 to 2262-04-11.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2262, 1, 1, tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise HTTPException(422, f"{moment.isoformat()} has no time zone: add Z or +08:00")
    if not EARLIEST <= moment <= LATEST:
        raise HTTPException(422, f"{moment.isoformat()} is outside {EARLIEST.year}-{LATEST.year}")
    return moment
