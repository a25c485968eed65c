"""The rule book: telemetry rules per device type, with per-site and per-device overrides.

`load_rules(path, registry)` reads `config/rules.toml` (format in docs/rules.md), validates
every rule against the taxonomy of `analytics.events` and the device types and metrics of
the inventory, resolves the overrides, and raises `RulesError` naming the file, the dotted key
and the offending value on the first problem.

Overrides replace a rule's fields by rule id: the base rule of the device type, then the
site's override (`sites.<site>.<type>.<rule>`), then the device's (`devices.<device>.<rule>`).
The replacement is shallow: an override's `schedule` replaces the whole schedule. A rule's
`check` cannot be overridden, since its progress is kept in a check-specific shape.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from analytics.events import TAXONOMY, Severity
from analytics.rules.schedule import WEEKDAYS, Schedule, Window, parse_hours
from devices.models import NAME_PATTERN, Device, MetricType
from devices.registry import Registry

MAX_HOLD_S = 86_400  # durations up to a day; schedules rely on it (see schedule.py)

RuleName = Annotated[str, Field(pattern=NAME_PATTERN, description="snake_case name")]
Seconds = Annotated[float, Field(ge=0, le=MAX_HOLD_S)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
Operator = Literal[">", ">=", "<", "<=", "==", "!="]
ORDERING = frozenset({">", ">=", "<", "<="})
NUMERIC = frozenset({MetricType.FLOAT, MetricType.INT})


class RulesError(Exception):
    """The rule file cannot be used; the message names file, key and value."""


class FieldProblem(ValueError):
    """A check across fields, reported against the field that has to change."""

    def __init__(self, key: str, message: str, value: Any) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message, self.value = key, message, value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleSpec(_Model):
    """When a rule is active. `schedule = "closed"` and `schedule = ["22:00-06:00"]` are
    shorthands for `{hours = "closed"}` and `{windows = ["22:00-06:00"]}`."""

    hours: Literal["open", "closed"] | None = Field(
        None,
        description="The site's opening hours from the inventory (district time, UTC+8): "
        "active while open, or while closed.",
    )
    windows: tuple[str, ...] | None = Field(
        None,
        description="Explicit daily windows 'HH:MM-HH:MM' in district time; a window whose "
        "end is not after its start ends the next day.",
        min_length=1,
        max_length=24,
    )
    days: tuple[Weekday, ...] | None = Field(
        None,
        description="Weekdays the windows (or closed periods) start on; every day if absent.",
        min_length=1,
        max_length=7,
    )
    early_s: int = Field(
        0,
        description="With `hours`: the site counts as open this long before each service "
        "(staff preparing).",
        ge=0,
        le=6 * 3600,
    )
    late_s: int = Field(
        0,
        description="With `hours`: ... and this long after each service (cleaning up).",
        ge=0,
        le=6 * 3600,
    )

    @field_validator("windows")
    @classmethod
    def _windows_parse(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for text in value or ():
            Window.parse(text)  # ValueError names the window
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ScheduleSpec:
        if (self.hours is None) == (self.windows is None):
            raise FieldProblem(
                "hours", "give either hours ('open' or 'closed') or windows", self.hours
            )
        if self.windows is not None and (self.early_s or self.late_s):
            raise FieldProblem("early_s", "early_s and late_s apply to hours only", self.early_s)
        return self

    def compile(self, opening_hours: str) -> Schedule:
        days = None if self.days is None else frozenset(WEEKDAYS.index(d) for d in self.days)
        if self.windows is not None:
            return Schedule(tuple(Window.parse(w) for w in self.windows), False, days)
        widened = tuple(w.widened(self.early_s, self.late_s) for w in parse_hours(opening_hours))
        return Schedule(widened, self.hours == "closed", days)


class _Rule(_Model):
    id: RuleName = Field(description="Rule id, unique within its device type (the table name).")
    kind: str = Field(description="Alert kind from analytics.events.TAXONOMY.", min_length=1)
    severity: Severity = Field(description="Alert severity; the kind's default if not given.")
    enabled: bool = Field(True, description="false turns the rule off (e.g. in an override).")
    description: str = Field("", description="What the rule is for.", max_length=500)
    schedule: ScheduleSpec | None = Field(
        None, description="When the rule may fire; always if absent."
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind")
        if "severity" not in data:
            known = isinstance(kind, str) and kind in TAXONOMY
            # An unknown kind is reported by itself, not again as a missing severity.
            data["severity"] = TAXONOMY[kind].severity if known else Severity.WARNING
        schedule = data.get("schedule")
        if isinstance(schedule, str):
            data["schedule"] = {"hours": schedule}
        elif isinstance(schedule, list):
            data["schedule"] = {"windows": schedule}
        return data

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in TAXONOMY:
            raise ValueError(f"unknown kind; known: {', '.join(sorted(TAXONOMY))}")
        return value

    @property
    def metrics(self) -> tuple[str, ...]:
        return ()


class ThresholdRule(_Rule):
    """`metric op value` held `for_s`; clears once the clear condition has held `clear_for_s`."""

    check: Literal["threshold"] = Field(description="Rule check.")
    metric: RuleName = Field(description="Metric of the device type.")
    op: Operator = Field(description="Comparison; == and != also for bool and string metrics.")
    value: bool | float | str = Field(description="The threshold (a number, true/false, text).")
    for_s: Seconds = Field(0, description="How long the condition must hold before it fires.")
    clear_value: float | None = Field(
        None,
        description="Hysteresis for > and <: clears only beyond this value (below it for > "
        "and >=, above it for < and <=). Defaults to `value`.",
    )
    clear_for_s: Seconds = Field(0, description="How long the clear condition must hold.")
    hold_s: float | None = Field(
        None,
        description="How long a reading vouches for its value: a run is not extended more "
        "than this past the last reading, by ticks or across a gap. Absent: until the next "
        "reading, however late.",
        gt=0,
        le=MAX_HOLD_S,
    )

    @field_validator("value", mode="before")
    @classmethod
    def _scalar(cls, value: Any) -> Any:
        if not isinstance(value, bool | int | float | str):
            raise ValueError("must be a number, true/false or a string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ThresholdRule:
        numeric = isinstance(self.value, float)
        if self.op in ORDERING and not numeric:
            raise FieldProblem("value", f"op {self.op!r} needs a numeric value", self.value)
        if self.clear_value is not None:
            if self.op not in ORDERING:
                raise FieldProblem(
                    "clear_value", "applies to >, >=, < and <= only", self.clear_value
                )
            assert isinstance(self.value, float)
            if self.op in (">", ">=") and self.clear_value > self.value:
                raise FieldProblem(
                    "clear_value", f"must not be above value {self.value}", self.clear_value
                )
            if self.op in ("<", "<=") and self.clear_value < self.value:
                raise FieldProblem(
                    "clear_value", f"must not be below value {self.value}", self.clear_value
                )
        return self

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)


class HeartbeatRule(_Rule):
    """The device sent nothing alive for `silent_for_s` (tracked once it has been seen)."""

    check: Literal["heartbeat"] = Field(description="Rule check.")
    silent_for_s: float = Field(description="Silence that raises the alert.", gt=0, le=MAX_HOLD_S)


class FlatlineRule(_Rule):
    """The metric stays within a band `tolerance` wide for `for_s` while readings arrive."""

    check: Literal["flatline"] = Field(description="Rule check.")
    metric: RuleName = Field(description="Numeric metric of the device type.")
    tolerance: float = Field(
        description="Width of the band (max - min) the readings stay within.", ge=0, le=1e6
    )
    for_s: float = Field(description="How long the readings must stay flat.", gt=0, le=MAX_HOLD_S)

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)


class RateRule(_Rule):
    """|Δvalue| / Δt between consecutive readings, per minute, above `max_per_min`."""

    check: Literal["rate"] = Field(description="Rule check.")
    metric: RuleName = Field(description="Numeric metric of the device type.")
    max_per_min: float = Field(description="Largest plausible change per minute.", gt=0, le=1e9)
    max_gap_s: float = Field(
        description="Readings further apart than this give no rate: the gap resets the baseline.",
        gt=0,
        le=MAX_HOLD_S,
    )
    min_interval_s: float = Field(
        1.0,
        description="Readings closer than this to the baseline are skipped, so that a pair a "
        "few ms apart cannot make a huge rate out of noise.",
        ge=0,
        le=3600,
    )
    for_s: Seconds = Field(0, description="How long rates must stay too fast before it fires.")
    clear_for_s: Seconds = Field(description="How long rates must stay normal before it clears.")

    @model_validator(mode="after")
    def _gap_above_interval(self) -> RateRule:
        if self.min_interval_s >= self.max_gap_s:
            raise FieldProblem(
                "min_interval_s", f"must be below max_gap_s {self.max_gap_s}", self.min_interval_s
            )
        return self

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)


Rule = ThresholdRule | HeartbeatRule | FlatlineRule | RateRule
RULE_MODELS: Mapping[str, type[Rule]] = {
    "threshold": ThresholdRule,
    "heartbeat": HeartbeatRule,
    "flatline": FlatlineRule,
    "rate": RateRule,
}


class RulesFile(_Model):
    """The top level of config/rules.toml."""

    description: str = Field("", description="What this rule set is.", max_length=2000)
    rules: dict[str, dict[str, dict[str, Any]]] = Field(
        description="Rules by device type, then rule id."
    )
    sites: dict[str, dict[str, dict[str, dict[str, Any]]]] = Field(
        default_factory=dict,
        description="Per-site overrides: site id, device type, rule id, fields to replace.",
    )
    devices: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict,
        description="Per-device overrides: device id, rule id, fields to replace.",
    )


@dataclass(frozen=True)
class RuleBook:
    """Validated rules with their overrides resolved. Built by `load_rules`."""

    source: str
    by_type: Mapping[str, Mapping[str, Rule]]
    by_site: Mapping[tuple[str, str], Mapping[str, Rule]]  # (site, type) -> rules overridden
    by_device: Mapping[str, Mapping[str, Rule]]  # device -> rules overridden

    def rules_for(self, device: Device) -> tuple[Rule, ...]:
        """The device's enabled rules, overrides applied."""
        base = self.by_type.get(device.type, {})
        site = self.by_site.get((device.site_id, device.type), {})
        own = self.by_device.get(device.device_id, {})
        resolved = (own.get(rid) or site.get(rid) or rule for rid, rule in base.items())
        return tuple(r for r in resolved if r.enabled)


