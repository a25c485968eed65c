"""What the API handlers share, hung on `app.state` by the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from fastapi import Request
from prometheus_client import CollectorRegistry

from alerts.feed import ChangeFeed
from alerts.store import AlertStore
from analytics.video.profiles import ProfileBook
from api.guard import AuthGuard
from cluster.membership import Membership
from config.settings import Settings
from devices.audit import AuditLog
from devices.registry import Registry
from devices.sessions import SessionStore
from devices.tokens import TokenStore
from ingest.telemetry.pipeline import IngestService
from ingest.video.monitor import CameraMonitor
from ingest.video.pool import CameraPool
from service.supervisor import Supervisor
from timeseries.influx import InfluxQueryClient


@dataclass(frozen=True, slots=True, kw_only=True)
class AppState:
    settings: Settings
    registry: Registry
    influx: InfluxQueryClient
    ingest: IngestService | None  # None: this process serves the API only
    alerts: AlertStore
    tokens: TokenStore
    sessions: SessionStore  # the console's cookie sessions (api/session.py)
    feed: ChangeFeed
    changed: Callable[[], None]  # an API action changed alerts: wake the SSE feed and relay
    supervisor: Supervisor  # every background loop, for the health endpoints
    metrics: CollectorRegistry  # every Prometheus metric of the process
    profiles: ProfileBook  # each camera's analytics profile, as the workers use it
    cameras: CameraPool | None = None  # None: the video path is off
    camera_monitor: CameraMonitor | None = None
    cluster: Membership | None = None  # None: made by a test without one; a node alone
    peers: httpx.AsyncClient | None = None  # several nodes: requests passed to another node
    # Made from the fields above, so that whoever assembles the state need not know them.
    guard: AuthGuard = field(init=False)  # the failed-authentication slow-down (api/guard.py)
    audit: AuditLog = field(init=False)  # the audit trail, in the alert store's database

    def __post_init__(self) -> None:
        # Frozen: the dataclass's own way to set a field once, at construction.
        object.__setattr__(self, "guard", AuthGuard(self.settings.auth, self.metrics))
        object.__setattr__(self, "audit", AuditLog(self.alerts.engine))


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.mingliang
    return state
