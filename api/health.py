"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.state import AppState, app_state

router = APIRouter(tags=["operations"])
State = Annotated[AppState, Depends(app_state)]


@router.get("/healthz", summary="Is ingest taking data without losing any?")
async def healthz(state: State) -> JSONResponse:
    """200 while ingest is connected to the broker and its writer runs (InfluxDB may be away:
    the spool covers it, and `status` says `degraded`); 503 otherwise."""
    body: dict[str, Any] = {"inventory": state.registry.version}
    ok = True
    if state.ingest is not None:
        health = state.ingest.health()
        body.update(health.as_dict())
        ok = health.ok
    body["influx_reachable"] = await state.influx.ping()
    if state.ingest is None:
        body["status"] = "ok" if body["influx_reachable"] else "degraded"
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(state: State) -> Response:
    payload = generate_latest(state.ingest.metrics.registry) if state.ingest else b""
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
