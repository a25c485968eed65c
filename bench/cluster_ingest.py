"""Telemetry throughput of one and two cluster nodes, and publish-to-queryable latency at ten
times the district's load.

    python bench/cluster_ingest.py throughput [--messages 60000] [--rounds 3] [--publishers 3]
    python bench/cluster_ingest.py soak [--minutes 10] [--rate 2800] [--nodes 2] [--publishers N]

Starts its own Mosquitto, InfluxDB and PostgreSQL on free ports, and the service's nodes as
real processes: `python -m api serve` with cluster.node_id set, 16 partitions, no camera
workers, one PostgreSQL alert store and the same MQTT client id on every node. Nothing is
published before every node lists all the members and the nodes hold the 16 partitions between
them, each node the ones rendezvous hashing gives it, subscribed.

throughput: each round runs one node and two nodes, side by side (the order alternates from
  round to round), each on a fresh InfluxDB database, a fresh alert store and fresh broker
  sessions. Several publisher processes send N QoS 1 readings as fast as the broker takes them,
  from the fridges of every kitchen (every partition gets traffic), each reading a unique
  (device, ts); the clock stops when InfluxDB answers a count of N (published -> acknowledged
  -> queryable), and the count must be exactly N. Prints messages/s, the nodes' CPU seconds
  per 1,000 messages (utime + stime from /proc over the window, child processes included),
  the publishers', broker's and InfluxDB's beside them, how busy the machine was and how much
  of that was other work, the medians and the ratios 2 nodes / 1 node.
soak: ten times the district's load (the demo's 4,025 devices make about 277 acknowledged
  messages/s, so 2,800/s by default), paced by publisher processes (every 20 ms, what is due
  at rate x elapsed) over the fridges and street cameras of every site, for --minutes.
  Meanwhile a probe publishes one reading a second on a fridge the load leaves alone and polls
  InfluxDB every 50 ms until the reading is queryable: its latency runs from the publish call
  (not the PUBACK, shown apart) to the answer that has it. A line every 30 s (the publishers'
  counts in it are up to a second old); at the end the achieved rate, whether the publishers
  kept up, latency p50/p95/p99/max, messages sent (only what the broker acknowledged counts as
  sent) against stored once the backlog has drained, and the nodes' CPU and memory.

Exits non-zero if a message the broker acknowledged is not stored or a node died; the logs are
then kept, and their folder printed. Ctrl-C stops and removes everything it started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
import psycopg  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402
from procfs import CLK_TCK, rss_bytes  # noqa: E402
from psycopg import sql  # noqa: E402

from cluster import rendezvous  # noqa: E402
from devices.registry import load_registry  # noqa: E402
from ingest.telemetry.partitions import partition_of  # noqa: E402
from simulators.local_services import Influxd, Mosquitto, Postgres, free_port  # noqa: E402

INVENTORY = ROOT / "config" / "inventory" / "inventory.toml"
PARTITIONS = 16
DISTRICT_RATE = 277.0  # acknowledged messages/s of the district demo

PROGRESS_S = 30.0
PROBE_POLL_S = 0.05
PACE_SLICE_S = 0.02
STALL_S = 60.0  # no progress for this long while waiting for InfluxDB's count: lost


class Failure(Exception):
    """Something was lost, or a node died: the run fails and the logs are kept."""


# -- the inventory ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Device:
    site_id: str
    device_id: str
    type: str

    @property
    def topic(self) -> str:
        return f"v1/sites/{self.site_id}/devices/{self.device_id}/telemetry"


def inventory() -> dict[str, list[Device]]:
    """The devices of the inventory by type, in a stable order."""
    registry = load_registry(INVENTORY)
    by_type: dict[str, list[Device]] = {}
    for d in sorted(Device(d.site_id, d.device_id, d.type) for d in registry.devices.values()):
        by_type.setdefault(d.type, []).append(d)
    return by_type


def fridges() -> list[Device]:
    return inventory()["fridge"]


def soak_devices() -> tuple[list[Device], Device]:
    """The soak's load and the probe: a fridge, whose kitchen's freezer joins the load in its
    place, so that the load covers every site (the other fridges and every street camera)."""
    devices = inventory()
    probe = devices["fridge"][-1]
    freezer = next(d for d in devices["freezer"] if d.site_id == probe.site_id)
    return [*devices["fridge"][:-1], freezer, *devices["street_camera"]], probe


def payload(device: Device, ts: int, i: int) -> bytes:
    """A reading the rules let be: fridges steady at 4 °C, freezers at -18 °C, cameras up."""
    values: dict[str, object]
    if device.type == "fridge":
        values = {"temp_c": 4.0 + (i % 7) / 100, "humidity_pct": 70.0}
    elif device.type == "freezer":
        values = {"temp_c": -18.0 + (i % 7) / 100, "door_open": False}
    else:
        values = {"online": True, "fps": 25.0, "bitrate_kbps": float(2000 + i % 100)}
    return json.dumps({"ts": ts, "values": values}, separators=(",", ":")).encode()


def partitions_covered(devices: Sequence[Device]) -> int:
    return len({partition_of(d.site_id, PARTITIONS) for d in devices})


# -- /proc -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proc:
    parent: int
    cpu_s: float  # user + system
    name: str


def snapshot() -> dict[int, Proc]:
    """Every process's parent, CPU seconds and name, from /proc."""
    procs: dict[int, Proc] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                head, tail = Path(entry.path, "stat").read_text().rsplit(")", 1)
            except (OSError, ValueError):
                continue  # gone meanwhile
            fields = tail.split()
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            procs[int(entry.name)] = Proc(int(fields[1]), cpu, head.split("(", 1)[1])
    return procs


