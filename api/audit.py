"""The audit trail, for administrators: who changed which alert, token, session or device
credential, when, and from where (devices/audit.py records it)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from api.auth import Caller, require_admin
from api.params import NAME
from api.state import AppState, app_state
from devices.audit import MAX_NAME, MAX_PAGE, AuditEntry, AuditFilter

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
State = Annotated[AppState, Depends(app_state)]
Name = Annotated[str | None, Query(min_length=1, max_length=MAX_NAME, pattern=NAME)]
Moment = Annotated[int | None, Query(ge=0, le=2**63 - 1)]


class AuditEntryView(BaseModel):
    id: int = Field(description="Orders the trail: a later entry has a larger id.")
    at_ms: int = Field(description="When (epoch ms).")
    actor: str = Field(
        description="Who: a token's name, rule:<rule> or system for the alert engine, "
        "cli:<user>@<host> for a command line."
    )
    action: str = Field(description="What happened, as <target kind>.<change>: alert.acknowledged.")
    target_kind: str = Field(description="alert, token, camera_token, session, credential.")
    target_id: str = Field(description="Which one: an alert id, a token's or a camera's name.")
    site_id: str | None = Field(description="The site it belongs to, when it belongs to one.")
    source: str | None = Field(
        description="From where: the client address of an API call, rules for the alert "
        "engine, cli:<user>@<host> for a command line."
    )
    details: dict[str, Any] = Field(description="A few facts of the change; never a secret.")

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryView:
        return cls(
            id=entry.id,
            at_ms=entry.at_ms,
            actor=entry.actor,
            action=entry.action,
            target_kind=entry.target_kind,
            target_id=entry.target_id,
            site_id=entry.site_id,
            source=entry.source,
            details=entry.details,
        )


class AuditPageView(BaseModel):
    items: list[AuditEntryView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next, older page.")


@router.get(
    "",
    response_model=AuditPageView,
    summary="The audit trail, newest first, filtered and paged (administrators only)",
    responses={403: {"description": "The caller is not an administrator."}},
)
async def audit(
    state: State,
    caller: Caller,
    actor: Name = None,
    action: Name = None,
    target_kind: Name = None,
    target_id: Name = None,
    site_id: Name = None,
    since_ms: Annotated[Moment, Query(description="At or after (epoch ms).")] = None,
    until_ms: Annotated[Moment, Query(description="Before (epoch ms).")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
) -> AuditPageView:
    require_admin(caller)
    flt = AuditFilter(
        actor=actor,
        action=action,
        target_kind=target_kind,
        target_id=target_id,
        site_id=site_id,
        since_ms=since_ms,
        until_ms=until_ms,
    )
    try:
        page = await asyncio.to_thread(state.audit.list, flt, cursor, limit)
    except ValueError as exc:  # a cursor that is not one of ours
        raise HTTPException(422, str(exc)) from exc
    return AuditPageView(
        items=[AuditEntryView.of(e) for e in page.items], next_cursor=page.next_cursor
    )
