"""Two service nodes as real processes on one broker, one InfluxDB and one PostgreSQL, with
simulated kitchens and cameras: they split the partitions of the sites and the cameras between
them, an alert acknowledged on one streams to the SSE clients of both, and when one is killed
the other takes its share over: its partitions from the broker's persistent sessions, so no
telemetry the broker acknowledged to a device is lost, and its cameras, which offer again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster import rendezvous
from cluster.membership import camera_key
from config.settings import Settings
from devices.registry import Registry, load_registry
from simulators.camera_fleet import CameraFleet, CameraPlan
from simulators.cameras import pushed_cameras, served_cameras
from simulators.local_services import Influxd, Mosquitto, free_port
from simulators.rtsp import RtspCameraServer
from tests.pg import reset_database
from tests.support import (
    ROOT,
    LoopThread,
    Publisher,
    SseReader,
    bearer,
    count,
    inventory_with_local_streams,
    make_camera_token,
    make_settings,
    make_token,
    unique,
    wait_until,
)

PARTITIONS = 8


@pytest.fixture
def store_url(postgres_url: str) -> str:
    reset_database(postgres_url)
    return postgres_url


class Node:
    """`python -m api serve` as node `node_id` of the cluster."""

    def __init__(
        self, settings: Settings, node_id: str, store_url: str, workdir: Path, workers: int
    ) -> None:
        """`settings` gives the broker, InfluxDB and inventory every node shares."""
        self.node_id = node_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = workdir / f"{node_id}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
        env.update(
            {
                "MINGLIANG_MQTT__HOST": settings.mqtt.host,
                "MINGLIANG_MQTT__PORT": str(settings.mqtt.port),
                "MINGLIANG_MQTT__CLIENT_ID": settings.mqtt.client_id,  # the same on all nodes
                "MINGLIANG_INFLUX__URL": settings.influx.url,
                "MINGLIANG_INFLUX__DATABASE": settings.influx.database,
                "MINGLIANG_ALERTS__STORE_URL": store_url,
                "MINGLIANG_API__PORT": str(self.port),
                "MINGLIANG_PATHS__DATA_DIR": str(workdir / node_id),
                "MINGLIANG_PATHS__INVENTORY": str(settings.inventory_path),
                "MINGLIANG_CAMERAS__WORKERS": str(workers),
                "MINGLIANG_CAMERAS__HEALTH_EVERY_S": "1",
                "MINGLIANG_CLUSTER__NODE_ID": node_id,
                "MINGLIANG_CLUSTER__PARTITIONS": str(PARTITIONS),
                "MINGLIANG_CLUSTER__HEARTBEAT_S": "0.5",
                "MINGLIANG_CLUSTER__DEAD_AFTER_S": "3",
            }
        )
        self._log = self._log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--log-level", "info"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def health(self) -> dict[str, Any]:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.node_id} exited: {self.tail()}")
        try:
            body: dict[str, Any] = httpx.get(f"{self.url}/healthz", timeout=5).json()
        except httpx.HTTPError:
            return {}
        return body

    def partitions(self) -> set[int]:
        return set(self.health().get("cluster", {}).get("partitions", []))

    def members(self) -> list[str]:
        return [m["node_id"] for m in self.health().get("cluster", {}).get("members", [])]

    def tail(self) -> str:
        return self._log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self._log.close()

    def online_cameras(self, token: str) -> set[str]:
        try:
            cameras = httpx.get(f"{self.url}/api/v1/cameras", headers=bearer(token), timeout=5)
        except httpx.HTTPError:
            return set()
        return {c["camera_id"] for c in cameras.json() if c["online"]}


@contextlib.contextmanager
def cluster(
    settings: Settings, store_url: str, workdir: Path, *names: str, workers: int = 0
) -> Iterator[list[Node]]:
    nodes: list[Node] = []
    try:
        for name in names:
            nodes.append(Node(settings, name, store_url, workdir, workers))
        yield nodes
    finally:
        for node in nodes:
            node.close()


class Kitchens:
    """Fridges of many kitchens publishing QoS 1 readings on a thread, each acknowledged by
    the broker before it counts as sent."""

    def __init__(self, broker: Mosquitto, fridges: list[tuple[str, str]]) -> None:
        self.sent = 0
        self._fridges = fridges
        self._publisher = Publisher(broker)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Kitchens:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._publisher.close()

    def stop(self) -> int:
        """Stop publishing; wait until the broker has acknowledged everything sent."""
        self._stop.set()
        self._thread.join(30)
        self._publisher.flush()
        return self.sent

    def _run(self) -> None:
        ts = time.time_ns() // 1_000_000
        while not self._stop.is_set():
            ts += 1
            for site_id, device_id in self._fridges:
                topic = f"v1/sites/{site_id}/devices/{device_id}/telemetry"
                self._publisher.publish(topic, {"ts": ts, "values": {"temp_c": 3.5}})
                self.sent += 1
            self._publisher.flush()
            self._stop.wait(0.02)  # about 50 rounds a second: a steady flow, not a flood


def spread_cameras(registry: Registry, names: list[str], count: int) -> list[str]:
    """Pushed cameras, the first `count` of them, checked to land on every node."""
    cameras = pushed_cameras(registry, count)
    owners = {rendezvous.owner(camera_key(c), names) for c in cameras}
    assert owners == set(names), f"all {count} cameras on {owners}: pick others"
    return cameras


def test_killing_a_node_moves_its_cameras_and_partitions_and_loses_no_telemetry(
    tmp_path: Path, broker: Mosquitto, influxd: Influxd, store_url: str, registry: Registry
) -> None:
    rtsp_port = free_port()
    settings = make_settings(
        tmp_path / "data",
        broker,
        influxd,
        influx={"database": unique("nodes")},
        alerts={"store_url": store_url},
        paths={"inventory": str(inventory_with_local_streams(tmp_path, rtsp_port))},
    )
    pulled = served_cameras(load_registry(settings.inventory_path), rtsp_port)
    assert pulled, "the inventory pulls no camera from this machine"
    token = make_token(settings)
    fridges = sorted(
        (d.site_id, d.device_id) for d in registry.devices.values() if d.type == "fridge"
    )[:64]
    pushed = spread_cameras(registry, ["east", "west"], 4)
    camera_tokens = {camera: make_camera_token(settings, camera) for camera in pushed}
    plans = [CameraPlan.for_device(registry.devices[c]) for c in pushed]
    cameras = pushed + sorted(pulled)
    nodes = cluster(settings, store_url, tmp_path, "east", "west", workers=1)
    rtsp = RtspCameraServer(pulled, port=rtsp_port, width=320, height=180, fps=5.0)
    with (
        rtsp,
        nodes as (east, west),
        LoopThread() as peers,
        contextlib.ExitStack() as stack,
    ):
        for node in (east, west):
            wait_until(lambda n=node: n.members() == ["east", "west"], 60, "both nodes joined")
        split = wait_until(
            lambda: (
                (e := east.partitions(), w := west.partitions())
                and e | w == set(range(PARTITIONS))
                and not e & w
                and (e, w)
            ),
            60,
            "the partitions split between the nodes",
        )
        assert split and split[0] and split[1], split

        # Cameras offer to the first node; the one that does not own a camera redirects it.
        # Pulled cameras are pulled by the node that owns them, and by no other.
        async def start() -> tuple[CameraFleet, asyncio.Event]:
            fleet = CameraFleet(
                [east.url, west.url], camera_tokens, plans, width=320, height=180, fps=5.0
            )
            return fleet, asyncio.Event()

        fleet, stop_cameras = peers.run(start())
        publishing = peers.start(fleet.run(stop_cameras))
        stack.callback(lambda: publishing.result(60))
        stack.callback(peers.loop.call_soon_threadsafe, stop_cameras.set)
        names = ["east", "west"]
        owners = {
            name: {c for c in cameras if rendezvous.owner(camera_key(c), names) == name}
            for name in names
        }
        for node in (east, west):
            wait_until(
                lambda n=node: n.online_cameras(token) == owners[n.node_id],
                90,
                f"{node.node_id}'s cameras online on {node.node_id}",
            )

        # Either node answers for any camera: viewers' requests go on to the camera's owner.
        for camera in cameras:
            shot = httpx.get(
                f"{east.url}/api/v1/cameras/{camera}/snapshot.jpg", headers=bearer(token)
            )
            assert shot.status_code == 200, (camera, shot.text)
            assert shot.headers["content-type"] == "image/jpeg" and shot.content[:2] == b"\xff\xd8"

        # An alert acknowledged on one node streams to the SSE clients of both.
        clients = [httpx.Client(base_url=n.url, headers=bearer(token)) for n in (east, west)]
        readers = [SseReader(client) for client in clients]
        for reader, client in zip(readers, clients, strict=True):
            stack.callback(client.close)
            stack.callback(reader.close)
        device = Publisher(broker)
        stack.callback(device.close)
        camera = pushed[0]
        site = registry.devices[camera].site_id
        device.publish(f"v1/sites/{site}/devices/{camera}/events", {"kind": "smoking"})
        device.flush()
        (alert,) = wait_until(
            lambda: clients[1].get("/api/v1/alerts", params={"device": camera}).json()["items"],
            30,
            "the alert raised by the node that owns its site",
        )
        acked = clients[1].post(f"/api/v1/alerts/{alert['id']}/acknowledge")
        assert acked.status_code == 200, acked.text
        for reader, name in zip(readers, ("east", "west"), strict=True):
            heard = lambda r=reader: "acknowledged" in r.of(alert["id"])  # noqa: E731
            wait_until(heard, 15, f"the acknowledgement on {name}'s SSE stream")
        readers[0].close()  # before its node dies, which ends the stream

        with Kitchens(broker, fridges) as kitchens:
            wait_until(lambda: kitchens.sent > 2000, 60, "telemetry flowing")
            east.kill()
            killed = time.monotonic()
            # Within 30 s every camera is live again, on the node that is left.
            wait_until(lambda: west.online_cameras(token) == set(cameras), 30, "cameras moved")
            moved_s = time.monotonic() - killed
            wait_until(lambda: west.members() == ["west"], 30, "east gone")
            wait_until(lambda: west.partitions() == set(range(PARTITIONS)), 30, "west taking all")
            sent_before = kitchens.sent
            wait_until(lambda: kitchens.sent > sent_before + 2000, 60, "telemetry still flowing")
            sent = kitchens.stop()
        print(f"cameras live again on the other node {moved_s:.1f} s after the kill")
        stored = wait_until(
            lambda: (n := count(settings, "telemetry", "temp_c")) >= sent and n,
            120,
            f"all {sent} acknowledged readings in InfluxDB",
        )
        assert stored == sent
