"""The overdue check (reminders, escalation) with a district's open alerts, on SQLite.

    python bench/alert_overdue.py [--open 5000] [--repeat 30]

The service checks every 30 s for unacknowledged alerts to remind about or escalate. In a
steady state nothing is due: every open alert was reminded within its interval. Side by side:

  * baseline: the earlier check, which loaded every open alert older than the shortest
              interval, inside a write transaction (so it also held SQLite's write lock);
  * now:      `AlertStore.overdue`, which asks the database only for the alerts that are due
              and opens a write transaction only when there are some.

Prints the median and p90 of each and the ratio now / baseline. Figures, not assertions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select  # noqa: E402

from alerts.store import Alert, AlertStore  # noqa: E402
from alerts.store.db import transaction  # noqa: E402
from alerts.store.schema import alerts  # noqa: E402
from analytics.events import Severity  # noqa: E402
from analytics.lifecycle import Status  # noqa: E402

NOW = 1_700_000_000_000
MINUTE = 60_000
REMIND = {Severity.CRITICAL: 5 * MINUTE, Severity.MAJOR: 15 * MINUTE}
ESCALATE = {Severity.CRITICAL: 15 * MINUTE, Severity.MAJOR: 60 * MINUTE}


def populate(store: AlertStore, n: int) -> None:
    rows: list[dict[str, object]] = []
    for i in range(n):
        severity = Severity.CRITICAL if i % 5 == 0 else Severity.MAJOR
        first = NOW - (10 + i % 50) * MINUTE  # all older than the shortest interval
        rows.append(
            {
                "site_id": f"kitchen-{i % 254:04d}",
                "device_id": f"dev-{i}",
                "kind": "gas_leak" if severity is Severity.CRITICAL else "door_left_open",
                "category": "kitchen",
                "rule": "bench.rule",
                "severity": severity.value,
                "status": Status.OPEN.value,
                "case_status": None,
                "first_seen_ms": first,
                "last_seen_ms": first,
                "ended_ms": None,
                "count": 1,
                "evidence": [],
                "details": {},
                # Reminded a minute ago and escalated as far as their age warrants: not due.
                "escalation_level": 100,
                "last_reminded_ms": NOW - MINUTE,
                "updated_ms": first,
            }
        )
    with store.engine.begin() as conn:
        conn.execute(insert(alerts), rows)


def baseline(store: AlertStore) -> int:
    """The earlier query: every open alert past the shortest interval, in a write transaction."""
    shortest = min((*REMIND.values(), *ESCALATE.values()))
    query = (
        select(alerts)
        .where(
            alerts.c.status == Status.OPEN.value,
            alerts.c.severity.in_(sorted(s.value for s in REMIND)),
            alerts.c.first_seen_ms <= NOW - shortest,
        )
        .order_by(alerts.c.first_seen_ms, alerts.c.id)
    )
    due = 0
    with transaction(store.engine, write=True) as conn:
        for row in conn.execute(query):
            alert = Alert.from_mapping(row._mapping)
            every = REMIND[alert.severity]
            last = alert.last_reminded_ms
            if NOW - alert.first_seen_ms >= every and (last is None or NOW - last >= every):
                due += 1
    return due


def timed(call: Callable[[], object], repeat: int) -> list[float]:
    call()  # warm the caches
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=int, default=5000, help="open alerts in the store")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = AlertStore(f"sqlite:///{Path(folder) / 'alerts.db'}")
        store.create_schema()
        populate(store, args.open)
        assert baseline(store) == 0 and store.overdue(NOW, REMIND, ESCALATE) == []
        old = timed(lambda: baseline(store), args.repeat)
        new = timed(lambda: store.overdue(NOW, REMIND, ESCALATE), args.repeat)
        store.close()
    for name, values in (("baseline (load all open)", old), ("now (due only)", new)):
        p90 = statistics.quantiles(values, n=10)[-1]
        print(f"{name:26s} median {statistics.median(values):8.2f} ms   p90 {p90:8.2f} ms")
    ratio = statistics.median(new) / statistics.median(old)
    print(f"{args.open} open alerts, none due: now / baseline = {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