def tree(procs: dict[int, Proc], roots: Sequence[int], descendants: bool = True) -> set[int]:
    """The processes of the trees under `roots` (themselves included; only themselves without
    `descendants`)."""
    children: dict[int, list[int]] = {}
    for pid, proc in procs.items():
        children.setdefault(proc.parent, []).append(pid)
    out: set[int] = set()
    todo = [pid for pid in roots if pid in procs]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            if descendants:
                todo.extend(children.get(pid, []))
    return out


def describe_process(pid: int, name: str) -> str:
    with contextlib.suppress(OSError):
        words = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        words = [Path(words[0]).name, *words[1:3]] if words and words[0] else []
        if words:
            return " ".join(words).strip()[:60]
    return f"[{name}]"


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def pids_with(marker: str) -> list[int]:
    """Processes whose command line names `marker` (a service's config file or data folder)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in Path(entry.path, "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
    return found


class CpuMeter:
    """CPU seconds of groups of process trees between two readings, of the machine, and of
    the processes that are not this benchmark's. The group "bench" is this process alone (its
    children are the other groups, and the publishers)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self._groups = groups
        self._start = self._read()
        self._wall = 0.0
        self.others: dict[str, float] = {}  # CPU seconds of the others, by command, last lap
        self._others: dict[str, float] = {}  # CPU seconds of the others, by command, all laps

    def _read(self) -> tuple[float, float, dict[int, Proc]]:
        return time.monotonic(), busy_seconds(), snapshot()

    def lap(self) -> tuple[float, float, dict[str, float]]:
        """(wall seconds, machine busy seconds, CPU seconds by group) since the last lap."""
        end = self._read()
        (t0, busy0, procs0), (t1, busy1, procs1) = self._start, end
        self._start = end
        self._wall += t1 - t0

        def used(pids: set[int]) -> float:
            return sum(
                procs1[pid].cpu_s - (procs0[pid].cpu_s if pid in procs0 else 0.0) for pid in pids
            )

        cpu = {
            name: used(tree(procs1, pids, name != "bench")) for name, pids in self._groups.items()
        }
        ours = tree(procs1, [os.getpid()])
        self.others = {}
        for pid in procs1:
            seconds = used({pid}) if pid not in ours else 0.0
            if seconds > 0:
                name = describe_process(pid, procs1[pid].name)
                self.others[name] = self.others.get(name, 0.0) + seconds
                self._others[name] = self._others.get(name, 0.0) + seconds
        return t1 - t0, busy1 - busy0, cpu

    @staticmethod
    def _busiest(others: dict[str, float], wall_s: float) -> str:
        top = sorted(others.items(), key=lambda item: -item[1])[:3]
        text = [f"{name} {cpu / wall_s:.2f}" for name, cpu in top if cpu >= 0.05 * wall_s]
        return ", ".join(text) or "-"

    def others_text(self, wall_s: float) -> str:
        """The busiest processes that are not ours over the last lap (5 % of a core or more;
        what ended within the lap is missed)."""
        return self._busiest(self.others, wall_s)

    def others_overall(self) -> str:
        """The same over all laps."""
        return self._busiest(self._others, self._wall)


# -- services and nodes ----------------------------------------------------------------------


