"""The fleet against a real Mosquitto: what a bare subscriber sees."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from config.settings import load_settings
from devices.models import MetricType
from devices.registry import Registry
from ingest.telemetry.contract import Decoder
from simulators.fleet import Fleet, FleetError
from simulators.local_services import Mosquitto, free_port
from simulators.malformed import REASONS
from simulators.payloads import TOPIC_FILTER
from tests.simulators.conftest import Received, Subscriber, publish_retained, sim_settings
from tests.support import run_module

TOPIC_RE = re.compile(r"^v1/sites/([a-z0-9-]+)/devices/([a-z0-9-]+)/(telemetry|status|events)$")
Subscribe = Callable[[str], Subscriber]


def readings_of(payload: Any) -> list[dict[str, Any]]:
    """The value maps of a telemetry payload in any of the contract's three forms."""
    if isinstance(payload, list):
        assert payload and all(set(r) == {"ts", "values"} for r in payload)
        assert all(isinstance(r["ts"], str) and r["ts"].endswith("+08:00") for r in payload)
        return [r["values"] for r in payload]
    assert isinstance(payload, dict)
    if "values" in payload:
        assert isinstance(payload["ts"], int) and payload["ts"] > 1_700_000_000_000
        return [payload["values"]]
    return [payload]


def check_message(registry: Registry, message: Received) -> tuple[str, str]:
    match = TOPIC_RE.match(message.topic)
    assert match, message.topic
    site_id, device_id, channel = match.groups()
    device = registry.devices[device_id]
    assert device.site_id == site_id
    if channel == "status":
        assert message.payload == b"offline" or json.loads(message.payload)["state"] in (
            "online",
            "offline",
        )
        return device_id, channel
    payload = json.loads(message.payload)  # json.loads accepts NaN: check the values below
    if channel == "events":
        assert payload["kind"] and payload["severity"] in ("critical", "major", "minor", "warning")
        return device_id, channel
    metrics = registry.metrics_of(device)
    for values in readings_of(payload):
        for name, value in values.items():
            if name in ("device_id", "site_id"):
                assert value == (device_id if name == "device_id" else site_id)
                continue
            metric = metrics[name]
            if metric.type is MetricType.BOOL:
                assert type(value) is bool
            elif metric.type is MetricType.INT:
                assert type(value) is int
            elif metric.type is MetricType.FLOAT:
                assert type(value) in (int, float)
                assert value == value  # not NaN
            if metric.min is not None:
                assert value >= metric.min
            if metric.max is not None:
                assert value <= metric.max
    return device_id, channel


def telemetry_senders(messages: list[Received], site_prefix: str = "") -> set[str]:
    senders = set()
    for m in messages:
        match = TOPIC_RE.match(m.topic)
        if match and match[3] == "telemetry" and match[1].startswith(site_prefix):
            senders.add(match[2])
    return senders


def test_every_selected_kitchen_device_reports(
    registry: Registry, broker: Mosquitto, subscribe: Subscribe
) -> None:
    sites = ["kitchen-0001", "kitchen-0002", "kitchen-0003"]
    expected = {d.device_id for s in sites for d in registry.devices_at(s)}
    sub = subscribe(TOPIC_FILTER)
    fleet = Fleet(registry, sim_settings(), broker.host, broker.port, sites=sites, street=False)
    assert fleet.site_ids == sites
    with fleet:
        assert sub.wait_until(lambda msgs: telemetry_senders(msgs) >= expected, 10)
        # A second round: every device keeps publishing, spread over the interval.
        seen_before = len(sub.snapshot())
        assert sub.wait_until(lambda msgs: len(msgs) >= seen_before + 2 * len(expected), 10)
    stats = fleet.stats()

    def statuses(msgs: list[Received]) -> list[str]:
        topic = "v1/sites/kitchen-0001/devices/kitchen-0001-gw/status"
        return [json.loads(m.payload)["state"] for m in msgs if m.topic == topic and not m.retain]

    # Said on a clean stop; the broker may still be delivering it to us.
    assert sub.wait_until(lambda msgs: statuses(msgs)[-1:] == ["offline"], 5)
    assert statuses(sub.snapshot()) == ["online", "offline"]
    messages = sub.snapshot()
    assert telemetry_senders(messages) == expected  # nothing from kitchens not selected
    for message in messages:
        check_message(registry, message)
    assert stats.clients == 3
    assert stats.published == stats.acked > 2 * len(expected)
    assert stats.dropped == 0
    assert stats.by_kind["status"] == 6
    assert stats.by_type["fridge"] >= 2 * 3


def test_street_cameras_share_a_few_links(
    registry: Registry, broker: Mosquitto, subscribe: Subscribe
) -> None:
    sub = subscribe("v1/sites/+/devices/+/telemetry")
    settings = sim_settings(speed=60.0, street_connections=4)
    with Fleet(registry, settings, broker.host, broker.port, sites=[], street=True) as fleet:
        assert fleet.wait_for(lambda s: s.connected == s.clients == 4, 10)
        assert sub.wait_until(lambda msgs: len(telemetry_senders(msgs, "grid-")) == 1500, 15)
    messages = sub.snapshot()
    assert not telemetry_senders(messages, "kitchen-")
    for message in messages[:200]:
        check_message(registry, message)
        payload = json.loads(message.payload)
        assert payload["values"]["online"] is True
        assert message.topic.split("/")[4] == payload["device_id"]


