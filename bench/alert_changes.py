"""What the audit trail costs each alert change: now against a baseline commit, side by side.

    python bench/alert_changes.py [--baseline COMMIT] [--alerts 2000] [--rounds 3]
                                  [--postgres]

Every alert change (raised, repeated, acknowledged, resolved) now also writes an audit entry
in its own transaction. This raises `--alerts` gas alarms at distinct devices, repeats each
once, acknowledges each (as a person would, through the store) and clears each, on SQLite (or
a PostgreSQL this script starts, with --postgres), with this tree and with the baseline
commit checked out in a temporary git worktree, rounds interleaved so both see the same
machine. Prints the median microseconds per change of each and the ratio now / baseline.
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure(alerts: int, url: str) -> dict[str, float]:
    """Run inside one tree (sys.path[0] is that tree): microseconds per change, per phase."""
    from alerts.store import AlertStore
    from analytics.events import Clear, Raise, Severity, Source
    from analytics.lifecycle import Action

    store = AlertStore(url)
    store.create_schema()
    now = 1_700_000_000_000
    sources = [Source(f"kitchen-{i % 254 + 1:04d}", f"bench-{i}") for i in range(alerts)]
    timings: dict[str, float] = {}

    started = time.perf_counter()
    ids = [
        store.raise_(Raise(s, "gas_leak", "bench.gas", Severity.CRITICAL, now)).alert_id
        for s in sources
    ]
    timings["raise"] = time.perf_counter() - started
    started = time.perf_counter()
    for s in sources:
        store.raise_(Raise(s, "gas_leak", "bench.gas", Severity.CRITICAL, now + 1000))
    timings["repeat"] = time.perf_counter() - started
    started = time.perf_counter()
    for alert_id in ids:
        store.act(alert_id, Action.ACKNOWLEDGE, "wang.li", "on my way")
    timings["acknowledge"] = time.perf_counter() - started
    started = time.perf_counter()
    for s in sources:
        store.clear(Clear(s, "gas_leak", "bench.gas", now + 2000))
    timings["clear"] = time.perf_counter() - started
    store.close()
    return {phase: seconds / alerts * 1e6 for phase, seconds in timings.items()}


def run_tree(tree: Path, alerts: int, url: str) -> dict[str, float]:
    code = (
        f"import sys, json; sys.path.insert(0, {str(tree)!r}); "
        f"sys.path.insert(1, {str(ROOT / 'bench')!r}); import alert_changes as b; "
        f"print(json.dumps(b.measure({alerts}, {url!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="6d4caf8", help="commit before the audit trail")
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-alert-changes-") as tmp:
        base = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base), args.baseline],
            cwd=ROOT,
            check=True,
        )
        try:
            results: dict[str, list[dict[str, float]]] = {"baseline": [], "now": []}
            server = None
            if args.postgres:
                sys.path.insert(0, str(ROOT))
                from simulators.local_services import Postgres

                server = Postgres(Path(tmp) / "pg")
                server.start()
            try:
                for round_ in range(args.rounds):
                    for name, tree in (("baseline", base), ("now", ROOT)):
                        if server is not None:
                            url = server.url
                            db = f"bench_{name}_{round_}"
                            subprocess.run(
                                ["psql", "-h", server.host, "-p", str(server.port), "-U",
                                 "postgres", "-qc", f"CREATE DATABASE {db}"],
                                check=True,
                            )  # fmt: skip
                            url = url.rsplit("/", 1)[0] + f"/{db}"
                        else:
                            url = f"sqlite:///{Path(tmp) / f'{name}-{round_}.db'}"
                        results[name].append(run_tree(tree, args.alerts, url))
                        print(f"round {round_ + 1} {name:8}: {results[name][-1]}", flush=True)
            finally:
                if server is not None:
                    server.remove()
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)
    engine = "PostgreSQL" if args.postgres else "SQLite"
    print(f"\n{engine}, {args.alerts} alerts, {args.rounds} rounds: median µs per change")
    print(f"{'phase':12} {'baseline':>10} {'now':>10} {'now/base':>9}")
    for phase in results["now"][0]:
        b = statistics.median(r[phase] for r in results["baseline"])
        n = statistics.median(r[phase] for r in results["now"])
        print(f"{phase:12} {b:10.0f} {n:10.0f} {n / b:9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
