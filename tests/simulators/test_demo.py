"""The run command's main job: the system up with the whole district, data arriving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import paho.mqtt.client as paho

from simulators.local_services import Mosquitto, free_port, port_answers
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_demo_brings_up_the_system_and_all_254_kitchens_report_within_a_minute(
    tmp_path: Path, broker: Mosquitto
) -> None:
    influx_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        # A broker answers there: the demo leaves it alone and starts its own, with
        # authentication on, elsewhere. Nothing answers on the InfluxDB port, so the demo
        # starts its own there, with its data under the data folder.
        "MINGLIANG_MQTT__HOST": broker.host,
        "MINGLIANG_MQTT__PORT": str(broker.port),
        "MINGLIANG_INFLUX__URL": f"http://127.0.0.1:{influx_port}",
        "MINGLIANG_API__PORT": str(api_port),
        "MINGLIANG_PATHS__DATA_DIR": str(tmp_path / "data"),
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "simulators.demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as in a terminal
        # Ctrl-C works in a terminal even when this suite was started with SIGINT ignored
        # (nohup, a background job): the demo must not inherit that.
        preexec_fn=_interruptible,
    )
    seen: list[str] = []
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # the demo's own deadline: it reports or exits
            seen.append(line.rstrip())
            if line.startswith("all 254 kitchens are reporting"):
                break
        else:
            raise AssertionError("demo ended before all kitchens reported:\n" + "\n".join(seen))
        seconds = float(seen[-1].split(",")[1].split()[0])
        assert seconds < 60, seen[-1]
        assert any(line.startswith("database: started InfluxDB") for line in seen)
        started = next(line for line in seen if line.startswith("broker:   started Mosquitto"))
        assert "authentication on" in started and "anonymous refused" in started
        demo_port = int(started.split()[4].rstrip(",").rsplit(":", 1)[1])
        assert demo_port != broker.port
        refused: list[str] = []
        anonymous_device = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        anonymous_device.on_connect = lambda c, u, f, rc, p: refused.append(str(rc))
        anonymous_device.connect("127.0.0.1", demo_port)
        anonymous_device.loop_start()
        try:
            assert wait_until(lambda: refused, 10, "the demo broker's answer") == ["Not authorized"]
        finally:
            anonymous_device.loop_stop()
        token = (tmp_path / "data" / "demo-admin.token").read_text().strip()
        assert any(token in line for line in seen)  # the demo tells its user the token
        console = f"http://127.0.0.1:{api_port}/console/"
        assert any(console in line for line in seen)  # and where the console is
        assert httpx.get(console, timeout=10).status_code == 200
        signed_in = httpx.post(
            f"http://127.0.0.1:{api_port}/api/v1/session", json={"token": token}, timeout=10
        )
        assert signed_in.status_code == 200 and signed_in.json()["role"] == "admin"
        auth = {"Authorization": f"Bearer {token}"}
        anonymous = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/sites", timeout=10)
        assert anonymous.status_code == 401
        sites = httpx.get(
            f"http://127.0.0.1:{api_port}/api/v1/sites",
            params={"kind": "kitchen"},
            headers=auth,
            timeout=10,
        ).json()
        assert sites["reporting"] == 254
        fridge = httpx.get(
            f"http://127.0.0.1:{api_port}/api/v1/devices/kitchen-0007-fridge-1/telemetry",
            params={"metric": "temp_c"},
            headers=auth,
            timeout=10,
        ).json()
        assert fridge["points"] and all(-60 < p["temp_c"] < 60 for p in fridge["points"])
        assert (tmp_path / "data" / "influxdb" / "data").is_dir()

        # Video: eight kitchen cameras push over WHIP, four street cameras are pulled over RTSP.
        def live() -> list[dict[str, object]]:
            cameras = httpx.get(
                f"http://127.0.0.1:{api_port}/api/v1/cameras", headers=auth, timeout=10
            ).json()
            return [c for c in cameras if c["online"]]

        online = wait_until(lambda: len(found := live()) >= 12 and found, 90, "12 live cameras")
        assert sorted({c["transport"] for c in online}) == ["rtsp", "whip"]
        snapshot = httpx.get(
            f"http://127.0.0.1:{api_port}/api/v1/cameras/kitchen-0001-cam-1/snapshot.jpg",
            headers=auth,
            timeout=10,
        )
        assert snapshot.status_code == 200 and snapshot.content.startswith(b"\xff\xd8")
        truth = (tmp_path / "data" / "ground-truth.jsonl").read_text().splitlines()
        assert len(truth) >= 7  # the scripted happenings, with when and where
    finally:
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        os.killpg(demo.pid, signal.SIGINT)
        out, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, out
    assert "stopped" in out and "error" not in out, out[-2000:]
    # It stopped what it started.
    assert not port_answers("127.0.0.1", influx_port)
    assert not port_answers("127.0.0.1", api_port)
