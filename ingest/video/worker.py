"""A camera worker process: a CameraHub behind a small HTTP interface on loopback.

The public API process (api/video.py) checks who is asking, then forwards WHIP, WHEP,
snapshot and MJPEG requests to the worker that owns the camera, and polls /stats for health.
Media does not pass through the API process: the SDP answer carries the worker's own ICE
candidates, so RTP flows between the camera and its worker directly.

Every request must carry the key the pool generated for this run (X-Worker-Key), so that other
local programs cannot publish or watch by calling a worker directly.

The pool starts a worker with `python -m ingest.video.worker` and writes a JSON start-up
document as the first line of its stdin (see WorkerSpec); the worker answers `ready <port>` on
stdout. The pool keeps stdin open: when it reads end-of-file, the pool is gone (even killed
outright) and the worker stops rather than hold its cameras as an orphan.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import sys
import threading
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

import cv2
import uvicorn
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from alerts.evidence import EvidenceStore
from analytics.video.profiles import ProfileBook
from api.body import BodyTooLarge, read_capped
from config.settings import AnalyticsSettings, CamerasSettings
from devices.models import Stream
from devices.registry import Registry, load_registry
from ingest.video.analytics import FindingLog, StateFiles, WorkerAnalytics
from ingest.video.frames import Frame
from ingest.video.hub import (
    BadOffer,
    CameraHub,
    NotOwned,
    NotYours,
    NoVideo,
    UnknownCamera,
    UnknownSession,
    VideoError,
    ViewerLimit,
)
from ingest.video.stats import (
    Findings,
    WorkerStats,
    fix_mmap_threshold,
    process_memory,
    trim_heap,
)

log = logging.getLogger(__name__)

KEY_HEADER = "X-Worker-Key"
OWNER_HEADER = "X-Session-Owner"  # who starts (and may end) a viewing session
# WHIP publishes and WHEP views; both are an SDP exchange that makes a session.
Kind = Literal["whip", "whep"]
MJPEG_BOUNDARY = "mingliang-frame"
_STATUS: dict[type[VideoError], int] = {
    UnknownCamera: 404,
    NotOwned: 421,
    BadOffer: 400,
    NoVideo: 409,
    ViewerLimit: 503,
    UnknownSession: 404,
    NotYours: 403,
}


def owner_index(camera_id: str, workers: int) -> int:
    """Which worker owns a camera: a stable hash, the same in every process and run."""
    return zlib.crc32(camera_id.encode("utf-8")) % workers


class WorkerSpec(BaseModel):
    """What a worker needs to start, sent by the pool on stdin."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, description="This worker's number.")
    count: int = Field(ge=1, description="How many workers share the cameras.")
    key: str = Field(min_length=16, description="Shared secret of the pool and its workers.")
    cameras: CamerasSettings
    inventory: Path
    analytics: AnalyticsSettings | None = Field(None, description="None: no video analytics.")
    profiles_dir: Path | None = Field(None, description="Camera profiles, for analytics.")
    evidence_dir: Path | None = Field(None, description="Where analytics save evidence.")
    state_dir: Path | None = Field(None, description="Where analytics keep what they learnt.")
    streams: list[Stream] | None = Field(
        None, description="Pull addresses replacing the inventory's (tests, the demo)."
    )
    log_level: str = "warning"


class PullRequest(BaseModel):
    """Start pulling a camera (several nodes: this one took it over)."""

    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, description="The camera's RTSP address.")