# -- loading -----------------------------------------------------------------------------------


def _describe(where: str, exc: ValidationError) -> str:
    errors = exc.errors()
    locs = [err["loc"] for err in errors]
    parts = []
    for err in errors:
        loc = err["loc"]
        if any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs):
            continue  # a container's complaint that only repeats its item's
        problem = err.get("ctx", {}).get("error")
        if isinstance(problem, FieldProblem):
            loc, msg, value = (*loc, problem.key), problem.message, problem.value
        else:
            msg, value = err["msg"].removeprefix("Value error, "), err.get("input")
        key = ".".join(str(p) for p in loc)
        at = ".".join(part for part in (where, key) if part) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{at}: {msg} (got {value!r})")
    return "; ".join(parts)


def _rule(data: Mapping[str, Any], rule_id: str, path: Path, where: str) -> Rule:
    if "id" in data:
        raise RulesError(f"{path}, {where}.id: the id is the table name (got {data['id']!r})")
    check = data.get("check")
    model = RULE_MODELS.get(check) if isinstance(check, str) else None
    if model is None:
        raise RulesError(
            f"{path}, {where}.check: unknown check, known: {', '.join(RULE_MODELS)} (got {check!r})"
        )
    try:
        return model.model_validate({**data, "id": rule_id})
    except ValidationError as exc:
        raise RulesError(f"{path}, {_describe(where, exc)}") from exc


