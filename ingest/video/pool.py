"""The camera worker processes, as the API process sees them: start, route, restart, stop.

Each camera belongs to one worker (`owner_index`, a stable hash of its id). A WHIP or WHEP
request reaches the API process, which checks the token and forwards the SDP to the owner over
loopback; the answer carries the owner's ICE candidates, so media then flows straight between
the peer and the owner.

Each worker is kept running by a loop of the service's supervisor (`camera-worker-N`): a
worker that exits, or cannot be started, is a failure of that loop, logged, counted and
restarted after the supervisor's back-off, like any other loop. Its sessions die with it;
publishers reconnect and re-offer (WHIP clients retry), and pulled cameras are pulled again by
the new worker. Until it is back, requests for its cameras get 503 with the reason, and its
cameras go offline after `offline_after_s` like any camera that stopped sending.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from config.settings import AnalyticsSettings, CamerasSettings
from devices.models import Stream
from ingest.video.stats import Findings, WorkerStats
from ingest.video.worker import KEY_HEADER, WorkerSpec, owner_index
from service.supervisor import Supervisor, TaskLoop

log = logging.getLogger(__name__)


class WorkerUnavailable(Exception):
    """The owner of a camera is not running right now."""


class WorkerExited(Exception):
    """A camera worker process ended; its loop restarts it."""


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    port: int | None = None
    starts: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        if self.port is None or not self.ready.is_set():
            raise WorkerUnavailable(f"camera worker {self.index} is starting")
        return f"http://127.0.0.1:{self.port}"


class CameraPool:
    def __init__(
        self,
        settings: CamerasSettings,
        inventory: Path,
        *,
        streams: list[Stream] | None = None,
        analytics: AnalyticsSettings | None = None,
        profiles_dir: Path | None = None,
        evidence_dir: Path | None = None,
        state_dir: Path | None = None,
        log_level: str = "warning",
        supervisor: Supervisor | None = None,
    ) -> None:
        """`analytics` None runs no video analytics; otherwise the workers read profiles from
        `profiles_dir`, save evidence under `evidence_dir` and what they learnt under
        `state_dir`."""
        if settings.workers < 1:
            raise ValueError("a camera pool needs at least one worker")
        self._settings = settings
        self._inventory = inventory
        # What the workers pull: None, the inventory's; changed by pull() and unpull(), so a
        # worker that restarts pulls what the pool pulls now.
        self._streams = None if streams is None else {s.camera_id: s for s in streams}
        self._analytics = analytics
        self._profiles_dir = profiles_dir
        self._evidence_dir = evidence_dir
        self._state_dir = state_dir
        self._log_level = log_level
        self._key = secrets.token_urlsafe(32)
        self.workers = [Worker(i) for i in range(settings.workers)]
        self._client = httpx.AsyncClient(
            headers={KEY_HEADER: self._key}, timeout=httpx.Timeout(30.0, connect=5.0)
        )
        self._supervisor = supervisor or Supervisor()
        self._loops: list[TaskLoop] = []

    # -- life cycle ------------------------------------------------------------------------

    async def __aenter__(self) -> CameraPool:
        try:
            await asyncio.gather(*(self._start(w) for w in self.workers))
        except BaseException:
            await self.__aexit__()
            raise
        self._loops = [
            self._supervisor.task(f"camera-worker-{w.index}", functools.partial(self._keep, w))
            for w in self.workers
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for loop in self._loops:
            await loop.stop()
        await asyncio.gather(*(self._stop(w) for w in self.workers))
        await self._client.aclose()

    def _spec(self, index: int) -> WorkerSpec:
        return WorkerSpec(
            index=index,
            count=len(self.workers),
            key=self._key,
            cameras=self._settings,
            inventory=self._inventory,
            streams=None if self._streams is None else list(self._streams.values()),
            analytics=self._analytics,
            profiles_dir=self._profiles_dir,
            evidence_dir=self._evidence_dir,
            state_dir=self._state_dir,
            log_level=self._log_level,
        )

    async def _start(self, worker: Worker) -> None:
        worker.ready.clear()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ingest.video.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        worker.process = process
        worker.starts += 1
        assert process.stdin is not None and process.stdout is not None
        # One line of start-up document; stdin then stays open as the worker's lifeline.
        process.stdin.write(self._spec(worker.index).model_dump_json().encode() + b"\n")
        await process.stdin.drain()
        try:
            line = await asyncio.wait_for(
                process.stdout.readline(), self._settings.worker_start_timeout_s
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise WorkerUnavailable(
                f"camera worker {worker.index} did not start within "
                f"{self._settings.worker_start_timeout_s} s"
            ) from None
        words = line.decode(errors="replace").split()
        if len(words) != 2 or words[0] != "ready":
            code = await process.wait()
            raise WorkerUnavailable(
                f"camera worker {worker.index} failed to start (exit code {code}); its log is above"
            )
        worker.port = int(words[1])
        worker.ready.set()
        log.info(
            "camera worker %d ready on port %d (pid %d)", worker.index, worker.port, process.pid
        )

    async def _stop(self, worker: Worker) -> None:
        process = worker.process
        worker.ready.clear()
        if process is None or process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _keep(self, worker: Worker) -> None:
        """Start the worker unless it runs, then wait for it to exit: always a failure."""
        if worker.process is None or worker.process.returncode is not None:
            await self._start(worker)
        assert worker.process is not None
        code = await worker.process.wait()
        worker.ready.clear()
        raise WorkerExited(
            f"camera worker {worker.index} exited with code {code}; its sessions are gone"
        )

    # -- routing ---------------------------------------------------------------------------

    def owner(self, camera_id: str) -> Worker:
        return self.workers[owner_index(camera_id, len(self.workers))]

    async def request(
        self,
        camera_id: str,
        method: str,
        path: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Forward a request to the camera's owner; WorkerUnavailable if it is down."""
        worker = self.owner(camera_id)
        try:
            return await self._client.request(
                method, worker.base_url + path, content=content, headers=headers
            )
        except httpx.TransportError as exc:
            raise WorkerUnavailable(f"camera worker {worker.index} is not answering") from exc

    async def pull(self, stream: Stream) -> None:
        """Start pulling a camera over RTSP (several nodes: this one took it over). A worker
        that is down pulls it when it is back."""
        if self._streams is None:
            raise RuntimeError("the pool pulls the inventory's streams: give it a list to change")
        self._streams[stream.camera_id] = stream
        body = json.dumps({"url": stream.url}).encode()
        headers = {"Content-Type": "application/json"}
        with contextlib.suppress(WorkerUnavailable):
            response = await self.request(
                stream.camera_id, "POST", f"/pull/{stream.camera_id}", body, headers
            )
            response.raise_for_status()

    async def unpull(self, camera_id: str) -> None:
        """Stop pulling a camera (another node took it over)."""
        if self._streams is None or self._streams.pop(camera_id, None) is None:
            return
        with contextlib.suppress(WorkerUnavailable):
            response = await self.request(camera_id, "DELETE", f"/pull/{camera_id}")
            response.raise_for_status()

    @contextlib.asynccontextmanager
    async def stream(self, camera_id: str, path: str) -> AsyncIterator[httpx.Response]:
        worker = self.owner(camera_id)
        try:
            request = self._client.build_request(
                "GET", worker.base_url + path, timeout=httpx.Timeout(30.0, read=None)
            )
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise WorkerUnavailable(f"camera worker {worker.index} is not answering") from exc
        try:
            yield response
        finally:
            await response.aclose()

    async def stats(self) -> tuple[list[WorkerStats], list[int]]:
        """The figures of the workers that answer, and the indexes of those that did not."""

        async def one(worker: Worker) -> WorkerStats | None:
            try:
                response = await self._client.get(worker.base_url + "/stats", timeout=10)
                response.raise_for_status()
            except (WorkerUnavailable, httpx.HTTPError):
                return None
            return WorkerStats.model_validate_json(response.content)

        results = await asyncio.gather(*(one(w) for w in self.workers))
        answered = [result for result in results if result is not None]
        down = [w.index for w, result in zip(self.workers, results, strict=True) if result is None]
        return answered, down

    async def findings(self, index: int, after: int) -> Findings:
        """What worker `index` found since `after`; WorkerUnavailable if it does not answer."""
        worker = self.workers[index]
        try:
            response = await self._client.get(
                worker.base_url + "/findings", params={"after": after}, timeout=10
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise WorkerUnavailable(f"camera worker {index}: findings: {exc}") from exc
        return Findings.model_validate_json(response.content)

    def pids(self) -> Mapping[int, int]:
        return {
            w.index: w.process.pid
            for w in self.workers
            if w.process is not None and w.process.returncode is None
        }

    def kill(self, index: int) -> None:
        """Kill a worker as a crash would (tests, chaos drills)."""
        process = self.workers[index].process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGKILL)
