from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from config.settings import load_settings
from ingest.telemetry.rejects import RejectLog, make_record


def settings(**rejects: object):  # type: ignore[no-untyped-def]
    return load_settings({}, rejects=rejects).rejects


def record(n: int, reason: str = "malformed_json"):  # type: ignore[no-untyped-def]
    return make_record(reason, f"bad {n}", "v1/sites/s/devices/d/telemetry", b"x" * 100, n, 10)


def test_records_are_kept_on_disk_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    log = RejectLog(path, settings())
    log.add([record(1), record(2, "wrong_type")])
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["reason"], r["detail"], r["payload"], r["payload_bytes"]) for r in lines] == [
        ("malformed_json", "bad 1", "x" * 10, 100),
        ("wrong_type", "bad 2", "x" * 10, 100),
    ]
    again = RejectLog(path, settings())
    assert [r.detail for r in again.recent()] == ["bad 2", "bad 1"]
    assert [r.detail for r in again.recent("malformed_json")] == ["bad 1"]
    again.close()


def test_files_rotate_and_only_keep_files_remain(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    log = RejectLog(path, settings(max_file_bytes=65536, keep_files=2))
    for n in range(2000):
        log.add([record(n)])
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["rejects.jsonl", "rejects.jsonl.1", "rejects.jsonl.2"]
    assert all(p.stat().st_size < 65536 + 512 for p in tmp_path.iterdir())


def test_a_flood_is_logged_once_per_interval_with_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = RejectLog(tmp_path / "r.jsonl", settings(log_every_s=3600))
    with caplog.at_level(logging.WARNING, logger="ingest.telemetry.rejects"):
        log.add([record(n) for n in range(1000)])
        log.add([record(0, "wrong_type")])
    log.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "malformed_json" in messages[0] and "wrong_type" in messages[1]
