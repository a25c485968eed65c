"""Liveness, readiness and Prometheus metrics; no token needed (probes and scrapers have none).

Both health endpoints list every background loop with its state, failures and last error.

* `/healthz`: is ingest taking data without losing any? 503 while ingest is not connected to
  the broker, or a loop ingest depends on (the telemetry writer, the alert rules) is down.
  InfluxDB or the alert database being away is `degraded`, not down: the spool and the
  alert outbox keep what arrives meanwhile.
* `/readyz`: is everything working? 503 while any loop is down or ingest is not connected.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.state import AppState, app_state

router = APIRouter(tags=["operations"])
State = Annotated[AppState, Depends(app_state)]


async def _report(state: AppState) -> tuple[dict[str, Any], bool, bool]:
    """The body, whether ingest is healthy, and whether everything is."""
    body: dict[str, Any] = {"inventory": state.registry.version}
    statuses = state.supervisor.statuses()
    body["loops"] = {s.name: s.as_dict() for s in statuses}
    critical_down = [s.name for s in statuses if s.critical and not s.up]
    any_down = [s.name for s in statuses if not s.up]
    connected = True
    if state.ingest is not None:
        health = state.ingest.health()
        body.update(health.as_dict())
        connected = health.mqtt_connected
    if state.cluster is not None:
        body["cluster"] = {
            "node_id": state.cluster.me.node_id,
            "joined": state.cluster.joined,
            "partitions": state.ingest.partitions if state.ingest is not None else [],
            "members": [
                {"node_id": m.node_id, "api_url": m.api_url} for m in state.cluster.members
            ],
        }
    body["influx_reachable"] = await state.influx.ping()
    healthy = connected and not critical_down
    ready = connected and not any_down
    body["down"] = any_down
    body["status"] = (
        "ok" if ready and body["influx_reachable"] else "degraded" if healthy else "down"
    )
    return body, healthy, ready


@router.get("/healthz", summary="Is ingest taking data without losing any?")
async def healthz(state: State) -> JSONResponse:
    """200 while ingest hears the broker and the loops it depends on run (`status` says
    `degraded` when InfluxDB, the alert database or another loop is away); 503 otherwise."""
    body, healthy, _ = await _report(state)
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/readyz", summary="Is every part of the service working?")
async def readyz(state: State) -> JSONResponse:
    """200 when every background loop runs and ingest hears the broker; 503 names what is
    down (`down`) with each loop's last error (`loops`)."""
    body, _, ready = await _report(state)
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics), media_type=CONTENT_TYPE_LATEST)
