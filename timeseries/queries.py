"""The read side of the schema (docs/schema.md): InfluxQL built from validated arguments."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devices.models import Metric, MetricType
from timeseries.influx import InfluxQueryClient, quote_ident, quote_string
from timeseries.schema import TELEMETRY

EVERY_RE = re.compile(r"^([1-9][0-9]{0,5})(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def every_seconds(every: str) -> int:
    match = EVERY_RE.match(every)
    if match is None:
        raise ValueError(f"every {every!r} is not a duration like 30s, 5m, 1h or 1d")
    return int(match[1]) * _UNIT_S[match[2]]


def _rfc3339(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000


async def last_seen(
    client: InfluxQueryClient, group_by: str, lookback_s: int, site_id: str | None = None
) -> dict[str, int]:
    """Epoch ms of the newest telemetry per `group_by` tag value within the lookback."""
    where = f"time > now() - {lookback_s}s"
    if site_id is not None:
        where += f" AND site_id = {quote_string(site_id)}"
    series = await client.query(
        f"SELECT * FROM {quote_ident(TELEMETRY)} WHERE {where} "
        f"GROUP BY {quote_ident(group_by)} ORDER BY time DESC LIMIT 1"
    )
    return {s.tags[group_by]: int(s.values[0][0]) for s in series if s.values}


@dataclass(frozen=True, slots=True)
class TelemetryPage:
    metrics: tuple[str, ...]
    points: list[dict[str, Any]]
    truncated: bool


async def telemetry(
    client: InfluxQueryClient,
    device_id: str,
    metrics: Sequence[Metric],
    since: datetime,
    until: datetime,
    every: str | None,
    max_points: int,
) -> TelemetryPage:
    """Raw readings, or one value per `every` (mean of numbers, last of the rest)."""
    where = (
        f"device_id = {quote_string(device_id)} AND time >= {_ns(since)} AND time < {_ns(until)}"
    )
    names = tuple(m.name for m in metrics)
    if every is None:
        select = ", ".join(quote_ident(n) for n in names)
        query = (
            f"SELECT {select} FROM {quote_ident(TELEMETRY)} WHERE {where} "
            f"ORDER BY time ASC LIMIT {max_points + 1}"
        )
    else:
        every_seconds(every)  # validated by the caller; this keeps the query safe regardless
        select = ", ".join(
            f"{'mean' if m.type in (MetricType.FLOAT, MetricType.INT) else 'last'}"
            f"({quote_ident(m.name)}) AS {quote_ident(m.name)}"
            for m in metrics
        )
        query = (
            f"SELECT {select} FROM {quote_ident(TELEMETRY)} WHERE {where} "
            f"GROUP BY time({every}) fill(none) LIMIT {max_points + 1}"
        )
    rows: list[dict[str, Any]] = []
    for series in await client.query(query):
        for row in series.rows():
            values = {n: row.get(n) for n in names}
            if all(v is None for v in values.values()):
                continue  # another metric of the device was reported at this time
            rows.append({"ts": _rfc3339(int(row["time"])), **values})
    truncated = len(rows) > max_points
    return TelemetryPage(names, rows[:max_points], truncated)
