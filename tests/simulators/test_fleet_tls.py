"""The fleet over TLS, against a real Mosquitto with a TLS listener."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.pki import TlsFiles, make_test_pki
from devices.registry import Registry
from simulators.fleet import Fleet, FleetError
from simulators.local_services import Mosquitto
from tests.simulators.conftest import sim_settings
from tests.support import run_module


@pytest.fixture
def pki(tmp_path: Path) -> TlsFiles:
    return make_test_pki(tmp_path / "tls", ["127.0.0.1"])


@pytest.fixture
def tls_broker(tmp_path: Path, pki: TlsFiles) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto", tls=pki) as broker:
        yield broker


def test_the_fleet_publishes_over_tls(
    tls_broker: Mosquitto, pki: TlsFiles, registry: Registry
) -> None:
    sites = ["kitchen-0001", "kitchen-0002", "kitchen-0003"]
    fleet = Fleet(
        registry,
        sim_settings(),
        tls_broker.host,
        tls_broker.port,
        sites=sites,
        street=False,
        tls_ca=pki.ca,
    )
    with fleet:
        # Every PUBACK came back over TLS: the broker has each of these messages.
        assert fleet.wait_for(lambda s: s.connected == s.clients == 3 and s.acked >= 200, 15)
    stats = fleet.stats()
    assert stats.dropped == 0


def test_a_fleet_that_does_not_trust_the_broker_says_so(
    tls_broker: Mosquitto, tmp_path: Path, registry: Registry
) -> None:
    other = make_test_pki(tmp_path / "other-tls", ["127.0.0.1"])
    fleet = Fleet(
        registry,
        sim_settings(),
        tls_broker.host,
        tls_broker.port,
        sites=["kitchen-0001"],
        street=False,
        tls_ca=other.ca,
    )
    with pytest.raises(FleetError, match="certificate verify failed"):
        fleet.run(duration_s=5)


def test_the_command_line_uses_the_configured_ca(tls_broker: Mosquitto, pki: TlsFiles) -> None:
    env = {
        **os.environ,
        "MINGLIANG_MQTT__HOST": tls_broker.host,
        "MINGLIANG_MQTT__PORT": str(tls_broker.port),
        "MINGLIANG_MQTT__TLS_CA": str(pki.ca),
    }
    done = run_module(
        "simulators",
        "--kitchens",
        "2",
        "--no-street",
        "--duration",
        "1.5",
        "--status-every",
        "0.5",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert any("links 2/2" in line for line in done.stdout.splitlines()[1:])
    # A missing CA file is a clear error, not a trace.
    env["MINGLIANG_MQTT__TLS_CA"] = str(pki.ca.with_name("missing.pem"))
    done = run_module("simulators", "--kitchens", "1", "--duration", "1", env=env)
    assert done.returncode == 2
    assert "missing.pem: not a readable PEM CA certificate" in done.stderr
    assert "Traceback" not in done.stderr
