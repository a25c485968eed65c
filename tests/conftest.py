"""Real services for the tests: Mosquitto, InfluxDB 1.x and PostgreSQL on free loopback ports,
each in a temporary folder, started for the session and stopped after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devices.registry import Registry, load_registry
from simulators.local_services import Influxd, Mosquitto, Postgres
from tests.pg import postgres_server, reset_database, temporary_database
from tests.support import ManualClock

INVENTORY = Path(__file__).resolve().parent.parent / "config" / "inventory" / "inventory.toml"


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry(INVENTORY)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as mosquitto:
        yield mosquitto


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of the test's own, for tests that count every message the broker delivers
    (retained messages other tests leave on the shared broker would be counted too)."""
    with Mosquitto(tmp_path / "own-mosquitto") as mosquitto:
        yield mosquitto


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    with Influxd(tmp_path_factory.mktemp("influxd")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres: Postgres) -> Iterator[str]:
    with temporary_database(postgres) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A test that uses this runs twice: on a SQLite file, and on an emptied PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'alerts.db'}"
    url = str(request.getfixturevalue("postgres_url"))
    reset_database(url)
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
