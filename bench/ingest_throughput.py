"""End-to-end ingest throughput beside a bare paho subscriber, on the same broker, same run.

    python bench/ingest_throughput.py [--messages 50000] [--rounds 3]

Starts its own Mosquitto and InfluxDB on free ports. Each round publishes N QoS 1 telemetry
messages from a separate process, twice:
  * baseline: a bare paho subscriber (MQTT 5, QoS 1, auto-ack) counts them;
  * ingest:   the real service (`python -m api`) stores them; the clock stops when InfluxDB
              answers a count of N (published -> acknowledged -> queryable).
Prints messages/s for both, the medians and the ratio ingest / baseline (target >= 0.8), and
the CPU each consumer spent per message (one Python publisher is the ceiling of both rates on
a small machine; the CPU figure says how far ingest is from its own).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from procfs import cpu_seconds  # noqa: E402

from devices.registry import load_registry  # noqa: E402
from simulators.local_services import Influxd, Mosquitto, free_port  # noqa: E402

INVENTORY = ROOT / "config" / "inventory" / "inventory.toml"


def fridge_topics() -> list[str]:
    registry = load_registry(INVENTORY)
    return [
        f"v1/sites/{d.site_id}/devices/{d.device_id}/telemetry"
        for d in registry.devices.values()
        if d.type == "fridge"
    ]


def publish(host: str, port: int, count: int, base_ms: int) -> None:
    """Child process: publish `count` QoS 1 messages as fast as the broker takes them."""
    topics = fridge_topics()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{os.getpid()}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    payloads = [
        json.dumps(
            {"ts": base_ms + i, "values": {"temp_c": 3.5 + (i % 20) / 10, "humidity_pct": 70.0}}
        ).encode()
        for i in range(count)
    ]
    infos = []
    started = time.time()
    for i, payload in enumerate(payloads):
        infos.append(client.publish(topics[i % len(topics)], payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    print(json.dumps({"started": started, "published": time.time()}), flush=True)
    client.disconnect()
    client.loop_stop()


def subscribe(host: str, port: int, count: int) -> None:
    """Child process: the baseline, a bare paho subscriber; prints when the last arrived."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got = 0
    done = time.time()

    def on_message(client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        nonlocal got, done
        got += 1
        if got == count:
            done = time.time()
            client.disconnect()

    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=paho.MQTTv5
    )
    client.on_message = on_message
    client.on_subscribe = lambda *args: print("subscribed", flush=True)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 10_000
    client.connect(host, port, properties=props)
    client.subscribe("v1/sites/#", qos=1)
    cpu_before = time.process_time()
    client.loop_forever()
    cpu = time.process_time() - cpu_before
    print(json.dumps({"done": done, "received": got, "cpu_s": cpu}), flush=True)


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def _run_publisher(broker: Mosquitto, count: int) -> float:
    pub = _child("--as-publisher", broker.host, str(broker.port), str(count))
    out, _ = pub.communicate(timeout=600)
    return float(json.loads(out.strip().splitlines()[-1])["started"])


def baseline_round(broker: Mosquitto, count: int) -> tuple[float, float]:
    """(messages/s, CPU µs per message) of the bare subscriber."""
    sub = _child("--as-subscriber", broker.host, str(broker.port), str(count))
    assert sub.stdout is not None
    assert sub.stdout.readline().strip() == "subscribed"
    started = _run_publisher(broker, count)
    out, _ = sub.communicate(timeout=600)
    result = json.loads(out.strip().splitlines()[-1])
    return count / (result["done"] - started), result["cpu_s"] / count * 1e6


def ingest_round(
    broker: Mosquitto, influxd: Influxd, workdir: Path, count: int, n: int
) -> tuple[float, float]:
    """(messages/s published -> queryable, CPU µs per message) of the ingest service."""
    database = f"bench_{n}"
    api_port = free_port()
    env = {
        **os.environ,
        "MINGLIANG_MQTT__HOST": broker.host,
        "MINGLIANG_MQTT__PORT": str(broker.port),
        "MINGLIANG_MQTT__CLIENT_ID": f"bench-ingest-{n}",
        "MINGLIANG_INFLUX__URL": influxd.url,
        "MINGLIANG_INFLUX__DATABASE": database,
        "MINGLIANG_PATHS__DATA_DIR": str(workdir / f"data-{n}"),
        "MINGLIANG_API__PORT": str(api_port),
    }
    log = (workdir / f"ingest-{n}.log").open("w")
    service = subprocess.Popen(
        [sys.executable, "-m", "api", "serve", "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"ingest did not start; see {log.name}")
            time.sleep(0.1)
        cpu_before = cpu_seconds(service.pid)
        started = _run_publisher(broker, count)
        query = {"db": database, "q": 'SELECT count("temp_c") FROM telemetry'}
        while True:
            series = httpx.get(f"{influxd.url}/query", params=query).json()["results"][0]
            stored = series["series"][0]["values"][0][1] if "series" in series else 0
            if stored >= count:
                done = time.time()
                break
            time.sleep(0.02)  # polling resolution of the measurement
        cpu = cpu_seconds(service.pid) - cpu_before
        return count / (done - started), cpu / count * 1e6
    finally:
        service.terminate()
        service.wait(60)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--as-publisher", nargs=3, metavar=("HOST", "PORT", "N"), help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--as-subscriber", nargs=3, metavar=("HOST", "PORT", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.as_publisher:
        host, port, n = args.as_publisher
        publish(host, int(port), int(n), int(time.time() * 1000) - 3_600_000)
        return 0
    if args.as_subscriber:
        host, port, n = args.as_subscriber
        subscribe(host, int(port), int(n))
        return 0

    with tempfile.TemporaryDirectory(prefix="mingliang-bench-") as tmp:
        workdir = Path(tmp)
        with Mosquitto(workdir / "mosquitto") as broker, Influxd(workdir / "influxd") as influxd:
            bare: list[float] = []
            ingest: list[float] = []
            bare_cpu: list[float] = []
            ingest_cpu: list[float] = []
            print(
                f"{args.messages} QoS 1 messages per run, {args.rounds} rounds, "
                f"{os.cpu_count()} cores"
            )
            for n in range(args.rounds):
                rate, cpu = baseline_round(broker, args.messages)
                bare.append(rate)
                bare_cpu.append(cpu)
                rate, cpu = ingest_round(broker, influxd, workdir, args.messages, n)
                ingest.append(rate)
                ingest_cpu.append(cpu)
                print(
                    f"round {n + 1}: bare subscriber {bare[-1]:,.0f} msg/s   "
                    f"ingest end to end {ingest[-1]:,.0f} msg/s   "
                    f"ratio {ingest[-1] / bare[-1]:.2f}",
                    flush=True,
                )
            b, i = statistics.median(bare), statistics.median(ingest)
            print(f"median: bare subscriber {b:,.0f} msg/s, ingest {i:,.0f} msg/s")
            print(f"ratio ingest / bare subscriber: {i / b:.2f} (target >= 0.80)")
            bc, ic = statistics.median(bare_cpu), statistics.median(ingest_cpu)
            print(
                f"CPU per message: bare subscriber {bc:.0f} µs, ingest {ic:.0f} µs "
                f"(ingest alone could take ~{1e6 / ic:,.0f} msg/s per core)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
