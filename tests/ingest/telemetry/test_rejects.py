from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest

from config.settings import load_settings
from ingest.telemetry.rejects import RejectLog, make_record


def settings(**rejects: object):  # type: ignore[no-untyped-def]
    return load_settings({}, rejects=rejects).rejects


def record(n: int, reason: str = "malformed_json"):  # type: ignore[no-untyped-def]
    return make_record(
        [(reason, f"bad {n}")], "v1/sites/s/devices/d/telemetry", b"x" * 100, n, 2**20
    )


def test_records_are_kept_on_disk_and_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    log = RejectLog(path, settings())
    log.add([record(1), record(2, "wrong_type")])
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["reason"], r["detail"], r["payload"], r["payload_bytes"]) for r in lines] == [
        ("malformed_json", "bad 1", "x" * 100, 100),
        ("wrong_type", "bad 2", "x" * 100, 100),
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


def test_a_payload_is_kept_whole_and_binary_ones_in_base64(tmp_path: Path) -> None:
    path = tmp_path / "rejects.jsonl"
    log = RejectLog(path, settings(payload_excerpt_bytes=16))
    text = ("温度 " * 400).encode()  # 2,800 bytes of UTF-8
    binary = bytes(range(256)) * 8
    log.add([make_record([("malformed_json", "x")], "t", text, 1, 2**20)])
    log.add([make_record([("malformed_json", "y"), ("wrong_type", "z")], "t", binary, 2, 2**20)])
    log.close()
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first["payload"].encode() == text and first["payload_encoding"] == "utf-8"
    assert base64.b64decode(second["payload"]) == binary
    assert second["payload_encoding"] == "base64" and not second["truncated"]
    assert [p["reason"] for p in second["problems"]] == ["malformed_json", "wrong_type"]
    again = RejectLog(path, settings(payload_excerpt_bytes=16))
    shown = again.recent()
    assert [len(r.payload) for r in shown] == [16, 16]  # the API shows excerpts
    assert [r.reason for r in again.recent("wrong_type")] == ["malformed_json"]
    again.close()


def test_only_a_payload_beyond_the_keep_limit_is_cut_and_says_so() -> None:
    record = make_record([("too_large", "big")], "t", b"x" * 100_000, 1, 65_536)
    assert len(record.payload) == 65_536 and record.truncated and record.payload_bytes == 100_000


def test_a_failed_rotation_or_a_closed_file_never_raises_into_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "rejects.jsonl"
    log = RejectLog(path, settings(max_file_bytes=65536, keep_files=2))

    def refuse(*args: object) -> None:
        raise PermissionError(13, "read-only file system")

    monkeypatch.setattr(os, "replace", refuse)
    for n in range(2000):  # passes the rotation size many times
        log.add([record(n)])
    assert log.write_errors > 0
    monkeypatch.undo()
    log.add([record(2000)])  # rotation works again, and nothing was lost meanwhile
    log.close()
    log.add([record(2001)])  # a late writer after close: kept, not a crash
    log.close()
    kept = [
        json.loads(line)["detail"]
        for name in ("rejects.jsonl", "rejects.jsonl.1", "rejects.jsonl.2")
        if (tmp_path / name).exists()
        for line in (tmp_path / name).read_text().splitlines()
    ]
    assert "bad 2001" in kept and "bad 2000" in kept