def arrays(msgs: list[Received]) -> dict[str, int]:
    """Readings received in array payloads, per device."""
    out: dict[str, int] = {}
    for m in msgs:
        if m.topic.endswith("/telemetry") and m.payload.startswith(b"["):
            device_id = m.topic.split("/")[4]
            out[device_id] = out.get(device_id, 0) + len(json.loads(m.payload))
    return out


def test_silent_kitchen_drops_its_link_and_the_broker_says_offline(
    registry: Registry, broker: Mosquitto, subscribe: Subscribe
) -> None:
    status = "v1/sites/kitchen-0007/devices/kitchen-0007-gw/status"
    publish_retained(broker.host, broker.port, status, b"")  # forget earlier runs
    sub = subscribe("v1/sites/kitchen-0007/devices/+/#")
    # At speed 40: the link drops 1 s after the start and comes back 4 s later.
    settings = sim_settings(faults=["silent:kitchen-0007@40s+160s"])

    def states(msgs: list[Received]) -> list[str]:
        out = []
        for m in msgs:
            if m.topic == status:
                out.append("will" if m.payload == b"offline" else json.loads(m.payload)["state"])
        return out

    fleet = Fleet(
        registry, settings, broker.host, broker.port, sites=["kitchen-0007"], street=False
    )
    with fleet:
        assert sub.wait_until(lambda msgs: states(msgs)[:2] == ["online", "will"], 10)
        # The Will is retained: a newcomer learns that the gateway is offline.
        late = subscribe(status)
        assert late.wait_until(lambda msgs: len(msgs) >= 1, 5)
        first = late.snapshot()[0]
        assert (first.payload, first.retain) == (b"offline", True)
        assert fleet.stats().connected == 0
        # Back online, the gateway uploads what it buffered: an array per device.
        assert sub.wait_until(lambda msgs: states(msgs)[:3] == ["online", "will", "online"], 10)
        kitchen = {d.device_id for d in registry.devices_at("kitchen-0007")}
        assert sub.wait_until(lambda msgs: set(arrays(msgs)) == kitchen, 10)
    stats = fleet.stats()
    assert stats.by_kind["backlog"] >= len(kitchen)
    assert stats.buffered == 0
    # 4 s offline at 4 readings a second: about 16 readings per device.
    assert all(8 <= n <= 24 for n in arrays(sub.snapshot()).values()), arrays(sub.snapshot())
    for message in sub.snapshot():
        check_message(registry, message)


def test_malformed_fault_exercises_every_rejection(
    registry: Registry, broker: Mosquitto, subscribe: Subscribe
) -> None:
    decoder = Decoder(registry, load_settings({}).ingest)
    sub = subscribe("v1/#")
    # 16 bad messages at one per 0.1 s; the other devices of the kitchen stay well-formed.
    settings = sim_settings(speed=100.0, faults=["malformed:kitchen-0004-fridge-1@0s+1h"])
    reasons: set[str] = set()

    def all_reasons(msgs: list[Received]) -> bool:
        for m in msgs[len(seen) :]:
            decoded = decoder.decode(m.topic, m.payload, m.received_ns)
            reasons.update(r.reason.value for r in decoded.rejections)
        seen.extend(msgs[len(seen) :])
        return reasons >= set(REASONS)

    seen: list[Received] = []
    with Fleet(registry, settings, broker.host, broker.port, sites=["kitchen-0004"], street=False):
        assert sub.wait_until(all_reasons, 10), set(REASONS) - reasons
    for m in sub.snapshot():
        if "/kitchen-0004-fridge-1/" not in m.topic and "ghost" not in m.topic:
            decoded = decoder.decode(m.topic, m.payload, m.received_ns)
            assert not decoded.rejections, (m.topic, decoded.rejections)


def test_unreachable_broker_is_a_clear_error(registry: Registry) -> None:
    fleet = Fleet(registry, sim_settings(), "127.0.0.1", free_port(), sites=["kitchen-0001"])
    with pytest.raises(FleetError, match="cannot connect to the MQTT broker at 127"):
        fleet.run(duration_s=5)


def run_cli(broker: Mosquitto, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MINGLIANG_MQTT__HOST": broker.host,
        "MINGLIANG_MQTT__PORT": str(broker.port),
    }
    return run_module("simulators", *args, env=env)


def test_command_line_runs_for_a_bounded_time(broker: Mosquitto) -> None:
    done = run_cli(
        broker,
        *("--kitchens", "2", "--no-street", "--speed", "20", "--duration", "1.5"),
        *("--status-every", "0.5", "--fault", "gas_spike:kitchen-0002@0s+1m"),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("simulating 2 kitchens and 0 street cameras (21 devices)")
    assert "faults: gas_spike:kitchen-0002@0s+1m" in lines[0]
    assert any("links 2/2" in line for line in lines[1:])
    assert lines[-1].endswith("(done)")
    assert "event 1" in lines[-1]  # the gas detector's alarm


def test_command_line_rejects_a_bad_fault(broker: Mosquitto) -> None:
    done = run_cli(broker, "--kitchens", "1", "--fault", "gas_spike:kitchen-0001@later+1m")
    assert done.returncode == 2
    assert "'gas_spike:kitchen-0001@later+1m'" in done.stderr
