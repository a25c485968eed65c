"""The alert API: list, read, act on alerts, and follow every change as Server-Sent Events."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, Field

from alerts.changes import AlertView, ChangeView
from alerts.evidence import MEDIA_TYPES, EvidenceError, EvidenceStore
from alerts.store import Alert, AlertFilter, TransitionRefused
from analytics.events import TAXONOMY, Category, Severity
from analytics.lifecycle import Action, Status
from api import stream
from api.auth import Caller, require_site
from api.guard import client_address
from api.params import NAME, SAYS_SOMETHING, Name
from api.state import AppState, app_state

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
State = Annotated[AppState, Depends(app_state)]
AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The alert's id.")]


class AlertPage(BaseModel):
    items: list[AlertView]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next, older page.")


class Note(BaseModel):
    note: str | None = Field(
        None, max_length=2000, pattern=SAYS_SOMETHING, description="Why; kept as a comment."
    )


class Assignment(BaseModel):
    assignee: str | None = Field(
        max_length=200, pattern=SAYS_SOMETHING, description="Who handles it; null to unassign."
    )


class NewComment(BaseModel):
    text: str = Field(max_length=2000, pattern=SAYS_SOMETHING)


class CaseAction(StrEnum):
    FILE = "file"
    DISPATCH = "dispatch"
    HANDLE = "handle"
    VERIFY = "verify"
    CLOSE = "close"
    CANCEL = "cancel"


def _ms(moment: datetime | None, name: str) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise HTTPException(422, f"{name} {moment.isoformat()} has no time zone: add Z or +08:00")
    return int(moment.timestamp() * 1000)


@router.get("", response_model=AlertPage, summary="Alerts, newest first, filtered and paged")
async def list_alerts(
    state: State,
    caller: Caller,
    status: Annotated[list[Status] | None, Query(description="One or more statuses.")] = None,
    site: Annotated[list[Name] | None, Query(description="One or more site ids.")] = None,
    device: Annotated[str | None, Query(max_length=100, pattern=NAME)] = None,
    kind: Annotated[str | None, Query(max_length=64, pattern=NAME)] = None,
    category: Category | None = None,
    severity: Severity | None = None,
    since: Annotated[
        datetime | None, Query(description="First seen at or after (RFC 3339).")
    ] = None,
    until: Annotated[datetime | None, Query(description="First seen before (RFC 3339).")] = None,
    cursor: Annotated[str | None, Query(max_length=200, pattern=NAME)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> AlertPage:
    if kind is not None and kind not in TAXONOMY:
        raise HTTPException(422, f"kind {kind!r} is not in the taxonomy (GET /api/v1/alerts/kinds)")
    scope = caller.site_scope
    sites = frozenset(site) if site else None
    if sites is not None:
        for site_id in sites:
            require_site(caller, site_id)
    else:
        sites = scope
    flt = AlertFilter(
        status=frozenset(status) if status else None,
        site_ids=sites,
        device_id=device,
        kind=kind,
        category=category,
        severity=severity,
        since_ms=_ms(since, "since"),
        until_ms=_ms(until, "until"),
    )
    try:
        page = await asyncio.to_thread(state.alerts.list, flt, cursor, limit)
    except ValueError as exc:  # a cursor that is not one of ours
        raise HTTPException(422, str(exc)) from exc
    return AlertPage(items=[AlertView.of(a) for a in page.items], next_cursor=page.next_cursor)


@router.get("/kinds", summary="The alert taxonomy: kinds, categories, default severities")
async def kinds(caller: Caller) -> list[dict[str, str]]:
    return [
        {
            "kind": k.name,
            "category": k.category.value,
            "severity": k.severity.value,
            "description": k.description,
        }
        for k in TAXONOMY.values()
    ]


@router.get("/stream", summary="Every alert change as Server-Sent Events")
async def follow(
    request: Request,
    state: State,
    caller: Caller,
    last_event_id: Annotated[
        str | None, Header(description="Resume after this change (sent by EventSource).")
    ] = None,
) -> StreamingResponse:
    """`text/event-stream`: one event per change (`event:` is the action, `id:` its sequence
    number, `data:` the change as JSON) for the caller's sites, from now on, or after
    Last-Event-ID when resuming."""
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise HTTPException(422, "Last-Event-ID must be the id of an earlier event")
        after = int(last_event_id)
    else:
        after = await asyncio.to_thread(state.alerts.last_seq)
    frames = stream.events(state.alerts, state.feed, after, caller.site_scope)

    async def until_disconnected() -> Any:
        async for frame in frames:
            if await request.is_disconnected():
                return
            yield frame

    return StreamingResponse(
        until_disconnected(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _visible(state: AppState, caller: Caller, alert_id: int, *, act: bool) -> Alert:
    alert = await asyncio.to_thread(state.alerts.get, alert_id)
    require_site(caller, alert.site_id, act=act)
    return alert


class OpenSummary(BaseModel):
    total: int = Field(description="Unresolved (open or acknowledged) alerts the caller may see.")
    by_severity: dict[Severity, int] = Field(description="Every severity, zero included.")
    by_site: dict[str, int] = Field(description="Sites with at least one unresolved alert.")


@router.get("/summary", response_model=OpenSummary, summary="Unresolved alerts, counted")
async def summary(state: State, caller: Caller) -> OpenSummary:
    counts = await asyncio.to_thread(state.alerts.open_counts)
    by_severity = dict.fromkeys(Severity, 0)
    by_site: dict[str, int] = {}
    for site_id, _kind, severity, n in counts:
        if caller.can_see(site_id):
            by_severity[Severity(severity)] += n
            by_site[site_id] = by_site.get(site_id, 0) + n
    return OpenSummary(total=sum(by_site.values()), by_severity=by_severity, by_site=by_site)


class HistoryEntry(BaseModel):
    seq: int
    action: str
    actor: str
    at_ms: int
    note: str | None


@router.get(
    "/{alert_id}/history",
    response_model=list[HistoryEntry],
    summary="The alert's changes, oldest first",
)
async def history(state: State, caller: Caller, alert_id: AlertId) -> list[HistoryEntry]:
    await _visible(state, caller, alert_id, act=False)
    changes = await asyncio.to_thread(state.alerts.history, alert_id)
    return [
        HistoryEntry(seq=c.seq, action=c.action.value, actor=c.actor, at_ms=c.at_ms, note=c.note)
        for c in changes
    ]


@router.get("/{alert_id}", response_model=AlertView, summary="One alert with its comments")
async def get_alert(state: State, caller: Caller, alert_id: AlertId) -> AlertView:
    return AlertView.of(await _visible(state, caller, alert_id, act=False))


@router.get(
    "/{alert_id}/evidence/{index}",
    summary="One of the alert's evidence files: a snapshot (JPEG) or a clip (WebM)",
    response_class=FileResponse,
    responses={200: {"content": {"image/jpeg": {}, "video/webm": {}}}},
)
async def evidence(
    state: State,
    caller: Caller,
    alert_id: AlertId,
    index: Annotated[int, Path(ge=0, le=1000, description="Position in `evidence`.")],
) -> FileResponse:
    """Whoever may see the alert may see its evidence. Evidence that devices name themselves
    (a file on the device) is not kept here: 404 says so. A clip is written a few seconds
    after its alert is raised: until then, 404 with Retry-After."""
    alert = await _visible(state, caller, alert_id, act=False)
    if index >= len(alert.evidence):
        raise HTTPException(404, f"alert {alert_id} has {len(alert.evidence)} evidence items")
    name = alert.evidence[index]
    store = EvidenceStore(state.settings.evidence_dir)
    try:
        path = store.path(name, must_exist=False)
    except EvidenceError as exc:
        raise HTTPException(404, f"{exc}: it is kept by the device that sent it") from exc
    if not await asyncio.to_thread(path.is_file):
        recording = path.suffix == ".webm" and alert.last_seen_ms > _now_ms() - 120_000
        if recording:
            raise HTTPException(404, "the clip is still being recorded", {"Retry-After": "5"})
        raise HTTPException(404, f"evidence {name} is no longer kept")
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[path.suffix],
        headers={"Cache-Control": "private, max-age=86400"},
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _act(
    request: Request, state: AppState, caller: Caller, alert_id: int, action: Action, note: Note
) -> ChangeView:
    await _visible(state, caller, alert_id, act=True)
    try:
        change = await asyncio.to_thread(
            state.alerts.act,
            alert_id,
            action,
            caller.name,
            note.note,
            source=client_address(request),
        )
    except TransitionRefused as exc:
        raise HTTPException(409, exc.reason) from exc
    state.changed()
    return ChangeView.of(change)


@router.post("/{alert_id}/acknowledge", response_model=ChangeView, summary="Acknowledge")
async def acknowledge(
    request: Request, state: State, caller: Caller, alert_id: AlertId, body: Note | None = None
) -> ChangeView:
    return await _act(request, state, caller, alert_id, Action.ACKNOWLEDGE, body or Note())


@router.post("/{alert_id}/resolve", response_model=ChangeView, summary="Resolve")
async def resolve(
    request: Request, state: State, caller: Caller, alert_id: AlertId, body: Note | None = None
) -> ChangeView:
    return await _act(request, state, caller, alert_id, Action.RESOLVE, body or Note())


@router.post(
    "/{alert_id}/case/{action}",
    response_model=ChangeView,
    summary="Move a street case on: file, dispatch, handle, verify, close or cancel",
)
async def case_step(
    request: Request,
    state: State,
    caller: Caller,
    alert_id: AlertId,
    action: CaseAction,
    body: Note | None = None,
) -> ChangeView:
    return await _act(request, state, caller, alert_id, Action(action.value), body or Note())


@router.post("/{alert_id}/assign", response_model=ChangeView, summary="Assign to a person")
async def assign(
    request: Request, state: State, caller: Caller, alert_id: AlertId, body: Assignment
) -> ChangeView:
    await _visible(state, caller, alert_id, act=True)
    try:
        change = await asyncio.to_thread(
            state.alerts.assign,
            alert_id,
            body.assignee,
            caller.name,
            source=client_address(request),
        )
    except TransitionRefused as exc:
        raise HTTPException(409, exc.reason) from exc
    state.changed()
    return ChangeView.of(change)


@router.post("/{alert_id}/comments", response_model=ChangeView, summary="Add a comment")
async def comment(
    request: Request, state: State, caller: Caller, alert_id: AlertId, body: NewComment
) -> ChangeView:
    await _visible(state, caller, alert_id, act=True)
    change = await asyncio.to_thread(
        state.alerts.comment, alert_id, caller.name, body.text, source=client_address(request)
    )
    state.changed()
    return ChangeView.of(change)
