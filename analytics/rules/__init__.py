"""Telemetry rules: thresholds, heartbeats, flat lines and rates of change per device type.

Pure logic over the readings ingest produces: `load_rules` validates `config/rules.toml`
against the inventory, and `RuleEngine` turns readings, status reports and clock ticks into
`analytics.events.Raise` / `Clear` signals. See docs/rules.md.
"""

from __future__ import annotations

from analytics.rules.config import (
    FlatlineRule,
    HeartbeatRule,
    RateRule,
    Rule,
    RuleBook,
    RulesError,
    ScheduleSpec,
    ThresholdRule,
    load_rules,
)
from analytics.rules.engine import EngineStats, RuleEngine, RuleFailure, SnapshotError
from analytics.rules.schedule import Schedule, Window

__all__ = [
    "EngineStats",
    "FlatlineRule",
    "HeartbeatRule",
    "RateRule",
    "Rule",
    "RuleBook",
    "RuleEngine",
    "RuleFailure",
    "RulesError",
    "Schedule",
    "ScheduleSpec",
    "SnapshotError",
    "ThresholdRule",
    "Window",
    "load_rules",
]
