"""`./mingliang up`: the whole system with the district simulated, on one machine.

Uses the configured broker and InfluxDB, starting local ones (data under `paths.data_dir`) when
none answers on a loopback address; starts the service (`python -m api`) and the simulators
(`python -m simulators`) with their logs in `data/logs/`; then shows the kitchens' data
arriving through the API until all report, and a status line every few seconds. Ctrl-C stops
what it started, in reverse order.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import httpx

from alerts.store import AlertStore
from config.settings import ConfigError, Settings, load_settings
from devices.credentials import (
    CredentialStore,
    read_credentials,
    write_atomically,
    write_broker_files,
)
from devices.models import SiteKind
from devices.registry import InventoryError, Registry, load_registry
from devices.tokens import Role, TokenStore
from simulators.local_services import (
    BrokerAuth,
    Influxd,
    Mosquitto,
    ServiceError,
    free_port,
    port_answers,
)
from simulators.rtsp import gstreamer_available

ROOT = Path(__file__).resolve().parent.parent

# A few things going wrong, so the rejections, the spool of faulty data and the fault curves
# have something to show. See docs/simulators.md for the syntax.
DEMO_FAULTS = (
    "malformed:kitchen-0013-fridge-1@20s+30m",  # rejections to read at /api/v1/ingest/rejections
    "gas_spike:kitchen-0021@60s+2m",  # a gas_leak alert at once, resolved after the spike
    "silent:kitchen-0042@90s+12m",  # device_offline alerts after 10 min of silence
    "fridge_warming:kitchen-0007@30s+30m",  # cold_chain_temperature after ~20 min
)


# Cameras: a few kitchen cameras push over WHIP, the inventory's four street cameras are served
# over RTSP for the service to pull, and some scenes have scripted happenings whose ground
# truth goes to data/ground-truth.jsonl (see docs/simulators.md).
DEMO_PUSHED_CAMERAS = 8
DEMO_HAPPENINGS = (
    "kitchen-0001-cam-1=burner_on@0+1h,person_walking@20+15,lens_covered@60+20",
    "kitchen-0001-cam-2=flame_outside_stove@40+20",
    "kitchen-0002-cam-1=night_blob@30+20,frozen@90+30",
    "kitchen-0003-cam-1=blurred@45+30,knocked_aside@120+60",
    "kitchen-0004-cam-1=burner_on@0+30m",  # flame_unattended after 10 minutes
    "street-cam-00001=vendor_stopping@30+4m",
)

DEMO_TOKEN_NAME = "demo-admin"
OPTIONAL = frozenset({"cameras"})  # the demo goes on without video if its simulator fails


class DemoError(Exception):
    """The demo cannot start; the message says what to do."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _influx_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url.rstrip('/')}/ping", timeout=1).status_code == 204
    except httpx.HTTPError:
        return False


INGEST_ACCOUNT = "mingliang-ingest"
RELAY_ACCOUNT = "mingliang-relay"


def demo_credentials(settings: Settings, registry: Registry, path: Path) -> dict[str, str]:
    """A broker password for every device and for the service's ingest and relay clients,
    kept in `path` (readable by its owner only) as a device keeps its own; reused from there
    while the accounts are active, issued anew (one transaction) where they are not."""
    known: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        known = read_credentials(path)
    store = AlertStore(settings.alert_store_url)
    try:
        store.create_schema()
        credentials = CredentialStore(store.engine, actor="demo")
        credentials.create_schema()
        active = credentials.active()
        wanted: list[tuple[str, str, str | None]] = [
            (INGEST_ACCOUNT, "ingest", None),
            (RELAY_ACCOUNT, "relay", None),
        ]
        wanted += [(d.device_id, "device", d.site_id) for d in registry.devices.values()]
        missing = [w for w in wanted if w[0] not in known or w[0] not in active]
        if missing:
            known.update(credentials.issue(missing))
            write_atomically(path, "".join(f"{n} {pw}\n" for n, pw in known.items()), 0o600)
        write_broker_files(registry, credentials, path.parent)
    finally:
        store.close()
    return known


