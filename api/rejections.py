"""What ingest refused, for the operator who has to find out why a device's data is missing."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from api.auth import Caller, require_admin
from api.state import AppState, app_state

router = APIRouter(prefix="/api/v1/ingest", tags=["operations"])
State = Annotated[AppState, Depends(app_state)]


class Rejected(BaseModel):
    at: str
    reason: str
    detail: str
    topic: str
    payload: str
    payload_bytes: int


class RejectedList(BaseModel):
    source: str
    count: int
    items: list[Rejected]


@router.get("/rejections", response_model=RejectedList, summary="Recent refused input")
async def rejections(
    state: State,
    caller: Caller,
    reason: Annotated[str | None, Query(description="Only this reason.")] = None,
    source: Annotated[
        Literal["contract", "influx"],
        Query(description="contract: broke the MQTT contract; influx: refused by InfluxDB."),
    ] = "contract",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RejectedList:
    require_admin(caller)  # payloads of every site
    if state.ingest is None:
        raise HTTPException(404, "ingest does not run in this process")
    log = state.ingest.rejects if source == "contract" else state.ingest.dead_letters
    items = [Rejected(**asdict(r)) for r in log.recent(reason, limit)]
    return RejectedList(source=str(log.path), count=len(items), items=items)
