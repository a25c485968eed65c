"""What the API handlers share, hung on `app.state` by the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from config.settings import Settings
from devices.registry import Registry
from ingest.alertstore import AlertStore
from ingest.camera_monitor import CameraMonitor
from ingest.camera_pool import CameraPool
from ingest.influx import InfluxQueryClient
from ingest.service import IngestService
from ingest.tokens import TokenStore

if TYPE_CHECKING:
    from api.stream import ChangeFeed


@dataclass(frozen=True, slots=True)
class AppState:
    settings: Settings
    registry: Registry
    influx: InfluxQueryClient
    ingest: IngestService | None
    alerts: AlertStore
    tokens: TokenStore
    feed: ChangeFeed
    changed: Callable[[], None]  # an API action changed alerts: wake the SSE feed and relay
    cameras: CameraPool | None = None  # None: the video path is off
    camera_monitor: CameraMonitor | None = None


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.mingliang
    return state