@contextlib.contextmanager
def broker(settings: Settings, registry: Registry) -> Iterator[dict[str, str]]:
    """The demo's own broker, authentication on: every device, ingest and the relay with an
    account of their own, anonymous clients refused. Yields the service's MQTT settings."""
    host = settings.mqtt.host
    if not _loopback(host):
        raise DemoError(f"the demo runs its own broker on a loopback address, not {host}")
    # A broker of the machine's own (often on 1883, anonymous) is left alone.
    port = settings.mqtt.port if not port_answers(host, settings.mqtt.port) else free_port(host)
    folder = settings.data_dir / "broker"
    secrets = demo_credentials(settings, registry, folder / "credentials.secrets")
    auth = BrokerAuth(folder / "passwords", folder / "acl")
    with Mosquitto(settings.data_dir / "mosquitto", host, port, auth=auth):
        print(
            f"broker:   started Mosquitto on {host}:{port}, authentication on: "
            f"{len(secrets)} accounts (password file and ACL in {folder}), anonymous refused"
        )
        yield {
            "MINGLIANG_MQTT__PORT": str(port),
            "MINGLIANG_MQTT__USERNAME": INGEST_ACCOUNT,
            "MINGLIANG_MQTT__PASSWORD": secrets[INGEST_ACCOUNT],
            "MINGLIANG_MQTT__RELAY_USERNAME": RELAY_ACCOUNT,
            "MINGLIANG_MQTT__RELAY_PASSWORD": secrets[RELAY_ACCOUNT],
        }


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[None]:
    url = settings.influx.url
    if _influx_answers(url):
        print(f"database: using InfluxDB at {url}")
        yield
        return
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 8086
    if not _loopback(host) or settings.influx.api != "v1":
        raise DemoError(f"no InfluxDB answers at {url} (influx.url)")
    workdir = settings.data_dir / "influxdb"
    with Influxd(workdir, host, port):
        print(f"database: started InfluxDB on {url}, data in {workdir}")
        yield


@contextlib.contextmanager
def child(
    name: str, args: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            # Ctrl-C reaches the demo alone, which then stops its children in order; a child
            # that exits meanwhile is a real failure, not the user's Ctrl-C.
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )
    print(f"{name + ':':9} started (pid {proc.pid}), log in {log_path}")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _stop_with_parent() -> None:
    """In the child before it runs: SIGTERM when the demo dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _tail(path: Path, lines: int = 8) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def demo_token(settings: Settings) -> str:
    """The demo's administrator token: reused from data/demo-admin.token while it is valid."""
    path = settings.data_dir / "demo-admin.token"
    store = AlertStore(settings.alert_store_url)
    try:
        store.create_schema()
        tokens = TokenStore(store.engine)
        tokens.create_schema()
        with contextlib.suppress(OSError):
            known = path.read_text().strip()
            if known and tokens.verify(known) is not None:
                return known
        tokens.revoke(DEMO_TOKEN_NAME)
        secret, _ = tokens.create(DEMO_TOKEN_NAME, Role.ADMIN, None)
    finally:
        store.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")
    return secret


