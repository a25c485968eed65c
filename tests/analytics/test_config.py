"""The rule file: the default set, overrides, and errors that name file, key and value."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from analytics.events import TAXONOMY, Severity
from analytics.rules import HeartbeatRule, RuleBook, RulesError, ThresholdRule, load_rules
from devices.registry import Registry
from tests.analytics.conftest import FRIDGE, BookFactory, Driver, at

Drive = Callable[[RuleBook], Driver]

FRIDGE_RULE = """
[rules.fridge.too_warm]
check = "threshold"
kind = "cold_chain_temperature"
metric = "temp_c"
op = ">"
value = 8.0
for_s = 600
clear_value = 6.0
clear_for_s = 300
"""


def test_the_default_rules_load_and_cover_every_device_type(
    book: RuleBook, registry: Registry
) -> None:
    assert set(book.by_type) == set(registry.device_types)
    for type_name, rules in book.by_type.items():
        assert any(isinstance(r, HeartbeatRule) for r in rules.values()), type_name
        for rule in rules.values():
            assert rule.kind in TAXONOMY
    too_warm = book.by_type["fridge"]["too_warm"]
    assert isinstance(too_warm, ThresholdRule)
    assert too_warm.severity is Severity.MAJOR  # the kind's default
    assert book.by_type["smoke_detector"]["detector_alarm"].severity is Severity.CRITICAL


def test_severity_can_be_set(make_book: BookFactory) -> None:
    book = make_book(FRIDGE_RULE + 'severity = "critical"\n')
    assert book.by_type["fridge"]["too_warm"].severity is Severity.CRITICAL


# -- errors ------------------------------------------------------------------------------------


def error_of(make_book: BookFactory, text: str) -> str:
    with pytest.raises(RulesError) as info:
        make_book(text)
    return str(info.value)


def assert_names(message: str, *parts: str) -> None:
    assert "rules.toml" in message, message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_unknown_key(make_book: BookFactory) -> None:
    message = error_of(make_book, FRIDGE_RULE + "treshold = 9.0\n")
    assert_names(message, "rules.fridge.too_warm.treshold", "unknown key", "9.0")


def test_unknown_kind(make_book: BookFactory) -> None:
    message = error_of(make_book, FRIDGE_RULE.replace("cold_chain_temperature", "fridge_hot"))
    assert_names(message, "rules.fridge.too_warm.kind", "unknown kind", "'fridge_hot'")


def test_unknown_check(make_book: BookFactory) -> None:
    message = error_of(make_book, FRIDGE_RULE.replace('"threshold"', '"median"'))
    assert_names(message, "rules.fridge.too_warm.check", "'median'")


def test_unknown_metric_for_the_device_type(make_book: BookFactory) -> None:
    message = error_of(make_book, FRIDGE_RULE.replace('"temp_c"', '"gas_lel_pct"'))
    assert_names(message, "rules.fridge.too_warm.metric", "no such metric", "'gas_lel_pct'")


def test_bad_operator(make_book: BookFactory) -> None:
    message = error_of(make_book, FRIDGE_RULE.replace('">"', '"=>"'))
    assert_names(message, "rules.fridge.too_warm.op", "'=>'")


def test_bad_window(make_book: BookFactory) -> None:
    message = error_of(make_book, FRIDGE_RULE + 'schedule = ["22:00-25:00"]\n')
    assert_names(message, "rules.fridge.too_warm.schedule.windows", "22:00-25:00")


def test_bad_weekday(make_book: BookFactory) -> None:
    text = FRIDGE_RULE + 'schedule = { windows = ["22:00-06:00"], days = ["friday"] }\n'
    assert_names(error_of(make_book, text), "rules.fridge.too_warm.schedule.days.0", "'friday'")


def test_bad_hours(make_book: BookFactory) -> None:
    message = error_of(make_book, FRIDGE_RULE + 'schedule = "sometimes"\n')
    assert_names(message, "rules.fridge.too_warm.schedule.hours", "'sometimes'")


def test_unknown_device_type(make_book: BookFactory) -> None:
    message = error_of(make_book, FRIDGE_RULE.replace("rules.fridge", "rules.toaster"))
    assert_names(message, "rules.toaster", "unknown device type", "'toaster'")


def test_unknown_top_level_key(make_book: BookFactory) -> None:
    message = error_of(make_book, "colour = 'blue'\n" + FRIDGE_RULE)
    assert_names(message, "colour", "unknown key", "'blue'")


def test_value_of_the_wrong_type_for_the_metric(make_book: BookFactory) -> None:
    text = FRIDGE_RULE.replace('"temp_c"', '"door_open"')
    assert_names(error_of(make_book, text), "rules.fridge.too_warm.value", "bool", "8.0")


def test_ordering_needs_a_number(make_book: BookFactory) -> None:
    text = FRIDGE_RULE.replace("value = 8.0", "value = true")
    assert_names(error_of(make_book, text), "rules.fridge.too_warm.value", "numeric", "True")


def test_clear_value_on_the_wrong_side(make_book: BookFactory) -> None:
    text = FRIDGE_RULE.replace("clear_value = 6.0", "clear_value = 9.0")
    assert_names(error_of(make_book, text), "rules.fridge.too_warm.clear_value", "9.0")


def test_negative_duration(make_book: BookFactory) -> None:
    text = FRIDGE_RULE.replace("for_s = 600", "for_s = -5")
    assert_names(error_of(make_book, text), "rules.fridge.too_warm.for_s", "-5")


def test_duration_above_a_day(make_book: BookFactory) -> None:
    text = FRIDGE_RULE.replace("for_s = 600", "for_s = 90000")
    assert_names(error_of(make_book, text), "rules.fridge.too_warm.for_s", "90000")


def test_flatline_needs_a_numeric_metric(make_book: BookFactory) -> None:
    text = """
    [rules.fridge.stuck_door]
    check = "flatline"
    kind = "sensor_flatline"
    metric = "door_open"
    tolerance = 0
    for_s = 3600
    """
    assert_names(error_of(make_book, text), "rules.fridge.stuck_door.metric", "'door_open'")


def test_rate_gap_must_exceed_the_minimum_interval(make_book: BookFactory) -> None:
    text = """
    [rules.fridge.jump]
    check = "rate"
    kind = "rapid_change"
    metric = "temp_c"
    max_per_min = 20
    max_gap_s = 5
    min_interval_s = 10
    clear_for_s = 60
    """
    assert_names(error_of(make_book, text), "rules.fridge.jump.min_interval_s", "10.0")


def test_not_toml(make_book: BookFactory) -> None:
    assert_names(error_of(make_book, "[rules.fridge\n"), "not valid TOML")


def test_missing_file(tmp_path: Path, registry: Registry) -> None:
    with pytest.raises(RulesError, match=re.escape(str(tmp_path / "nope.toml"))):
        load_rules(tmp_path / "nope.toml", registry)


def test_override_errors(make_book: BookFactory) -> None:
    cases = {
        "[sites.kitchen-9999.fridge.too_warm]\nfor_s = 1": ("sites.kitchen-9999", "unknown site"),
        "[sites.kitchen-0002.fridge.too_cold]\nfor_s = 1": (
            "sites.kitchen-0002.fridge.too_cold",
            "'too_cold'",
        ),
        "[sites.kitchen-0002.toaster.too_warm]\nfor_s = 1": (
            "sites.kitchen-0002.toaster",
            "'toaster'",
        ),
        "[devices.fridge-x.too_warm]\nfor_s = 1": ("devices.fridge-x", "unknown device"),
        f"[devices.{FRIDGE}.too_warm]\nop = '~'": (f"devices.{FRIDGE}.too_warm.op", "'~'"),
        f"[devices.{FRIDGE}.too_warm]\ncheck = 'rate'": (
            f"devices.{FRIDGE}.too_warm.check",
            "cannot be overridden",
        ),
        "[sites.kitchen-0002.fridge.too_warm]\nfor_s = 'long'": (
            "sites.kitchen-0002.fridge.too_warm.for_s",
            "'long'",
        ),
    }
    for text, parts in cases.items():
        assert_names(error_of(make_book, FRIDGE_RULE + text), *parts)


# -- overrides ---------------------------------------------------------------------------------


OVERRIDES = (
    FRIDGE_RULE
    + """