def _fits_type(rule: Rule, type_name: str, registry: Registry, path: Path, where: str) -> None:
    """The rule's metric exists for the device type and has a type the check can use."""
    dtype = registry.device_types[type_name]
    for metric in rule.metrics:
        if metric not in dtype.metrics:
            raise RulesError(
                f"{path}, {where}.metric: {type_name} has no such metric, it has "
                f"{', '.join(dtype.metrics)} (got {metric!r})"
            )
        mtype = registry.metrics[metric].type
        if isinstance(rule, ThresholdRule):
            value = rule.value
            ok = (
                (mtype in NUMERIC and isinstance(value, float))
                or (mtype is MetricType.BOOL and isinstance(value, bool))
                or (mtype is MetricType.STRING and isinstance(value, str))
            )
            if not ok:
                raise RulesError(
                    f"{path}, {where}.value: {metric} is a {mtype} metric (got {value!r})"
                )
        elif mtype not in NUMERIC:
            raise RulesError(
                f"{path}, {where}.metric: a {rule.check} check needs a numeric metric, "
                f"{metric} is {mtype} (got {metric!r})"
            )


def _override(
    base: Mapping[str, Any],
    layers: Sequence[Mapping[str, Any]],
    rule_id: str,
    path: Path,
    where: str,
) -> Rule:
    merged = dict(base)
    for layer in layers:
        if "check" in layer:
            raise RulesError(
                f"{path}, {where}.check: the check of a rule cannot be overridden "
                f"(got {layer['check']!r})"
            )
        merged.update(layer)
    return _rule(merged, rule_id, path, where)


