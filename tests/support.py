"""Helpers shared by tests that drive the real broker and database."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
import paho.mqtt.client as paho
import uvicorn
from fastapi import FastAPI

from config.settings import Settings, load_settings
from devices.pki import TlsFiles, client_context
from simulators.local_services import Influxd, Mosquitto, free_port
from timeseries.influx import InfluxWriteClient

T = TypeVar("T")
_ids = itertools.count(1)


ROOT = Path(__file__).resolve().parent.parent


def run_module(
    *argv: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m <argv>` from the project root, as a user runs a command; output captured."""
    return subprocess.run(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def unique(prefix: str) -> str:
    return f"{prefix}_{time.time_ns() % 10**9}_{next(_ids)}"


def wait_until(condition: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)  # polling interval of a condition, not a stand-in for synchronisation


def inventory_with_local_streams(workdir: Path, port: int) -> Path:
    """A copy of the district inventory whose RTSP cameras are pulled from this machine's
    `port` (a test's RTSP server) instead of the inventory's."""
    inventory = ROOT / "config" / "inventory" / "inventory.toml"
    folder = workdir / "inventory"
    shutil.copytree(inventory.parent, folder)
    streams = (folder / "streams.csv").read_text().replace(":8554/", f":{port}/")
    (folder / "streams.csv").write_text(streams)
    return folder / inventory.name


def make_settings(
    data_dir: Path, broker: Mosquitto, influxd: Influxd, **sections: Mapping[str, Any]
) -> Settings:
    """Settings for one test: its own database, MQTT client id and data folder; no camera
    workers unless `cameras` asks for them."""
    mqtt = {"host": broker.host, "port": broker.port, "client_id": unique("ingest")}
    influx = {"url": influxd.url, "database": unique("test")}
    merged = {
        "mqtt": {**mqtt, **sections.pop("mqtt", {})},
        "influx": {**influx, **sections.pop("influx", {})},
        "paths": {"data_dir": str(data_dir), **sections.pop("paths", {})},
        # Camera workers are processes of their own: only the tests that watch video start them.
        "cameras": {"workers": 0, **sections.pop("cameras", {})},
        **sections,
    }
    return load_settings({}, **merged)


class Publisher:
    """A device-side client that publishes QoS 1 and waits until the broker has everything;
    over TLS, trusting `tls_ca` alone, if it is given."""

    def __init__(
        self, broker: Mosquitto, client_id: str | None = None, *, tls_ca: Path | None = None
    ) -> None:
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id or unique("device")
        )
        if tls_ca is not None:
            self.client.tls_set_context(client_context(tls_ca))
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self._infos: list[paho.MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes | str | Any, *, retain: bool = False) -> None:
        if not isinstance(payload, bytes | str):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self._infos.append(info)

    def publish_many(self, items: Iterable[tuple[str, Any]]) -> None:
        for topic, payload in items:
            self.publish(topic, payload)

    def flush(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for info in self._infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "the broker did not acknowledge a publish in time"
        self._infos.clear()

    def close(self) -> None:
        self.flush()
        self.client.disconnect()
        self.client.loop_stop()


def query(settings: Settings, q: str) -> list[dict[str, Any]]:
    """Rows of a single-statement InfluxQL query against the test's database."""
    client = InfluxWriteClient(settings.influx)
    try:
        statements = client.query(q, epoch="ns")
    finally:
        client.close()
    return [row for series in statements[0] for row in series.rows()] if statements else []


def count(settings: Settings, measurement: str, field: str, where: str = "") -> int:
    rows = query(settings, f'SELECT count("{field}") FROM "{measurement}" {where}')
    return int(rows[0]["count"]) if rows else 0


@contextlib.contextmanager
def serve(
    app: FastAPI, token: str | None = None, *, tls: TlsFiles | None = None
) -> Iterator[httpx.Client]:
    """Run `app` under a real uvicorn server on a free port; yield a client for it. With `tls`,
    the server speaks HTTPS only and the client trusts `tls.ca` alone."""
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=2,  # open SSE streams would hold shutdown up
        ssl_certfile=tls.cert if tls else None,
        ssl_keyfile=tls.key if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 30, "the API to start")
        assert server.started, "uvicorn stopped during start-up"
        headers = bearer(token) if token else {}
        scheme = "https" if tls else "http"
        with httpx.Client(
            base_url=f"{scheme}://127.0.0.1:{port}",
            timeout=30,
            headers=headers,
            verify=client_context(tls.ca) if tls else True,
        ) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(60)


