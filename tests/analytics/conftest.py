"""Helpers for the rule tests: rule books from TOML text, and an engine driven in seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from analytics.events import Clear, Raise, Signal
from analytics.rules import RuleBook, RuleEngine, load_rules
from analytics.rules.schedule import day_start_ms
from devices.registry import Registry

RULES = Path(__file__).resolve().parents[2] / "config" / "rules.toml"
MONDAY = 20395  # local day number of Monday 2025-11-03
T0 = day_start_ms(MONDAY)  # its midnight, district time
KITCHEN = "kitchen-0002"  # open 10:30-14:00 and 16:30-21:30
FRIDGE = "kitchen-0002-fridge-1"

BookFactory = Callable[[str], RuleBook]


def at(seconds: float) -> int:
    """Epoch ms `seconds` after Monday 00:00 district time."""
    return T0 + round(seconds * 1000)


def hm(text: str, day: int = 0) -> int:
    """Epoch ms of 'HH:MM' (or 'HH:MM:SS') on Monday + `day`."""
    parts = [int(p) for p in text.split(":")]
    seconds = parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)
    return at(day * 86400 + seconds)


@pytest.fixture(scope="session")
def book(registry: Registry) -> RuleBook:
    return load_rules(RULES, registry)


@pytest.fixture(scope="session")
def plain_book(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> RuleBook:
    """The default rules without `hold_s`: a reading's value holds until the next one."""
    text = "".join(
        line
        for line in RULES.read_text("utf-8").splitlines(keepends=True)
        if not line.startswith("hold_s")
    )
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return load_rules(path, registry)


@pytest.fixture
def make_book(tmp_path: Path, registry: Registry) -> BookFactory:
    def make(text: str) -> RuleBook:
        path = tmp_path / "rules.toml"
        path.write_text(text, encoding="utf-8")
        return load_rules(path, registry)

    return make


class Driver:
    """An engine fed in seconds after Monday midnight, remembering every signal."""

    def __init__(self, engine: RuleEngine) -> None:
        self.engine = engine
        self.registry = engine.registry
        self.signals: list[Signal] = []

    def _keep(self, signals: Iterable[Signal]) -> list[Signal]:
        out = list(signals)
        self.signals.extend(out)
        return out

    def read(self, device_id: str, t: float, **values: float | int | bool | str) -> list[Signal]:
        device = self.registry.devices[device_id]
        return self._keep(self.engine.on_reading(device, at(t), values))

    def status(self, device_id: str, t: float, online: bool) -> list[Signal]:
        device = self.registry.devices[device_id]
        return self._keep(self.engine.on_status(device, at(t), online))

    def tick(self, t: float) -> list[Signal]:
        return self._keep(self.engine.on_tick(at(t)))

    def series(
        self, device_id: str, start: float, end: float, every: float, **values: float | bool
    ) -> list[Signal]:
        """The same values every `every` s from `start` to `end` inclusive, with ticks."""
        out: list[Signal] = []
        t = start
        while t <= end:
            out += self.read(device_id, t, **values)
            out += self.tick(t)
            t += every
        return out

    def raises(self) -> list[Raise]:
        return [s for s in self.signals if isinstance(s, Raise)]

    def clears(self) -> list[Clear]:
        return [s for s in self.signals if isinstance(s, Clear)]


@pytest.fixture
def drive(registry: Registry) -> Callable[[RuleBook], Driver]:
    return lambda book: Driver(RuleEngine(book, registry))
