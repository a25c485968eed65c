"""python -m simulators: simulated kitchens and street cameras publishing to the MQTT broker.

Defaults come from the configuration (`[simulator]`, `[mqtt]`, `[paths]`; see
config/default.toml and MINGLIANG_* overrides); the options override them for one run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from config.settings import ConfigError, SimulatorSettings, load_settings
from devices.credentials import read_credentials
from devices.models import SiteKind
from devices.pki import TlsError
from devices.registry import InventoryError, Registry, load_registry
from simulators.faults import FaultError
from simulators.fleet import Fleet, FleetError, FleetStats


def _kitchens(text: str) -> int | None:
    if text == "all":
        return None
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number nor 'all'") from None
    if count < 0:
        raise argparse.ArgumentTypeError("the number of kitchens cannot be negative")
    return count


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators",
        description="Publish simulated sunshine-kitchen sensors and street-camera heartbeats "
        "over MQTT, as docs/mqtt-contract.md describes.",
    )
    parser.add_argument(
        "--kitchens",
        type=_kitchens,
        default=None,
        metavar="N|all",
        help="simulate the first N kitchens of the inventory (default: all)",
    )
    parser.add_argument(
        "--sites",
        default=None,
        metavar="ID,ID...",
        help="simulate these kitchens (and street grids) instead",
    )
    parser.add_argument(
        "--street",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="simulate every street camera's heartbeat (default: yes)",
    )
    parser.add_argument("--speed", type=float, help="simulated seconds per real second")
    parser.add_argument("--interval", type=float, help="simulated seconds between readings")
    parser.add_argument(
        "--street-heartbeat", type=float, help="simulated seconds between camera heartbeats"
    )
    parser.add_argument("--seed", type=int, help="seed of every random choice")
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="scripted fault kind:target@start+duration, e.g. fridge_warming:kitchen-0007@60s+20m "
        "(kinds: fridge_warming, gas_spike, silent, malformed; repeatable)",
    )
    parser.add_argument(
        "--duration", type=float, help="stop after this many real seconds (default: until Ctrl-C)"
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        metavar="FILE",
        help="devices' broker passwords, '<device id> <password>' lines (as python -m devices "
        "credentials create --out writes them): each kitchen connects as its gateway and each "
        "street camera as itself",
    )
    parser.add_argument(
        "--status-every", type=float, default=5.0, metavar="S", help="progress line period"
    )
    return parser.parse_args(argv)


def _sites(registry: Registry, args: argparse.Namespace) -> list[str] | None:
    if args.sites:
        return [s.strip() for s in args.sites.split(",") if s.strip()]
    if args.kitchens is None:
        return None
    kitchens = sorted(s.site_id for s in registry.sites_of_kind(SiteKind.KITCHEN))
    return kitchens[: args.kitchens]


def _simulator_settings(base: SimulatorSettings, args: argparse.Namespace) -> SimulatorSettings:
    updates: dict[str, object] = {"faults": [*base.faults, *args.fault]}
    for option, key in (
        ("speed", "speed"),
        ("interval", "interval_s"),
        ("street_heartbeat", "street_heartbeat_s"),
        ("seed", "seed"),
    ):
        if getattr(args, option) is not None:
            updates[key] = getattr(args, option)
    # Validate again: the options must meet the same bounds as the configuration.
    return SimulatorSettings.model_validate({**base.model_dump(), **updates})


def _status(stats: FleetStats, rate: float) -> str:
    sim = int(stats.sim_elapsed_s)
    kinds = " ".join(f"{k} {v}" for k, v in sorted(stats.by_kind.items()))
    return (
        f"[{stats.real_elapsed_s:7.1f}s] sim +{sim // 3600:02d}:{sim // 60 % 60:02d}:{sim % 60:02d}"
        f" | links {stats.connected}/{stats.clients}"
        f" | published {stats.published} acked {stats.acked} ({rate:.0f}/s)"
        f" | buffered {stats.buffered} dropped {stats.dropped} | {kinds}"
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings(os.environ if env is None else env)
        sim = _simulator_settings(settings.simulator, args)
        registry = load_registry(settings.inventory_path)
        fleet = Fleet(
            registry,
            sim,
            settings.mqtt.host,
            settings.mqtt.port,
            sites=_sites(registry, args),
            street=args.street,
            username=settings.mqtt.username,
            password=settings.mqtt.password,
            credentials=read_credentials(args.credentials) if args.credentials else None,
            tls_ca=settings.mqtt.tls_ca,
            limits=settings.ingest,
        )
    except (ConfigError, InventoryError, FaultError, TlsError, OSError) as exc:
        print(f"simulators: {exc}", file=sys.stderr)
        return 2
    except (ValidationError, ValueError) as exc:
        print(f"simulators: invalid option: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    streets = sum(1 for d in fleet.device_ids if registry.devices[d].type == "street_camera")
    kitchens = len(fleet.site_ids)
    print(
        f"simulating {kitchens} kitchen{'' if kitchens == 1 else 's'} and {streets} street "
        f"camera{'' if streets == 1 else 's'} "
        f"({len(fleet.device_ids)} devices) on {settings.mqtt.host}:{settings.mqtt.port}, "
        f"speed {sim.speed:g}, interval {sim.interval_s:g} s, seed {sim.seed}"
        + (f", faults: {', '.join(sim.faults)}" if sim.faults else ""),
        flush=True,
    )
    fleet.start(args.duration)
    last = fleet.stats()
    # Short waits: the loop must notice both a signal and the end of a --duration run.
    while fleet.running and not stop.wait(0.2):
        now = fleet.stats()
        if not fleet.running:
            break
        span = now.real_elapsed_s - last.real_elapsed_s
        if span >= args.status_every:
            print(_status(now, (now.acked - last.acked) / span), flush=True)
            last = now
    try:
        final = fleet.stop()
    except FleetError as exc:
        print(f"simulators: {exc}", file=sys.stderr)
        return 1
    rate = final.acked / final.real_elapsed_s if final.real_elapsed_s > 0 else 0.0
    print(_status(final, rate) + " (done)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