def load_rules(path: Path, registry: Registry) -> RuleBook:
    """Read and validate the rule file against the inventory; raise RulesError if unusable."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise RulesError(f"{path}: cannot open: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{path}: not valid TOML: {exc}") from exc
    try:
        top = RulesFile.model_validate(raw)
    except ValidationError as exc:
        raise RulesError(f"{path}, {_describe('', exc)}") from exc

    by_type: dict[str, dict[str, Rule]] = {}
    for type_name, rules in top.rules.items():
        if type_name not in registry.device_types:
            raise RulesError(f"{path}, rules.{type_name}: unknown device type (got {type_name!r})")
        for rule_id, body in rules.items():
            where = f"rules.{type_name}.{rule_id}"
            rule = _rule(body, rule_id, path, where)
            _fits_type(rule, type_name, registry, path, where)
            by_type.setdefault(type_name, {})[rule_id] = rule

    def base_of(type_name: str, rule_id: str, where: str) -> dict[str, Any]:
        body = top.rules.get(type_name, {}).get(rule_id)
        if body is None:
            known = ", ".join(top.rules.get(type_name, {})) or "none"
            raise RulesError(
                f"{path}, {where}: {type_name} has no rule of that id, it has {known} "
                f"(got {rule_id!r})"
            )
        return body

    by_site: dict[tuple[str, str], dict[str, Rule]] = {}
    for site_id, types in top.sites.items():
        if site_id not in registry.sites:
            raise RulesError(f"{path}, sites.{site_id}: unknown site (got {site_id!r})")
        for type_name, rules in types.items():
            if type_name not in registry.device_types:
                raise RulesError(
                    f"{path}, sites.{site_id}.{type_name}: unknown device type (got {type_name!r})"
                )
            for rule_id, layer in rules.items():
                where = f"sites.{site_id}.{type_name}.{rule_id}"
                rule = _override(base_of(type_name, rule_id, where), [layer], rule_id, path, where)
                _fits_type(rule, type_name, registry, path, where)
                by_site.setdefault((site_id, type_name), {})[rule_id] = rule

    by_device: dict[str, dict[str, Rule]] = {}
    for device_id, rules in top.devices.items():
        device = registry.devices.get(device_id)
        if device is None:
            raise RulesError(f"{path}, devices.{device_id}: unknown device (got {device_id!r})")
        site_layers = top.sites.get(device.site_id, {}).get(device.type, {})
        for rule_id, layer in rules.items():
            where = f"devices.{device_id}.{rule_id}"
            base = base_of(device.type, rule_id, where)
            layers = [site_layers.get(rule_id, {}), layer]
            rule = _override(base, layers, rule_id, path, where)
            _fits_type(rule, device.type, registry, path, where)
            by_device.setdefault(device_id, {})[rule_id] = rule

    return RuleBook(str(path), by_type, by_site, by_device)