def encode_jpeg(frame: Frame, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", frame.bgr(), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise NoVideo(f"camera {frame.camera_id!r}: the frame could not be encoded")
    return bytes(data)


def create_worker_app(spec: WorkerSpec, registry: Registry) -> FastAPI:
    settings = spec.cameras

    def owns(camera_id: str) -> bool:
        return owner_index(camera_id, spec.count) == spec.index

    findings = FindingLog(spec.analytics.outbox_max if spec.analytics else 100)
    analytics: WorkerAnalytics | None = None
    if spec.analytics is not None and spec.analytics.enabled:
        if spec.profiles_dir is None or spec.evidence_dir is None:
            raise ValueError("video analytics need profiles_dir and evidence_dir")
        analytics = WorkerAnalytics(
            spec.analytics,
            registry,
            ProfileBook(spec.profiles_dir, registry),
            EvidenceStore(spec.evidence_dir),
            findings,
            StateFiles(spec.state_dir) if spec.state_dir is not None else None,
        )

    async def trim_every(period_s: float) -> None:
        while True:
            await asyncio.sleep(period_s)  # the trim period
            await asyncio.to_thread(trim_heap)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        consumers = [analytics] if analytics is not None else []
        trimming = None
        if settings.malloc_trim_every_s > 0:
            trimming = asyncio.create_task(trim_every(settings.malloc_trim_every_s))
        async with CameraHub(settings, registry, owns, consumers) as hub:
            app.state.hub = hub
            yield
        if trimming is not None:
            trimming.cancel()
        if analytics is not None:
            await asyncio.to_thread(analytics.flush)

    async def check_key(x_worker_key: Annotated[str, Header()] = "") -> None:
        if not hmac.compare_digest(x_worker_key.encode(), spec.key.encode()):
            raise HTTPException(403, "not called by this worker's pool")

    app = FastAPI(lifespan=lifespan, dependencies=[Depends(check_key)], openapi_url=None)

    @app.exception_handler(VideoError)
    async def _video_error(request: Request, exc: VideoError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_STATUS.get(type(exc), 400))

    def hub_of(request: Request) -> CameraHub:
        hub: CameraHub = request.app.state.hub
        return hub

    @app.post("/pull/{camera_id}", status_code=204)
    async def pull(camera_id: str, body: PullRequest, request: Request) -> Response:
        hub_of(request).start_pull(camera_id, body.url)
        return Response(status_code=204)

    @app.delete("/pull/{camera_id}", status_code=204)
    async def unpull(camera_id: str, request: Request) -> Response:
        await hub_of(request).stop_pull(camera_id)
        return Response(status_code=204)

    @app.post("/{kind}/{camera_id}", status_code=201)
    async def session(
        kind: Kind,
        camera_id: str,
        request: Request,
        x_session_owner: Annotated[str, Header()] = "",
    ) -> dict[str, str]:
        hub = hub_of(request)
        try:
            body = await read_capped(request, settings.max_sdp_bytes)
        except BodyTooLarge as exc:
            raise HTTPException(413, f"the offer is {exc}") from exc
        offer = body.decode("utf-8", "replace")
        if kind == "whip":
            session, answer = await hub.publish(camera_id, offer)
        else:
            session, answer = await hub.view(camera_id, offer, x_session_owner)
        return {"session": session, "sdp": answer}

    @app.delete("/{kind}/{camera_id}/{session}", status_code=204)
    async def session_end(
        kind: Kind,
        camera_id: str,
        session: str,
        request: Request,
        x_session_owner: Annotated[str, Header()] = "",
    ) -> Response:
        hub = hub_of(request)
        if kind == "whip":
            await hub.unpublish(camera_id, session)
        else:
            await hub.unview(camera_id, session, x_session_owner)
        return Response(status_code=204)

    @app.get("/snapshot/{camera_id}")
    async def snapshot(camera_id: str, request: Request) -> Response:
        frame = hub_of(request).slot(camera_id).latest()
        if frame is None:
            raise NoVideo(f"camera {camera_id!r} has sent no frame yet")
        jpeg = await asyncio.to_thread(encode_jpeg, frame, settings.jpeg_quality)
        return Response(
            jpeg,
            media_type="image/jpeg",
            headers={
                "Cache-Control": "no-store",
                "X-Frame-Time-Ms": str(frame.received_ns // 10**6),
            },
        )

    @app.get("/mjpeg/{camera_id}")
    async def mjpeg(camera_id: str, request: Request) -> StreamingResponse:
        hub = hub_of(request)
        feed, release = hub.admit_mjpeg(camera_id)  # admitted or refused before the response

        async def parts() -> AsyncIterator[bytes]:
            period = 1.0 / settings.mjpeg_fps
            last_seq = 0
            loop = asyncio.get_running_loop()
            try:
                while True:
                    started = loop.time()
                    frame = feed.slot.latest()
                    if frame is not None and frame.seq != last_seq:
                        last_seq = frame.seq
                        jpeg = await asyncio.to_thread(encode_jpeg, frame, settings.jpeg_quality)
                        yield (
                            (
                                f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                f"Content-Length: {len(jpeg)}\r\n\r\n"
                            ).encode()
                            + jpeg
                            + b"\r\n"
                        )
                    await asyncio.sleep(max(0.0, period - (loop.time() - started)))  # pacing
            finally:
                release()

        return StreamingResponse(
            parts(),
            media_type=f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}",
            headers={"Cache-Control": "no-store"},
            # Also when the client left before the first part: the place is freed either way.
            background=BackgroundTask(release),
        )

    @app.get("/findings")
    async def findings_since(after: int = 0) -> Findings:
        return findings.since(after)

    @app.get("/stats")
    async def stats(request: Request) -> WorkerStats:
        rss, in_use, free, threads = process_memory()
        return WorkerStats(
            index=spec.index,
            pid=os.getpid(),
            rss_bytes=rss,
            heap_in_use_bytes=in_use,
            heap_free_bytes=free,
            threads=threads,
            cameras=await hub_of(request).stats(),
            analytics_frames=analytics.counts.frames if analytics else 0,
            analytics_cpu_s=round(analytics.counts.seconds, 3) if analytics else 0.0,
            findings_dropped=findings.dropped,
        )

    return app


def _stop_when_orphaned(server: uvicorn.Server) -> None:
    """Wait for end-of-file on stdin (the pool closed it, or died), then stop the server."""
    sys.stdin.buffer.read()
    log.info("the pool is gone; stopping")
    server.should_exit = True


def main() -> int:
    spec = WorkerSpec.model_validate_json(sys.stdin.readline())
    logging.basicConfig(
        level=spec.log_level.upper(),
        format=f"%(asctime)s %(levelname)s camera-worker-{spec.index} %(name)s: %(message)s",
    )
    threshold = spec.cameras.malloc_mmap_threshold_bytes
    if threshold and not fix_mmap_threshold(threshold):  # before any decoder thread starts
        log.warning("not glibc: cannot fix the mmap threshold; memory may fragment over days")
    registry = load_registry(spec.inventory)
    if spec.streams is not None:
        registry = registry.with_streams(spec.streams)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    app = create_worker_app(spec, registry)
    config = uvicorn.Config(app, log_level=spec.log_level, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    threading.Thread(target=_stop_when_orphaned, args=(server,), daemon=True).start()

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)  # uvicorn offers no start-up event to await
        if server.started:
            print(f"ready {sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
