"""What the API handlers share, hung on `app.state` by the lifespan."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from config.settings import Settings
from devices.registry import Registry
from ingest.influx import InfluxQueryClient
from ingest.service import IngestService


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    registry: Registry
    influx: InfluxQueryClient
    ingest: IngestService | None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.mingliang
    return state