[sites.kitchen-0002.fridge.too_warm]
for_s = 1200

[devices.kitchen-0003-fridge-1.too_warm]
value = 10.0
clear_value = 7.0

[devices.kitchen-0004-fridge-1.too_warm]
enabled = false
"""
)


def test_overrides_per_site_and_per_device(make_book: BookFactory, drive: Drive) -> None:
    d = drive(make_book(OVERRIDES))
    fridges = [f"kitchen-000{i}-fridge-1" for i in (1, 2, 3, 4)]
    for t in range(0, 1800, 10):
        for fridge in fridges:
            d.read(fridge, t, temp_c=9.0)
    fired = {r.source.device_id: r.at_ms for r in d.raises()}
    assert fired == {
        "kitchen-0001-fridge-1": at(600),  # the type's rule
        "kitchen-0002-fridge-1": at(1200),  # its site holds longer
        # kitchen-0003's fridge alerts above 10 °C only; kitchen-0004's has the rule off
    }


def test_a_device_override_applies_over_its_site_override(
    make_book: BookFactory, registry: Registry
) -> None:
    book = make_book(OVERRIDES + f"\n[devices.{FRIDGE}.too_warm]\nvalue = 9.5\n")
    (rule,) = book.rules_for(registry.devices[FRIDGE])
    assert isinstance(rule, ThresholdRule)
    assert (rule.value, rule.for_s, rule.clear_value) == (9.5, 1200, 6.0)


def test_a_rule_off_by_default_can_be_enabled_for_one_site(
    make_book: BookFactory, registry: Registry
) -> None:
    book = make_book(
        FRIDGE_RULE.replace("clear_for_s = 300", "clear_for_s = 300\nenabled = false")
        + "[sites.kitchen-0002.fridge.too_warm]\nenabled = true\n"
    )
    assert [r.id for r in book.rules_for(registry.devices[FRIDGE])] == ["too_warm"]
    assert book.rules_for(registry.devices["kitchen-0001-fridge-1"]) == ()


def test_default_book_has_one_rule_per_kind_per_device_type(book: RuleBook) -> None:
    # Two rules of one kind on a device would raise two alerts for one incident.
    for device_type, rules in book.by_type.items():
        kinds = [rule.kind for rule in rules.values()]
        assert len(kinds) == len(set(kinds)), (device_type, kinds)