def make_token(settings: Settings, role: str = "admin", sites: frozenset[str] | None = None) -> str:
    """A bearer token in the test's alert store (created if it does not exist yet)."""
    from alerts.store import AlertStore
    from devices.tokens import Role, TokenStore

    store = AlertStore(settings.alert_store_url)
    try:
        store.create_schema()
        tokens = TokenStore(store.engine)
        tokens.create_schema()
        secret, _ = tokens.create(unique(role), Role(role), sites)
        return secret
    finally:
        store.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class ManualClock:
    """A clock (epoch ms) that moves only when a test moves it."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class ManualSeconds:
    """A monotonic clock (seconds) that moves only when a test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_camera_token(settings: Settings, camera_id: str) -> str:
    """A camera's WHIP publishing token in the test's alert store."""
    from alerts.store import AlertStore
    from devices.tokens import TokenStore

    store = AlertStore(settings.alert_store_url)
    try:
        store.create_schema()
        tokens = TokenStore(store.engine)
        tokens.create_schema()
        return tokens.create_camera(camera_id)
    finally:
        store.close()


class LoopThread:
    """An asyncio loop in a thread of its own, for WebRTC peers beside a synchronous test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="peers", daemon=True)

    def __enter__(self) -> LoopThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        async def cancel_all() -> None:
            # Cancelling a peer connection's task may start others (its close): until none.
            for _ in range(10):
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not tasks:
                    return
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all(), 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a coroutine on the loop; its future tells when it ends."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


def pattern(index: int, width: int = 320, height: int = 180) -> npt.NDArray[np.uint8]:
    """An I420 picture of flat luma 16 + 8 * (index % 28): a frame's level tells its index."""
    frame = np.full((height * 3 // 2, width), 128, np.uint8)
    frame[:height] = 16 + (index % 28) * 8
    return frame


def is_pattern_level(mean_luma: float) -> bool:
    return min(abs(mean_luma - (16 + k * 8)) for k in range(28)) < 4


class SseReader:
    """Reads an SSE stream in a thread and keeps the events."""

    def __init__(self, client: httpx.Client, headers: dict[str, str] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._client = client
        self._headers = headers or {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.opened.wait(10), "the stream did not open"

    def _read(self) -> None:
        try:
            self._follow()
        except httpx.HTTPError:
            if not self._stop.is_set():
                raise
            # The server ends open streams when it stops: expected once the test is done.

    def _follow(self) -> None:
        with self._client.stream(
            "GET", "/api/v1/alerts/stream", headers=self._headers, timeout=None
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            self.opened.set()
            frame: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if not line:
                    if "data" in frame:
                        self.events.append(
                            {
                                "id": int(frame["id"]),
                                "event": frame["event"],
                                **json.loads(frame["data"]),
                            }
                        )
                    frame = {}
                elif not line.startswith(":"):
                    key, _, value = line.partition(": ")
                    frame[key] = value

    def of(self, alert_id: int) -> list[str]:
        return [e["event"] for e in self.events if e["alert"]["id"] == alert_id]

    def close(self) -> None:
        self._stop.set()


@contextlib.asynccontextmanager
async def in_background(
    work: Coroutine[Any, Any, None], *ending: type[BaseException]
) -> AsyncIterator[asyncio.Task[None]]:
    """Run a loop's body as a task for the block; cancel it after, letting it end with one of
    the `ending` errors (a loop that lost its connection)."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, *ending):
            await task