class Node:
    """`python -m api serve` as node `node_id` of a cluster."""

    def __init__(
        self,
        bench: Bench,
        folder: Path,
        node_id: str,
        client_id: str,
        database: str,
        store_url: str,
    ) -> None:
        self.node_id = node_id
        self.partitions: list[int] = []  # what it held when publishing started
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"{node_id}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._http = bench.http
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINGLIANG_")}
        env.update(
            {
                "MINGLIANG_MQTT__HOST": bench.broker.host,
                "MINGLIANG_MQTT__PORT": str(bench.broker.port),
                "MINGLIANG_MQTT__CLIENT_ID": client_id,  # the same on every node
                "MINGLIANG_INFLUX__URL": bench.influxd.url,
                "MINGLIANG_INFLUX__DATABASE": database,
                "MINGLIANG_ALERTS__STORE_URL": store_url,
                "MINGLIANG_API__PORT": str(self.port),
                "MINGLIANG_PATHS__DATA_DIR": str(folder / node_id),
                "MINGLIANG_CAMERAS__WORKERS": "0",
                "MINGLIANG_CLUSTER__NODE_ID": node_id,
                "MINGLIANG_CLUSTER__PARTITIONS": str(PARTITIONS),
            }
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api", "serve", "--log-level", "info"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us; we stop the nodes in order
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        if self.process.poll() is not None:
            raise Failure(
                f"node {self.node_id} exited with {self.process.returncode}; "
                f"its log ends: {self.tail()}"
            )

    def health(self) -> dict[str, Any]:
        self.check()
        try:
            body: dict[str, Any] = self._http.get(f"{self.url}/healthz", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return body

    def metrics(self) -> dict[str, float]:
        """The ingest counters of /metrics, summed over their labels."""
        wanted = {
            "mingliang_ingest_messages_received_total": "received",
            "mingliang_ingest_messages_acked_total": "acked",
            "mingliang_ingest_rejected_total": "rejected",
            "mingliang_ingest_points_written_total": "written",
            "mingliang_ingest_points_spooled_total": "spooled",
            "mingliang_ingest_pending_messages": "pending",
        }
        out = dict.fromkeys(wanted.values(), 0.0)
        try:
            text = self._http.get(f"{self.url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return out
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            name, _, value = line.rpartition(" ")
            key = wanted.get(name.split("{", 1)[0])
            if key is not None:
                out[key] += float(value)
        return out

    def tail(self, chars: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        """SIGTERM, as systemd would; killed if it has not stopped within 30 s."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            print(f"  node {self.node_id} did not stop within 30 s of SIGTERM: killed", flush=True)
            self.process.kill()
            self.process.wait(30)


class Bench:
    """Mosquitto, InfluxDB and PostgreSQL in a temporary folder; the logs are kept if the run
    fails, and everything is removed on the way out."""

    def __init__(self, keep_logs: bool = False) -> None:
        self.failed = False
        self.keep_logs = keep_logs
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Self:
        try:
            tmp = self._stack.enter_context(
                tempfile.TemporaryDirectory(prefix="mingliang-cluster-bench-")
            )
            self.workdir = Path(tmp)
            self._stack.callback(self._keep_logs)  # before the folder goes
            self.broker = self._stack.enter_context(Mosquitto(self.workdir / "mosquitto"))
            self.influxd = self._stack.enter_context(Influxd(self.workdir / "influxd"))
            self.postgres = Postgres(self.workdir / "postgres")
            self._stack.callback(self.postgres.remove)
            self.postgres.start()
            self.http = self._stack.enter_context(httpx.Client(timeout=30))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            self.failed = True
        self._stack.close()

    def _keep_logs(self) -> None:
        if not (self.failed or self.keep_logs):
            return
        kept = Path(tempfile.mkdtemp(prefix="mingliang-cluster-bench-logs-"))
        logs = [*self.workdir.rglob("*.log"), self.postgres.log_path]
        for log in logs:
            if log.is_file():
                inside = log.is_relative_to(self.workdir)
                target = kept / (log.relative_to(self.workdir) if inside else log.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(log, target)
        print(f"logs (nodes, broker, InfluxDB, PostgreSQL) kept in {kept}", flush=True)

    # -- what the runs share

    def service_pids(self) -> dict[str, list[int]]:
        return {
            "broker": pids_with(str(self.workdir / "mosquitto" / "mosquitto.conf")),
            "influxd": pids_with(str(self.workdir / "influxd" / "influxdb.conf")),
            "postgres": pids_with(str(self.postgres.data)),
            "bench": [os.getpid()],
        }

    def _admin(self) -> psycopg.Connection[Any]:
        pg = self.postgres
        return psycopg.connect(
            host=pg.host, port=pg.port, user="postgres", dbname="postgres", autocommit=True
        )

    def create_store(self, name: str) -> str:
        """A fresh PostgreSQL database for the nodes' alert store; its SQLAlchemy URL."""
        with self._admin() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        pg = self.postgres
        return f"postgresql+psycopg://postgres@{pg.host}:{pg.port}/{name}"

    def drop_store(self, name: str) -> None:
        if not self.postgres.running:
            return
        with self._admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    def query(self, database: str, q: str, timeout: float = 60) -> list[dict[str, Any]]:
        response = self.http.post(
            f"{self.influxd.url}/query",
            params={"db": database, "q": q, "epoch": "ms"},
            timeout=timeout,
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()["results"][0]
        if "error" in result:
            raise RuntimeError(f"InfluxDB: {result['error']} ({q})")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def count(self, database: str, q: str) -> int:
        series = self.query(database, q)
        return int(series[0]["values"][0][1]) if series else 0

    def drop_influx(self, database: str) -> None:
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            self.query(database, f'DROP DATABASE "{database}"')

    def forget_sessions(self, client_id: str) -> None:
        """End the partitions' persistent sessions, so that the next run's messages are not
        queued for them too."""
        for p in range(PARTITIONS):
            _end_session(self.broker, f"{client_id}-p{p:02d}")


def _end_session(broker: Mosquitto, client_id: str) -> None:
    connected = threading.Event()
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
    )
    client.on_connect = lambda *args: connected.set()
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    client.connect(broker.host, broker.port, clean_start=True, properties=props)
    client.loop_start()
    connected.wait(10)
    client.disconnect()
    client.loop_stop()


@contextlib.contextmanager
def cluster(bench: Bench, label: str, count: int) -> Iterator[tuple[list[Node], str]]:
    """`count` nodes (node-1, node-2, ...: the same names, so the same split, in every run)
    on a fresh alert store, InfluxDB database and broker sessions; yields them (split and
    subscribed) and the database's name."""
    database = f"bench_{label}"
    client_id = f"bench-{label}"
    with contextlib.ExitStack() as stack:
        store = bench.create_store(f"store_{label}")
        stack.callback(bench.drop_store, f"store_{label}")
        stack.callback(bench.drop_influx, database)
        stack.callback(bench.forget_sessions, client_id)  # once the nodes have stopped
        nodes: list[Node] = []
        for i in range(count):
            node = Node(bench, bench.workdir / label, f"node-{i + 1}", client_id, database, store)
            stack.callback(node.stop)
            nodes.append(node)
        wait_for_split(nodes)
        yield nodes, database
        for node in nodes:
            node.check()  # died during the run: not stopped by us


def wait_for_split(nodes: Sequence[Node], timeout: float = 120) -> None:
    """Every node lists all the members and holds, subscribed, the partitions rendezvous
    hashing gives it (so no partition moves once publishing starts), together all of them."""
    names = sorted(node.node_id for node in nodes)
    shares = rendezvous.shares([f"partition:{p}" for p in range(PARTITIONS)], names)
    want = {name: sorted(int(key.split(":")[1]) for key in keys) for name, keys in shares.items()}
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while True:
        ready = True
        for node in nodes:
            body = node.health()
            info = body.get("cluster", {})
            members = [m["node_id"] for m in info.get("members", [])]
            held = sorted(info.get("partitions", []))
            connected = bool(body.get("mqtt", {}).get("connected"))
            seen[node.node_id] = {"members": members, "partitions": held, "connected": connected}
            ready = ready and members == names and held == want[node.node_id] and connected
        if ready:
            for node in nodes:
                node.partitions = want[node.node_id]
            return
        if time.monotonic() > deadline:
            raise Failure(f"the nodes did not split the partitions within {timeout:.0f} s: {seen}")
        time.sleep(0.25)


def _signalled(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


# -- publishers (child processes) ------------------------------------------------------------


class _Acks:
    """PUBACKs counted on paho's network thread."""

    def __init__(self) -> None:
        self.count = 0

    def on_publish(self, *args: object) -> None:
        self.count += 1


def _publisher_client(host: str, port: int) -> tuple[paho.Client, _Acks]:
    connected = threading.Event()
    acks = _Acks()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.on_connect = lambda *args: connected.set()
    client.on_publish = acks.on_publish
    client.connect(host, port)
    client.loop_start()
    if not connected.wait(30):
        raise RuntimeError("publisher: no CONNACK from the broker")
    return client, acks


def burst_publisher(host: str, port: int, count: int, index: int, of: int) -> None:
    """Publish `count` QoS 1 readings of every `of`-th fridge from `index` as fast as the
    broker takes them, once told to go; print when, the CPU it took and what was not acked."""
    own = fridges()[index::of]
    base_ms = int(time.time() * 1000) - 3_600_000
    bodies = [
        (own[i % len(own)].topic, payload(own[i % len(own)], base_ms + i, i)) for i in range(count)
    ]
    client, acks = _publisher_client(host, port)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    started = time.time()
    infos = [client.publish(topic, body, qos=1) for topic, body in bodies]
    deadline = time.monotonic() + 300
    while acks.count < count and time.monotonic() < deadline:
        time.sleep(0.005)
    published = time.time()
    unacked = sum(1 for info in infos if not info.is_published())
    print(
        json.dumps(
            {
                "started": started,
                "published": published,
                "cpu_s": time.process_time() - cpu,
                "unacked": unacked,
            }
        ),
        flush=True,
    )
    client.disconnect()
    client.loop_stop()


def paced_publisher(host: str, port: int, rate: float, seconds: float, index: int, of: int) -> None:
    """Publish `rate` QoS 1 readings a second for `seconds`, over every `of`-th device of the
    soak's load from `index`: every 20 ms, what is due at rate x elapsed. Each device's `ts` is
    the time of publishing, one ms past its previous at least. A status line every second."""
    devices = soak_devices()[0][index::of]
    last_ts = [0] * len(devices)
    client, acks = _publisher_client(host, port)
    print("ready", flush=True)
    sys.stdin.readline()
    cpu = time.process_time()
    start = time.monotonic()
    total = int(rate * seconds)
    sent = 0
    lag = 0.0  # the longest a due message waited to be published, in seconds
    inflight = 0  # the most published and not yet acknowledged
    report = 1.0

    def status(final: bool = False) -> None:
        line = {
            "t": time.monotonic() - start,
            "due": min(total, int(rate * (time.monotonic() - start))),
            "sent": sent,
            "acked": acks.count,
            "lag_s": lag,
            "inflight_max": inflight,
            "cpu_s": time.process_time() - cpu,
            "final": final,
        }
        print(json.dumps(line), flush=True)

    while sent < total:
        elapsed = time.monotonic() - start
        due = min(total, int(rate * elapsed))
        if due > sent:
            lag = max(lag, (due - sent - 1) / rate)
        now_ms = time.time_ns() // 1_000_000
        while sent < due:
            k = sent % len(devices)
            ts = last_ts[k] = max(now_ms, last_ts[k] + 1)
            client.publish(devices[k].topic, payload(devices[k], ts, sent), qos=1)
            sent += 1
        inflight = max(inflight, sent - acks.count)
        if elapsed >= report:
            status()
            report += 1.0
        time.sleep(PACE_SLICE_S)
    deadline = time.monotonic() + 120
    while acks.count < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    status(final=True)
    client.disconnect()
    client.loop_stop()


def _spawn_publisher(spec: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--as-publisher", json.dumps(spec)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _ready(pubs: Sequence[subprocess.Popen[str]]) -> None:
    for pub in pubs:
        assert pub.stdout is not None
        line = pub.stdout.readline().strip()
        if line != "ready":
            raise Failure(f"a publisher did not start (said {line!r})")


def _go(pubs: Sequence[subprocess.Popen[str]]) -> None:
    for pub in pubs:
        assert pub.stdin is not None
        pub.stdin.write("go\n")
        pub.stdin.flush()


@contextlib.contextmanager
def publishers(specs: Sequence[dict[str, Any]]) -> Iterator[list[subprocess.Popen[str]]]:
    pubs: list[subprocess.Popen[str]] = []
    try:
        for spec in specs:
            pubs.append(_spawn_publisher(spec))
        _ready(pubs)
        yield pubs
    finally:
        for pub in pubs:
            if pub.poll() is None:
                pub.kill()
            pub.wait(10)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of `values`."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# -- throughput ------------------------------------------------------------------------------


@dataclass
class Run:
    nodes: int
    rate: float  # messages/s published -> queryable
    messages: int
    wall_s: float
    acked_s: float  # when the broker had acknowledged the last message, from the start
    cpu: dict[str, float]  # CPU seconds by process group (and node) over the window
    busy_s: float  # CPU seconds the whole machine was busy over the window
    seen: list[tuple[str, list[int], float]] = field(default_factory=list)
    busiest_others: str = "-"

    def per_1k(self, group: str) -> float:
        return self.cpu[group] / self.messages * 1000

    @property
    def others_s(self) -> float:
        """CPU seconds of processes that are not this benchmark's."""
        return self.busy_s - sum(v for k, v in self.cpu.items() if not k.startswith("node-"))


def throughput_run(
    bench: Bench, label: str, nodes_count: int, messages: int, publisher_count: int
) -> Run:
    with cluster(bench, label, nodes_count) as (nodes, database):
        specs = [
            {
                "kind": "burst",
                "host": bench.broker.host,
                "port": bench.broker.port,
                "count": messages // publisher_count + (1 if k < messages % publisher_count else 0),
                "index": k,
                "of": publisher_count,
            }
            for k in range(publisher_count)
        ]
        with publishers(specs) as pubs:
            meter = CpuMeter({n.node_id: [n.pid] for n in nodes} | bench.service_pids())
            started = time.time()
            _go(pubs)
            stored = wait_for_count(
                bench, nodes, database, 'SELECT count("temp_c") FROM telemetry', messages
            )
            done = time.time()
            wall, busy, cpu = meter.lap()
            reports = []
            for pub in pubs:
                out, _ = pub.communicate(timeout=300)
                reports.append(json.loads(out.strip().splitlines()[-1]))
        unacked = sum(int(r["unacked"]) for r in reports)
        if unacked:
            raise Failure(f"{unacked} messages were never acknowledged by the broker")
        if stored != messages:
            raise Failure(f"InfluxDB counts {stored} readings, {messages} were sent")
        cpu["nodes"] = sum(cpu[n.node_id] for n in nodes)
        cpu["publishers"] = sum(float(r["cpu_s"]) for r in reports)
        seen = [(n.node_id, n.partitions, n.metrics()["received"]) for n in nodes]
        acked_s = max(float(r["published"]) for r in reports) - started
        rate = messages / (done - started)
        others = meter.others_text(wall)
        return Run(nodes_count, rate, messages, wall, acked_s, cpu, busy, seen, others)


def wait_for_count(bench: Bench, nodes: Sequence[Node], database: str, q: str, want: int) -> int:
    """Poll InfluxDB's count until it reaches `want` (every 20 ms once past 90 %, every 200 ms
    before: a count costs InfluxDB more as the data grows, and that CPU is the nodes' too);
    Failure if it stalls for STALL_S (lost) or a node dies."""
    stored, moved = 0, time.monotonic()
    while stored < want:
        for node in nodes:
            node.check()
        count = bench.count(database, q)
        if count != stored:
            stored, moved = count, time.monotonic()
        elif time.monotonic() - moved > STALL_S:
            raise Failure(f"InfluxDB's count stuck at {stored} of {want} for {STALL_S:.0f} s")
        time.sleep(0.02 if stored >= 0.9 * want else 0.2)  # the measurement's resolution
    return stored


def throughput(messages: int, rounds: int, publisher_count: int, keep_logs: bool) -> int:
    load = fridges()
    print(
        f"{messages:,} QoS 1 messages per run from {publisher_count} publisher processes over "
        f"{len(load)} fridges ({partitions_covered(load)}/{PARTITIONS} partitions), "
        f"{rounds} rounds, {os.cpu_count()} cores, load average at start "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    results: dict[int, list[Run]] = {1: [], 2: []}
    with Bench(keep_logs) as bench:
        for n in range(rounds):
            order = (1, 2) if n % 2 == 0 else (2, 1)
            for count in order:
                run = throughput_run(bench, f"r{n + 1}_{count}n", count, messages, publisher_count)
                results[count].append(run)
            one, two = results[1][-1], results[2][-1]
            print(
                f"round {n + 1} ({order[0]} node{'s' if order[0] > 1 else ''} first):", flush=True
            )
            for run in (one, two):
                print("  " + _describe(run), flush=True)
            print(
                f"  2 nodes / 1 node: throughput {two.rate / one.rate:.2f}, "
                f"node CPU per message {two.per_1k('nodes') / one.per_1k('nodes'):.2f}",
                flush=True,
            )
        r1 = statistics.median(r.rate for r in results[1])
        r2 = statistics.median(r.rate for r in results[2])
        c1 = statistics.median(r.per_1k("nodes") for r in results[1])
        c2 = statistics.median(r.per_1k("nodes") for r in results[2])
        p1 = statistics.median(r.per_1k("publishers") for r in results[1])
        p2 = statistics.median(r.per_1k("publishers") for r in results[2])
        print(f"median: 1 node {r1:,.0f} msg/s, 2 nodes {r2:,.0f} msg/s")
        print(f"  node CPU per 1,000 messages: 1 node {c1:.3f} s, 2 nodes {c2:.3f} s")
        print(f"  publishers' CPU per 1,000 messages: 1 node {p1:.3f} s, 2 nodes {p2:.3f} s")
        print(
            f"ratio 2 nodes / 1 node: throughput {r2 / r1:.2f}, node CPU per message {c2 / c1:.2f}"
        )
        print("nothing lost: every run's InfluxDB count equalled the messages sent")
    return 0


def _describe(run: Run) -> str:
    name = "1 node " if run.nodes == 1 else f"{run.nodes} nodes"
    per_node = ", ".join(
        f"{node} {len(held)} partitions {took:,.0f} msgs {run.cpu[node] / run.wall_s:.0%} CPU"
        for node, held, took in run.seen
    )
    return (
        f"{name} {run.rate:7,.0f} msg/s ({run.wall_s:.1f} s; all acked by the broker at "
        f"{run.acked_s:.1f} s)   CPU s per 1,000 msgs: nodes {run.per_1k('nodes'):.3f}, "
        f"publishers {run.per_1k('publishers'):.3f}, broker {run.per_1k('broker'):.3f}, "
        f"influxd {run.per_1k('influxd'):.3f}, postgres {run.per_1k('postgres'):.3f}\n"
        f"           {per_node}; machine busy {run.busy_s / run.wall_s:.2f} cores, "
        f"of which others {run.others_s / run.wall_s:.2f} ({run.busiest_others})"
    )


# -- soak ------------------------------------------------------------------------------------


class Probe:
    """One reading a second on a device of its own, and each one's publish-to-queryable
    latency: from the publish call to the InfluxDB answer that has it (polled every 50 ms)."""

    def __init__(self, bench: Bench, database: str, device: Device) -> None:
        self._bench = bench
        self._database = database
        self._device = device
        self._lock = threading.Lock()
        self._pending: dict[int, float] = {}  # ts -> when publish was called
        self._mids: dict[int, float] = {}  # mid -> when publish was called
        self._pubacks: dict[int, float] = {}  # mid -> when its PUBACK arrived
        self.latencies: list[float] = []
        self.published = 0
        self.poll_errors = 0
        self._stop_publishing = threading.Event()
        self._stop_polling = threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-probe")
        self._client.on_publish = self._on_publish
        self._threads = [
            threading.Thread(target=self._publish_loop, daemon=True),
            threading.Thread(target=self._poll_loop, daemon=True),
        ]

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, *args: object) -> None:
        self._pubacks[mid] = time.time()

    def start(self) -> None:
        self._client.connect(self._bench.broker.host, self._bench.broker.port)
        self._client.loop_start()
        for thread in self._threads:
            thread.start()

    def stop_publishing(self) -> None:
        self._stop_publishing.set()

    def finish(self, timeout: float) -> int:
        """Wait for the readings still pending; how many never became queryable."""
        self._stop_publishing.set()
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stop_polling.set()
        for thread in self._threads:
            thread.join(10)
        self._client.disconnect()
        self._client.loop_stop()
        return self.pending

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def puback_latencies(self) -> list[float]:
        return [self._pubacks[mid] - t for mid, t in self._mids.items() if mid in self._pubacks]

    def _publish_loop(self) -> None:
        due = time.monotonic()
        seq = 0
        while not self._stop_publishing.is_set():
            ts = time.time_ns() // 1_000_000
            body = payload(self._device, ts, seq)
            with self._lock:
                called = time.time()
                info = self._client.publish(self._device.topic, body, qos=1)
                self._pending[ts] = called
                self._mids[info.mid] = called
                self.published += 1
            seq += 1
            due += 1.0
            self._stop_publishing.wait(max(0.0, due - time.monotonic()))

    def _poll_loop(self) -> None:
        device = self._device.device_id
        while not self._stop_polling.is_set():
            with self._lock:
                oldest = min(self._pending, default=None)
            if oldest is not None:
                q = (
                    f"SELECT \"temp_c\" FROM telemetry WHERE device_id = '{device}' "
                    f"AND time >= {oldest * 1_000_000}"
                )
                try:
                    series = self._bench.query(self._database, q, timeout=10)
                except (httpx.HTTPError, RuntimeError):
                    self.poll_errors += 1
                    series = []
                answered = time.time()
                with self._lock:
                    for row in series[0]["values"] if series else []:
                        called = self._pending.pop(int(row[0]), None)
                        if called is not None:
                            self.latencies.append(answered - called)
            self._stop_polling.wait(PROBE_POLL_S)


class Statuses:
    """The publishers' newest status lines, read on a thread each."""

    def __init__(self, pubs: Sequence[subprocess.Popen[str]]) -> None:
        self.latest: list[dict[str, Any]] = [{} for _ in pubs]
        self._threads = [
            threading.Thread(target=self._read, args=(k, pub), daemon=True)
            for k, pub in enumerate(pubs)
        ]
        for thread in self._threads:
            thread.start()

    def _read(self, k: int, pub: subprocess.Popen[str]) -> None:
        assert pub.stdout is not None
        for line in pub.stdout:
            with contextlib.suppress(ValueError):
                self.latest[k] = json.loads(line)

    def total(self, key: str) -> float:
        return sum(float(s.get(key, 0)) for s in self.latest)

    def worst(self, key: str) -> float:
        return max((float(s.get(key, 0)) for s in self.latest), default=0.0)

    @property
    def finished(self) -> bool:
        return all(s.get("final") for s in self.latest)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def soak(
    minutes: float, rate: float, nodes_count: int, publisher_count: int | None, keep_logs: bool
) -> int:
    load, probe_device = soak_devices()
    seconds = minutes * 60
    count = publisher_count or max(2, math.ceil(rate / 1000))
    sites = {d.site_id for d in load}
    print(
        f"{nodes_count} node{'s' if nodes_count > 1 else ''}, {rate:,.0f} QoS 1 msg/s "
        f"({rate / DISTRICT_RATE:.1f} x the district's {DISTRICT_RATE:.0f}) for {minutes:g} min "
        f"from {count} paced publisher processes over {len(load):,} devices of {len(sites)} "
        f"sites ({partitions_covered(load)}/{PARTITIONS} partitions); probe "
        f"{probe_device.device_id} once a second; {os.cpu_count()} cores, load average at "
        f"start {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with Bench(keep_logs) as bench, cluster(bench, "soak", nodes_count) as (nodes, database):
        rss_start = {n.node_id: rss_bytes(n.pid) for n in nodes}
        rss_max = dict(rss_start)
        specs = [
            {
                "kind": "paced",
                "host": bench.broker.host,
                "port": bench.broker.port,
                "rate": rate / count,
                "seconds": seconds,
                "index": k,
                "of": count,
            }
            for k in range(count)
        ]
        probe = Probe(bench, database, probe_device)
        with publishers(specs) as pubs:
            groups = {n.node_id: [n.pid] for n in nodes} | bench.service_pids()
            whole = CpuMeter(groups)
            interval = CpuMeter(groups)
            statuses = Statuses(pubs)
            go = time.monotonic()
            _go(pubs)
            probe.start()
            next_line, acked_before, pub_cpu_before = PROGRESS_S, 0.0, 0.0
            while not statuses.finished:
                for node in nodes:
                    node.check()
                for k, pub in enumerate(pubs):
                    if pub.poll() is not None and not statuses.latest[k].get("final"):
                        time.sleep(0.5)  # its last line may still be on the way
                        if not statuses.latest[k].get("final"):
                            raise Failure(f"publisher {k} exited with {pub.returncode}")
                elapsed = time.monotonic() - go
                if elapsed >= seconds:
                    probe.stop_publishing()
                if elapsed > seconds + 180:
                    raise Failure("the publishers did not finish within 3 min of the end")
                if elapsed >= next_line:
                    wall, busy, cpu = interval.lap()
                    acked = statuses.total("acked")
                    pub_cpu = statuses.total("cpu_s")
                    taken = sum(n.metrics()["acked"] for n in nodes)
                    for n in nodes:
                        rss_max[n.node_id] = max(rss_max[n.node_id], rss_bytes(n.pid))
                    lat = list(probe.latencies)
                    node_pct = " ".join(f"{cpu[n.node_id] / wall:.0%}" for n in nodes)
                    others = (busy - sum(cpu.values()) - pub_cpu + pub_cpu_before) / wall
                    busiest = interval.others_text(wall)
                    p50 = _ms(percentile(lat, 50)) if lat else "-"
                    p99 = _ms(percentile(lat, 99)) if lat else "-"
                    print(
                        f"{int(elapsed) // 60:2d}:{int(elapsed) % 60:02d}  "
                        f"{(acked - acked_before) / wall:6,.0f} msg/s acked "
                        f"(due {statuses.total('due'):,.0f}, sent {statuses.total('sent'):,.0f}, "
                        f"acked {acked:,.0f}; nodes acked {taken:,.0f})  "
                        f"probes {len(lat)}: p50 {p50} p99 {p99}  "
                        f"CPU: nodes {sum(cpu[n.node_id] for n in nodes) / wall:.0%} "
                        f"({node_pct}), broker {cpu['broker'] / wall:.0%}, "
                        f"influxd {cpu['influxd'] / wall:.0%}, "
                        f"publishers {(pub_cpu - pub_cpu_before) / wall:.0%}, others {others:.0%}"
                        + (f" ({busiest})" if busiest != "-" else ""),
                        flush=True,
                    )
                    next_line += PROGRESS_S
                    acked_before, pub_cpu_before = acked, pub_cpu
                time.sleep(0.2)
            load_wall, load_busy, load_cpu = whole.lap()
            interval.lap()  # the tail since the last line
            whole_others = interval.others_overall()
            publishing_s = max(s["t"] for s in statuses.latest)
        sent = int(statuses.total("sent"))
        acked_total = int(statuses.total("acked"))
        drain_started = time.monotonic()
        q_fridges = (
            f"SELECT count(\"temp_c\") FROM telemetry WHERE device_id != '{probe_device.device_id}'"
        )
        q_cameras = 'SELECT count("fps") FROM telemetry'
        stored, moved = -1, time.monotonic()
        while True:
            for node in nodes:
                node.check()
            now = bench.count(database, q_fridges) + bench.count(database, q_cameras)
            if now != stored:
                stored, moved = now, time.monotonic()
            stalled = time.monotonic() - moved > STALL_S
            if stored >= acked_total or stalled or time.monotonic() - drain_started > 600:
                break
            time.sleep(0.5)
        drained_s = time.monotonic() - drain_started
        missing_probes = probe.finish(timeout=30)
        drain_wall, _, drain_cpu = whole.lap()
        rss_end = {n.node_id: rss_bytes(n.pid) for n in nodes}
        for n in nodes:
            rss_max[n.node_id] = max(rss_max[n.node_id], rss_end[n.node_id])
        metrics = {n.node_id: n.metrics() for n in nodes}

        lat = probe.latencies
        acks = probe.puback_latencies()
        achieved = acked_total / publishing_s
        lag = statuses.worst("lag_s")
        print(
            f"achieved: {achieved:,.0f} msg/s acknowledged over {publishing_s:.0f} s "
            f"(target {rate:,.0f}); publishers "
            + (
                f"kept up (longest wait of a due message {_ms(lag)}, "
                f"most in flight {statuses.worst('inflight_max'):,.0f})"
                if lag < 1.0 and achieved >= 0.98 * rate
                else f"could NOT keep up (a due message waited up to {lag:.1f} s)"
            )
        )
        if lat:
            print(
                f"publish-to-queryable, from the publish call, {len(lat)} probes: "
                f"p50 {_ms(percentile(lat, 50))}, p95 {_ms(percentile(lat, 95))}, "
                f"p99 {_ms(percentile(lat, 99))}, max {_ms(max(lat))}"
            )
        if acks:
            print(
                f"  of which publish-to-PUBACK: p50 {_ms(percentile(acks, 50))}, "
                f"p99 {_ms(percentile(acks, 99))}, max {_ms(max(acks))}"
            )
        rejected = sum(m["rejected"] for m in metrics.values())
        print(
            f"sent (acknowledged by the broker) {acked_total:,}, stored {stored:,} "
            f"(drained {drained_s:.1f} s after publishing ended); published without a PUBACK "
            f"{sent - acked_total}; rejected by ingest {rejected:.0f}; probes published "
            f"{probe.published}, never queryable {missing_probes}"
        )
        for n in nodes:
            m = metrics[n.node_id]
            print(
                f"  {n.node_id}: CPU {load_cpu[n.node_id] / load_wall:.0%} of a core while "
                f"publishing, {drain_cpu[n.node_id] / drain_wall:.0%} draining; RSS "
                f"{rss_start[n.node_id] / 2**20:.0f} MiB at start, "
                f"{rss_max[n.node_id] / 2**20:.0f} max, {rss_end[n.node_id] / 2**20:.0f} at end; "
                f"took {m['received']:,.0f} messages, acked {m['acked']:,.0f}, "
                f"spooled {m['spooled']:.0f}"
            )
        others = load_busy - sum(load_cpu.values()) - statuses.total("cpu_s")
        print(
            f"  while publishing: nodes {sum(load_cpu[n.node_id] for n in nodes) / load_wall:.0%}"
            f", broker {load_cpu['broker'] / load_wall:.0%}, influxd "
            f"{load_cpu['influxd'] / load_wall:.0%}, postgres "
            f"{load_cpu['postgres'] / load_wall:.0%}, publishers "
            f"{statuses.total('cpu_s') / load_wall:.0%}, this process "
            f"{load_cpu['bench'] / load_wall:.0%}, others {others / load_wall:.0%} "
            f"(of one core; {os.cpu_count()} cores); busiest others, in cores: "
            f"{whole_others}"
        )
        problems = []
        if stored < acked_total:
            problems.append(f"{acked_total - stored:,} acknowledged messages not stored")
        if stored > sent:
            problems.append(f"{stored - sent:,} more readings stored than were published")
        if missing_probes:
            problems.append(f"{missing_probes} probe readings never became queryable")
        if problems:
            bench.failed = True
            print("LOST: " + "; ".join(problems))
            return 1
        print("nothing lost: InfluxDB holds every message the broker acknowledged")
    return 0


# -- main ------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--as-publisher"]:
        spec = json.loads(argv[1])
        host, port, index, of = spec["host"], int(spec["port"]), spec["index"], spec["of"]
        if spec["kind"] == "burst":
            burst_publisher(host, port, int(spec["count"]), index, of)
        else:
            paced_publisher(host, port, float(spec["rate"]), float(spec["seconds"]), index, of)
        return 0

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    tp = modes.add_parser("throughput", help="msgs/s and CPU per message, 1 node and 2 nodes")
    tp.add_argument("--messages", type=int, default=60_000)
    tp.add_argument("--rounds", type=int, default=3)
    tp.add_argument("--publishers", type=int, default=3)
    sk = modes.add_parser("soak", help="publish-to-queryable latency under a steady load")
    sk.add_argument("--minutes", type=float, default=10.0)
    sk.add_argument("--rate", type=float, default=2800.0, help="messages/s (default 10x district)")
    sk.add_argument("--nodes", type=int, default=2)
    sk.add_argument("--publishers", type=int, default=None, help="default: one per 1,000 msg/s")
    for mode in (tp, sk):
        mode.add_argument("--keep-logs", action="store_true", help="keep all logs")
    args = parser.parse_args(argv)

    signal.signal(signal.SIGTERM, _signalled)
    try:
        if args.mode == "throughput":
            return throughput(args.messages, args.rounds, args.publishers, args.keep_logs)
        return soak(args.minutes, args.rate, args.nodes, args.publishers, args.keep_logs)
    except Failure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: everything it started is stopped and removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