def wait_for_api(base: str, service: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise DemoError(f"the service exited with {service.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)  # polling a child process's readiness
    raise DemoError(f"the service did not become healthy in {timeout:.0f} s:\n{_tail(log)}")


_METRIC_RE = re.compile(r"^(mingliang_ingest_[a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", re.M)


def _metrics(base: str) -> dict[str, float]:
    totals: dict[str, float] = {}
    for name, _, value in _METRIC_RE.findall(httpx.get(f"{base}/metrics", timeout=5).text):
        totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def watch(
    base: str,
    kitchens: int,
    procs: dict[str, subprocess.Popen[bytes]],
    started: float,
    token: str,
) -> None:
    """Print kitchens reporting until all do, then a status line every 10 s, until stopped.

    `started` (time.monotonic) is when the demo began, so the time shown includes start-up.
    """
    all_reporting = False
    last_status = 0.0
    auth = {"Authorization": f"Bearer {token}"}
    while True:
        for name, proc in list(procs.items()):
            if proc.poll() is None:
                continue
            if name in OPTIONAL:
                print(f"\nthe {name} exited with {proc.returncode}; see its log; going on without")
                del procs[name]
                continue
            raise DemoError(f"the {name} exited with {proc.returncode}; see its log")
        try:
            if not all_reporting:
                sites = httpx.get(
                    f"{base}/api/v1/sites", params={"kind": "kitchen"}, headers=auth, timeout=10
                )
                reporting = sites.json()["reporting"]
                elapsed = time.monotonic() - started
                print(
                    f"\rkitchens reporting: {reporting:3d}/{kitchens} ({elapsed:4.1f} s)",
                    end="",
                    flush=True,
                )
                if reporting >= kitchens:
                    all_reporting = True
                    print(f"\nall {kitchens} kitchens are reporting, {elapsed:.1f} s after start")
                    print(f"open {base}/docs, or {base}/api/v1/sites?kind=kitchen")
            elif time.monotonic() - last_status >= 10:
                last_status = time.monotonic()
                m = _metrics(base)
                open_alerts = httpx.get(
                    f"{base}/api/v1/alerts",
                    params={"status": ["open", "acknowledged"], "limit": 500},
                    headers=auth,
                    timeout=10,
                ).json()["items"]
                cameras = httpx.get(f"{base}/api/v1/cameras", headers=auth, timeout=10).json()
                live = sum(1 for c in cameras if c["online"])
                print(
                    f"cameras live {live}  "
                    f"received {m.get('mingliang_ingest_messages_received_total', 0):,.0f}  "
                    f"stored {m.get('mingliang_ingest_points_written_total', 0):,.0f}  "
                    f"rejected {m.get('mingliang_ingest_rejected_total', 0):,.0f}  "
                    f"spooled {m.get('mingliang_ingest_spool_points', 0):,.0f}  "
                    f"open alerts {len(open_alerts)}  (Ctrl-C stops)"
                )
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            print(f"\nAPI not answering as expected: {exc!r}")
        time.sleep(1.0)  # the refresh rate of the display


def camera_args(settings: Settings, no_happenings: bool) -> list[str]:
    args = ["-m", "simulators.cameras", "--cameras", str(DEMO_PUSHED_CAMERAS)]
    args += ["--truth", str(settings.data_dir / "ground-truth.jsonl")]
    if gstreamer_available() is None:
        args.append("--rtsp")
    else:
        print("cameras:  GStreamer's RTSP server is missing: the RTSP cameras stay dark")
    if not no_happenings:
        for script in DEMO_HAPPENINGS:
            args += ["--script", script]
    return args


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./mingliang up", description=__doc__)
    parser.add_argument(
        "--no-faults", action="store_true", help="no scripted faults or camera happenings"
    )
    parser.add_argument("--speed", type=float, help="simulated seconds per real second")
    args = parser.parse_args(argv)
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows even when piped
    try:
        settings = load_settings(os.environ)
        registry = load_registry(settings.inventory_path)
    except (ConfigError, InventoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kitchens = len(registry.sites_of_kind(SiteKind.KITCHEN))
    base = f"http://{settings.api.host}:{settings.api.port}"
    logs = settings.data_dir / "logs"
    sim_args = ["-m", "simulators"]
    if not args.no_faults:
        for fault in DEMO_FAULTS:
            sim_args += ["--fault", fault]
    if args.speed:
        sim_args += ["--speed", str(args.speed)]
    try:
        if port_answers(settings.api.host, settings.api.port):
            raise DemoError(f"something already listens on {base} (api.port); stop it first")
        with contextlib.ExitStack() as stack:
            mqtt_env = stack.enter_context(broker(settings, registry))
            stack.enter_context(database(settings))
            service = stack.enter_context(child("service", ["-m", "api"], logs, mqtt_env))
            token = demo_token(settings)
            wait_for_api(base, service, logs / "service.log", timeout=60)
            print(f"api:      {base} (docs at {base}/docs)")
            print(f"console:  {base}/console/ (sign in with the token below)")
            print(f"token:    {token}  (admin; kept in {settings.data_dir / 'demo-admin.token'})")
            print(f'          curl -H "Authorization: Bearer {token}" {base}/api/v1/alerts')
            sim_args += ["--credentials", str(settings.data_dir / "broker" / "credentials.secrets")]
            simulators = stack.enter_context(child("simulators", sim_args, logs, mqtt_env))
            procs = {"service": service, "simulators": simulators}
            if settings.cameras.workers > 0:
                procs["cameras"] = stack.enter_context(
                    child("cameras", camera_args(settings, args.no_faults), logs)
                )
                print(f"          snapshot: {base}/api/v1/cameras/kitchen-0001-cam-1/snapshot.jpg")
            watch(base, kitchens, procs, started, token)
    except KeyboardInterrupt:
        print("\nstopped")
        return 0
    except (DemoError, ServiceError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
