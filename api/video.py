"""Video in and out: WHIP for cameras that push, WHEP, snapshots and MJPEG for people who watch.

Thin: this checks who is asking and forwards to the camera worker that owns the camera
(ingest/video/pool.py), which holds the media. Publishing needs the camera's own token
(`python -m api tokens camera ID`); watching needs an API token that may see the camera's site.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from analytics.video.profile import CameraProfile
from api.auth import Caller, iso_ms, require_site
from api.body import BodyTooLarge, read_capped
from api.state import AppState, app_state
from cluster.membership import Member, camera_key
from devices.models import CAMERA_TYPES, Device
from devices.tokens import Principal, Refusal, Refused
from ingest.video.hub import ANY_OWNER
from ingest.video.monitor import VideoState
from ingest.video.pool import CameraPool, WorkerUnavailable
from ingest.video.worker import OWNER_HEADER

router = APIRouter(tags=["video"])
SessionId = Annotated[
    str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="From the Location header.")
]
State = Annotated[AppState, Depends(app_state)]
SDP = "application/sdp"
_SDP_BODY: dict[str | int, dict[str, Any]] = {
    201: {"content": {SDP: {}}, "description": "The SDP answer; Location names the session."}
}


def _camera(state: AppState, camera_id: str) -> Device:
    device = state.registry.devices.get(camera_id)
    if device is None or device.type not in CAMERA_TYPES:
        raise HTTPException(404, f"no camera {camera_id!r} in the inventory")
    return device


def _pool(state: AppState) -> CameraPool:
    if state.cameras is None:
        raise HTTPException(503, "the video path is off on this node (cameras.workers = 0)")
    return state.cameras


def _served_elsewhere(state: AppState, camera_id: str) -> Member | None:
    """With several nodes, the node that serves the camera, when it is not this one."""
    cluster = state.cluster
    if cluster is None or not cluster.clustered:
        return None
    owner = cluster.owner(camera_key(camera_id))
    return None if owner == cluster.me else owner


def _to_owner(state: AppState, kind: str, camera_id: str) -> None:
    """With several nodes, each camera's media goes to one (its owner among the live members):
    a request for a camera owned elsewhere gets 307 to the owner's endpoint (RFC 9725 section
    4.5), which the camera or viewer follows with the same offer."""
    owner = _served_elsewhere(state, camera_id)
    if owner is not None:
        location = f"{owner.api_url.rstrip('/')}/{kind}/{camera_id}"
        raise HTTPException(
            307, f"camera {camera_id!r} is served by node {owner.node_id}", {"Location": location}
        )


# Set on a request one node passes to another: the owner answers it, never passes it on.
FORWARDED_BY = "X-Mingliang-Forwarded-By"
# Request headers not passed to the owner: they describe this hop, not the request.
_HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "upgrade"}
)


async def _at_owner(
    request: Request, state: AppState, camera_id: str, body: bytes | None = None
) -> StreamingResponse | None:
    """With several nodes, a viewer's request (WHEP, a snapshot, MJPEG) for a camera another
    node serves is passed to that node with the caller's own credentials, which every node
    checks against the same store, and its answer passed back: a browser's session cookie does
    not follow a redirect to another origin. None when this node serves the camera."""
    owner = _served_elsewhere(state, camera_id)
    if owner is None:
        return None
    if request.headers.get(FORWARDED_BY):
        # The two nodes disagree on the members for a heartbeat or two: never ping-pong.
        raise HTTPException(
            503, f"nodes disagree on who serves {camera_id!r}; retry", {"Retry-After": "2"}
        )
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    assert state.cluster is not None and state.peers is not None  # several nodes
    headers[FORWARDED_BY] = state.cluster.me.node_id
    url = owner.api_url.rstrip("/") + request.url.path
    client = state.peers
    try:
        upstream = await client.send(
            client.build_request(
                request.method, url, params=request.query_params, headers=headers, content=body
            ),
            stream=True,
        )
    except httpx.HTTPError as exc:
        raise HTTPException(
            503,
            f"node {owner.node_id}, which serves {camera_id!r}, did not answer: {exc}",
            {"Retry-After": "2"},
        ) from exc
    kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
    return StreamingResponse(
        upstream.aiter_raw(), upstream.status_code, kept, background=BackgroundTask(upstream.aclose)
    )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="cameras"'})


def _camera_refusal(refused: Refused) -> str:
    if refused.reason is Refusal.EXPIRED and refused.expired_ms is not None:
        return (
            f"camera token expired on {iso_ms(refused.expired_ms)}: install a new one "
            "(python -m api tokens camera CAMERA_ID)"
        )
    if refused.reason is Refusal.WRONG_KIND:
        return "an API token cannot publish video: use the camera's own token (mlc_...)"
    return "unknown or revoked camera token"


async def _camera_publisher(request: Request, state: AppState, camera_id: str) -> None:
    """401/403 unless the request carries a token of this very camera; 429 while its address
    must wait after failing too often (api/guard.py)."""
    if not state.settings.auth.enabled:
        return
    header = request.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if header:
        state.guard.admit(request)
    if scheme.lower() != "bearer" or not token.strip():
        if header:
            state.guard.failed(request, Refusal.MALFORMED)
        raise _unauthorized(
            "missing camera token: send 'Authorization: Bearer <camera token>' "
            "(an administrator creates one with: python -m api tokens camera CAMERA_ID)"
        )
    owner = await asyncio.to_thread(state.tokens.authenticate_camera, token.strip())
    if isinstance(owner, Refused):
        state.guard.failed(request, owner.reason)
        raise _unauthorized(_camera_refusal(owner))
    state.guard.succeeded(request)
    if owner != camera_id:
        raise HTTPException(403, f"this token publishes for camera {owner!r}, not {camera_id!r}")


async def _offer(request: Request, state: AppState) -> bytes:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != SDP:
        raise HTTPException(415, f"the offer must be sent as {SDP}, not {kind or 'nothing'!r}")
    try:
        body = await read_capped(request, state.settings.cameras.max_sdp_bytes)
    except BodyTooLarge as exc:
        raise HTTPException(413, f"the offer is {exc}") from exc
    if not body.strip():
        raise HTTPException(400, "the offer is empty")
    return body


async def _forward(
    pool: CameraPool,
    camera_id: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    try:
        response = await pool.request(camera_id, method, path, body, headers)
    except WorkerUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "2"}) from exc
    if response.status_code >= 400:
        raise _refusal(response.status_code, response.content)
    return response


def _refusal(status: int, body: bytes) -> HTTPException:
    """A worker's refusal passed on to the caller, with the worker's reason."""
    text = body.decode(errors="replace")
    try:
        detail = json.loads(text).get("detail", text)
    except (ValueError, AttributeError):
        detail = text
    headers = {"Retry-After": "5"} if status == 503 else None
    return HTTPException(status, detail, headers=headers)


async def _session(
    state: AppState, kind: str, camera_id: str, body: bytes, owner: str = ""
) -> Response:
    response = await _forward(
        _pool(state), camera_id, "POST", f"/{kind}/{camera_id}", body, {OWNER_HEADER: owner}
    )
    answer = response.json()
    return Response(
        answer["sdp"],
        status_code=201,
        media_type=SDP,
        headers={"Location": f"/{kind}/{camera_id}/{answer['session']}"},
    )


@router.post("/whip/{camera_id}", status_code=201, responses=_SDP_BODY)
async def whip(camera_id: str, request: Request, state: State) -> Response:
    """Publish a camera (WHIP, RFC 9725): the body is the SDP offer (VP8 or H.264 video).

    The token is checked first: without this camera's token, nobody learns whether a camera
    id exists."""
    await _camera_publisher(request, state, camera_id)
    _camera(state, camera_id)
    _to_owner(state, "whip", camera_id)
    return await _session(state, "whip", camera_id, await _offer(request, state))


@router.delete("/whip/{camera_id}/{session}", status_code=204)
async def whip_end(camera_id: str, session: SessionId, request: Request, state: State) -> Response:
    """End a publishing session."""
    await _camera_publisher(request, state, camera_id)
    _camera(state, camera_id)
    await _forward(_pool(state), camera_id, "DELETE", f"/whip/{camera_id}/{session}")
    return Response(status_code=204)


@router.post("/whep/{camera_id}", status_code=201, responses=_SDP_BODY)
async def whep(camera_id: str, request: Request, state: State, caller: Caller) -> Response:
    """Watch a camera live at full rate (WHEP): the body is the SDP offer."""
    require_site(caller, _camera(state, camera_id).site_id)
    body = await _offer(request, state)
    forwarded = await _at_owner(request, state, camera_id, body)
    if forwarded is not None:
        return forwarded
    return await _session(state, "whep", camera_id, body, _owner(caller))


@router.delete("/whep/{camera_id}/{session}", status_code=204)
async def whep_end(
    camera_id: str, session: SessionId, request: Request, state: State, caller: Caller
) -> Response:
    """Stop watching: only the token that started the session, or an administrator, may."""
    require_site(caller, _camera(state, camera_id).site_id)
    forwarded = await _at_owner(request, state, camera_id)
    if forwarded is not None:
        return forwarded
    path = f"/whep/{camera_id}/{session}"
    await _forward(_pool(state), camera_id, "DELETE", path, headers={OWNER_HEADER: _owner(caller)})
    return Response(status_code=204)


def _owner(caller: Principal) -> str:
    """Who a viewing session belongs to, as the worker records it (`*`: may end any)."""
    return ANY_OWNER if caller.is_admin else f"token:{caller.name}"


class CameraView(BaseModel):
    camera_id: str
    site_id: str
    name: str
    location: str
    transport: str | None = Field(description="whip, rtsp, or None if nothing feeds it.")
    online: bool = Field(
        description="Frames are being decoded (not offline for cameras.offline_after_s)."
    )
    last_frame_ms: int | None
    width: int | None
    height: int | None
    viewers: int


@router.get("/api/v1/cameras", response_model=list[CameraView], tags=["video"])
async def cameras(
    state: State,
    caller: Caller,
    site: Annotated[str | None, Query(description="Only this site's cameras.")] = None,
) -> list[CameraView]:
    """The cameras the caller may see, with their video state from the last health poll."""
    if site is not None:
        require_site(caller, site)
    monitor = state.camera_monitor
    return [
        CameraView(
            camera_id=device.device_id,
            site_id=device.site_id,
            name=device.name,
            location=device.location,
            **(monitor.video_state(device.device_id) if monitor else VideoState()).model_dump(),
        )
        for device in state.registry.cameras()
        if (site is None or device.site_id == site) and caller.can_see(device.site_id)
    ]


class ProfileView(BaseModel):
    camera_id: str
    files: list[str] = Field(description="The profile files that apply, in order.")
    errors: list[str] = Field(
        description="Problems of the last edit; the cameras keep their last good profile."
    )
    profile: CameraProfile


@router.get("/api/v1/cameras/{camera_id}/profile", response_model=ProfileView, tags=["video"])
async def profile(camera_id: str, state: State, caller: Caller) -> ProfileView:
    """The camera's effective analytics profile: zones, masks and detector parameters, as
    its worker applies them (files re-read if they changed)."""
    require_site(caller, _camera(state, camera_id).site_id)
    book = state.profiles
    await asyncio.to_thread(book.refresh)
    root = state.settings.profiles_dir
    return ProfileView(
        camera_id=camera_id,
        files=[str(p.relative_to(root)) for p in book.layers(camera_id)],
        errors=book.errors,
        profile=book.profile(camera_id),
    )


@router.get(
    "/api/v1/cameras/{camera_id}/snapshot.jpg",
    responses={200: {"content": {"image/jpeg": {}}}},
    response_class=Response,
)
async def snapshot(camera_id: str, request: Request, state: State, caller: Caller) -> Response:
    """The camera's newest frame as a JPEG."""
    require_site(caller, _camera(state, camera_id).site_id)
    forwarded = await _at_owner(request, state, camera_id)
    if forwarded is not None:
        return forwarded
    response = await _forward(_pool(state), camera_id, "GET", f"/snapshot/{camera_id}")
    return Response(
        response.content,
        media_type="image/jpeg",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Time-Ms": response.headers.get("x-frame-time-ms", ""),
        },
    )


@router.get(
    "/api/v1/cameras/{camera_id}/stream.mjpeg",
    responses={200: {"content": {"multipart/x-mixed-replace": {}}}},
    response_class=StreamingResponse,
)
async def mjpeg(
    camera_id: str, request: Request, state: State, caller: Caller
) -> StreamingResponse:
    """Motion JPEG at cameras.mjpeg_fps, for video walls; counts against the viewer caps."""
    require_site(caller, _camera(state, camera_id).site_id)
    forwarded = await _at_owner(request, state, camera_id)
    if forwarded is not None:
        return forwarded
    pool = _pool(state)
    stream = pool.stream(camera_id, f"/mjpeg/{camera_id}")
    try:
        upstream = await stream.__aenter__()
    except WorkerUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "2"}) from exc
    closed = False

    async def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            await stream.__aexit__(None, None, None)

    if upstream.status_code != 200:
        body = await upstream.aread()
        await close()
        raise _refusal(upstream.status_code, body)

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        finally:
            await close()

    return StreamingResponse(
        relay(),
        media_type=upstream.headers["content-type"],
        headers={"Cache-Control": "no-store"},
        # Also when the viewer left before the first part: the worker frees the place.
        background=BackgroundTask(close),
    )
