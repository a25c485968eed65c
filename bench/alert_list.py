"""Latency of listing alerts with 100,000 stored, on SQLite and on PostgreSQL.

    python bench/alert_list.py [--alerts 100000] [--repeat 200]

Three layers, measured in the same run: the baseline is one hand-written SQL query for the
newest page (what the database alone costs); then AlertStore.list() for several query shapes;
then GET /api/v1/alerts through uvicorn with a bearer token (what a supervisor's console pays).

SQLite is a file in a temporary folder; PostgreSQL is a server of the run's own, started on a
free port in that folder and removed afterwards. The alerts are spread over 200 sites and 90
days, 5 % of them unresolved. Each query shape below is timed `--repeat` times (a first page
of 50, as the API asks); the script prints p50 and p99 per shape and over all of them.
Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from alerts.store import AlertFilter, AlertStore  # noqa: E402
from alerts.store.schema import alerts  # noqa: E402
from analytics.events import TAXONOMY, Category  # noqa: E402
from analytics.lifecycle import CaseStatus, Status  # noqa: E402
from tests.pg import postgres_server, temporary_database  # noqa: E402

DAY_MS = 86_400_000
T_END = 1_700_000_000_000
SITES = [f"site-{i:03d}" for i in range(200)]
PAGE = 50


def populate(store: AlertStore, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    kinds = list(TAXONOMY.values())
    rows = []
    for i in range(n):
        kind = rng.choice(kinds)
        first = T_END - rng.randrange(90 * DAY_MS)
        open_ = i % 20 == 0
        street = kind.category is Category.STREET
        rows.append(
            {
                "site_id": rng.choice(SITES),
                # Unresolved alerts need distinct (site, device, rule); resolved ones repeat.
                "device_id": f"open-{i}" if open_ else f"dev-{rng.randrange(2000)}",
                "kind": kind.name,
                "category": kind.category.value,
                "rule": f"rule.{kind.name}",
                "severity": kind.severity.value,
                "status": Status.OPEN.value if open_ else Status.RESOLVED.value,
                "case_status": (
                    None
                    if not street
                    else (CaseStatus.COLLECTED if open_ else CaseStatus.CLOSED).value
                ),
                "first_seen_ms": first,
                "last_seen_ms": first + rng.randrange(3_600_000),
                "ended_ms": None,
                "count": 1 + rng.randrange(5),
                "evidence": [f"img/{i}.jpg"],
                "details": {"value": rng.random()},
                "escalation_level": 0,
                "updated_ms": first,
            }
        )
    with store.engine.begin() as conn:
        for start in range(0, n, 5000):
            conn.execute(insert(alerts), rows[start : start + 5000])
    with store.engine.connect() as conn:
        # Planner statistics, as a running system would have them.
        conn.execute(text("ANALYZE"))
        conn.commit()


def shapes(store: AlertStore) -> dict[str, Callable[[], object]]:
    three_sites = frozenset(SITES[:3])
    week = AlertFilter(since_ms=T_END - 7 * DAY_MS, kind="smoking")
    walk_cursor: list[str | None] = [None]

    def deep_walk() -> object:
        # Successive pages, each following the previous next_cursor (pages 1 to repeat + 5).
        page = store.list(AlertFilter(), walk_cursor[0], PAGE)
        walk_cursor[0] = page.next_cursor
        return page

    return {
        "newest, no filter": lambda: store.list(AlertFilter(), None, PAGE),
        "unresolved (status)": lambda: store.list(
            AlertFilter(status=frozenset({Status.OPEN, Status.ACKNOWLEDGED})), None, PAGE
        ),
        "scoped to 3 sites": lambda: store.list(AlertFilter(site_ids=three_sites), None, PAGE),
        "one site, open": lambda: store.list(
            AlertFilter(site_ids=frozenset(SITES[:1]), status=frozenset({Status.OPEN})),
            None,
            PAGE,
        ),
        "kind, last 7 days": lambda: store.list(week, None, PAGE),
        "critical only": lambda: store.list(
            AlertFilter(severity=TAXONOMY["rodent"].severity), None, PAGE
        ),
        "cursor walk (next pages)": deep_walk,
    }


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def timed(run: Callable[[], object], repeat: int) -> list[float]:
    for _ in range(5):
        run()  # warm the pool and caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
    return times


def row(label: str, times: list[float], baseline: float | None = None) -> None:
    ratio = f"{statistics.median(times) / baseline:8.1f}x" if baseline else ""
    print(f"  {label:32} {statistics.median(times):8.2f} {percentile(times, 99):8.2f}{ratio}")


def measure(name: str, url: str, n: int, repeat: int, workdir: Path) -> None:
    store = AlertStore(url)
    try:
        store.create_schema()
        began = time.perf_counter()
        populate(store, n)
        print(f"\n{name}: {n} alerts loaded in {time.perf_counter() - began:.1f} s")
        print(f"  {'query (first page of 50)':32} {'p50 ms':>8} {'p99 ms':>8} {'/ base':>8}")
        newest = text("SELECT * FROM alerts ORDER BY first_seen_ms DESC, id DESC LIMIT :n")

        def raw() -> object:
            with store.engine.connect() as conn:
                return conn.execute(newest, {"n": PAGE}).all()

        base = timed(raw, repeat)
        row("baseline: one SQL query, newest", base)
        b50 = statistics.median(base)
        everything: list[float] = []
        for label, run in shapes(store).items():
            times = timed(run, repeat)
            everything.extend(times)
            row(label, times, b50)
        row("all shapes", everything, b50)
        row("HTTP GET /api/v1/alerts, newest", http_list(url, workdir, repeat), b50)
    finally:
        store.close()


def http_list(url: str, workdir: Path, repeat: int) -> list[float]:
    """The API's newest page through uvicorn, with a bearer token and its check."""
    from config.settings import load_settings
    from devices.registry import load_registry
    from service.mingliang import create_app
    from tests.support import make_token, serve

    settings = load_settings(
        {}, alerts={"store_url": url}, paths={"data_dir": str(workdir / "data")}
    )
    registry = load_registry(settings.inventory_path)
    app = create_app(settings, registry, run_ingest=False)
    with serve(app, make_token(settings)) as client:
        return timed(lambda: client.get("/api/v1/alerts", params={"limit": PAGE}), repeat)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        sqlite_url = f"sqlite:///{work / 'alerts.db'}"
        measure("SQLite", sqlite_url, args.alerts, args.repeat, work)
        with (
            postgres_server(work / "postgres") as server,
            temporary_database(server, "mingliang_bench") as url,
        ):
            measure("PostgreSQL", url, args.alerts, args.repeat, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
