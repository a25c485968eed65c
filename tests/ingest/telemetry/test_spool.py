"""The on-disk spool: order, durability across crashes, recovery of torn tails, bounds."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ingest.telemetry.spool import Spool, SpoolFull, SpoolIOError

ROOT = Path(__file__).resolve().parents[3]


def payload_for(i: int) -> bytes:
    """Distinct, variably sized line protocol for record `i` (also used by the crash writer)."""
    return b"cpu,host=h%d usage=%di %d\n" % (i % 7, i, 1_700_000_000 + i) * (1 + i % 5)


def points_for(i: int) -> int:
    return 1 + i % 5


def open_spool(directory: Path, **kwargs: int) -> Spool:
    return Spool(directory, **({"max_bytes": 2**30, "segment_bytes": 1024} | kwargs))


def fill(spool: Spool, indexes: range) -> None:
    for i in indexes:
        spool.append(payload_for(i), points_for(i))


def drain(spool: Spool) -> list[bytes]:
    payloads = []
    while (record := spool.peek()) is not None:
        payloads.append(record.payload)
        spool.commit(record)
    return payloads


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def expected(indexes: range) -> list[bytes]:
    return [payload_for(i) for i in indexes]


def test_round_trip_keeps_order_and_bytes_and_deletes_consumed_segments(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        assert spool.empty
        assert spool.peek() is None
        fill(spool, range(200))
        assert spool.pending_records == 200
        assert spool.pending_points == sum(points_for(i) for i in range(200))
        files_before = len(segments(tmp_path))
        assert files_before > 5

        first = spool.peek()
        assert first is not None
        assert spool.peek() is first  # peeking again does not advance
        assert (first.payload, first.points) == (payload_for(0), points_for(0))

        got = []
        for i in range(200):
            record = spool.peek()
            assert record is not None
            assert (record.payload, record.points) == (payload_for(i), points_for(i))
            got.append(record.payload)
            spool.commit(record)
            if i == 99:
                assert len(segments(tmp_path)) < files_before

        assert got == expected(range(200))
        assert spool.peek() is None
        assert (spool.pending_records, spool.pending_points, spool.pending_bytes) == (0, 0, 0)
        assert spool.empty
        assert len(segments(tmp_path)) == 1  # only the segment still open for appends


def test_appends_interleaved_with_commits_stay_in_order(tmp_path: Path) -> None:
    with open_spool(tmp_path, segment_bytes=300) as spool:
        got: list[bytes] = []
        for i in range(0, 120, 3):
            fill(spool, range(i, i + 3))
            for _ in range(2):
                record = spool.peek()
                assert record is not None
                got.append(record.payload)
                spool.commit(record)
        got += drain(spool)
    assert got == expected(range(120))


@pytest.mark.parametrize("close_first", [True, False], ids=["closed", "dropped"])
def test_reopen_replays_exactly_the_uncommitted_records(tmp_path: Path, close_first: bool) -> None:
    first = open_spool(tmp_path)
    fill(first, range(50))
    for _ in range(20):
        record = first.peek()
        assert record is not None
        first.commit(record)
    pending = (first.pending_records, first.pending_points, first.pending_bytes)
    if close_first:
        first.close()
    # Otherwise the first object is simply abandoned, as a crashed process would leave it.

    with open_spool(tmp_path) as second:
        assert (second.pending_records, second.pending_points, second.pending_bytes) == pending
        assert pending[:2] == (30, sum(points_for(i) for i in range(20, 50)))
        assert drain(second) == expected(range(20, 50))
    first.close()


def test_commit_after_reopen_continues_from_the_cursor(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        fill(spool, range(10))
        for _ in range(3):
            record = spool.peek()
            assert record is not None
            spool.commit(record)

    with open_spool(tmp_path) as spool:
        record = spool.peek()
        assert record is not None
        assert record.payload == payload_for(3)
        spool.commit(record)
        fill(spool, range(10, 12))

    with open_spool(tmp_path) as spool:
        assert spool.pending_records == 8
        assert drain(spool) == expected(range(4, 12))

    with open_spool(tmp_path) as spool:
        assert spool.empty
        assert spool.peek() is None


def _cut_inside_header(path: Path, last_start: int) -> None:
    os.truncate(path, last_start + 5)


def _cut_inside_payload(path: Path, last_start: int) -> None:
    os.truncate(path, path.stat().st_size - 3)


def _flip_last_payload_byte(path: Path, last_start: int) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage", [_cut_inside_header, _cut_inside_payload, _flip_last_payload_byte]
)
def test_torn_or_corrupt_tail_is_cut_back_to_the_last_good_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[Path, int], None]
) -> None:
    with open_spool(tmp_path, segment_bytes=2**20) as spool:
        fill(spool, range(4))
        (path,) = segments(tmp_path)
        last_start = path.stat().st_size
        fill(spool, range(4, 5))
    damage(path, last_start)
    damaged_size = path.stat().st_size

    with (
        caplog.at_level(logging.WARNING, logger="ingest.telemetry.spool"),
        open_spool(tmp_path) as spool,
    ):
        assert spool.pending_records == 4
        assert spool.pending_points == sum(points_for(i) for i in range(4))
        assert path.stat().st_size == last_start
        fill(spool, range(5, 6))  # appends go on after the survivors
    cut = damaged_size - last_start
    assert any(
        str(path) in r.getMessage() and f"cut {cut} bytes" in r.getMessage() for r in caplog.records
    )

    with open_spool(tmp_path) as spool:
        assert drain(spool) == [*expected(range(4)), payload_for(5)]


def test_spool_full_writes_nothing_and_recovers_after_commits(tmp_path: Path) -> None:
    payload = b"m v=1i\n" * 14
    with open_spool(tmp_path, max_bytes=1000) as spool:
        appended = 0
        with pytest.raises(SpoolFull, match="max_bytes=1000"):
            while True:
                spool.append(payload, 14)
                appended += 1
        record_bytes = spool.pending_bytes // appended
        assert appended == 1000 // record_bytes
        assert spool.pending_records == appended
        assert sum(p.stat().st_size for p in segments(tmp_path)) == spool.pending_bytes

        with pytest.raises(SpoolFull):
            spool.append(payload, 14)
        assert spool.pending_records == appended

        record = spool.peek()
        assert record is not None
        spool.commit(record)
        spool.append(payload, 14)
        assert spool.pending_records == appended

    with open_spool(tmp_path, max_bytes=1000) as spool:
        assert spool.pending_records == appended


def test_failed_fsync_surfaces_as_spool_io_error_and_loses_nothing_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def fsync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    with open_spool(tmp_path) as spool:
        fill(spool, range(3))
        monkeypatch.setattr(os, "fsync", fsync)
        with pytest.raises(SpoolIOError, match=r"\.seg: .*No space left") as info:
            spool.append(payload_for(3), points_for(3))
        assert isinstance(info.value.__cause__, OSError)
        assert spool.pending_records == 3
        fill(spool, range(4, 6))  # the failed record was not acknowledged; later ones go on
        assert spool.pending_records == 5

    with open_spool(tmp_path) as spool:
        assert drain(spool) == [*expected(range(3)), *expected(range(4, 6))]


def test_os_errors_name_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    with pytest.raises(SpoolIOError, match="not-a-directory"):
        open_spool(blocker / "spool")


def test_unreadable_cursor_replays_everything_rather_than_losing_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_spool(tmp_path, segment_bytes=2**20) as spool:
        fill(spool, range(6))
        for _ in range(2):
            record = spool.peek()
            assert record is not None
            spool.commit(record)
    (tmp_path / "cursor.json").write_bytes(b"{garbage")

    with (
        caplog.at_level(logging.WARNING, logger="ingest.telemetry.spool"),
        open_spool(tmp_path) as spool,
    ):
        assert drain(spool) == expected(range(6))
    assert "unreadable" in caplog.text


def test_commit_only_takes_the_record_peek_returned(tmp_path: Path) -> None:
    with open_spool(tmp_path) as spool:
        fill(spool, range(2))
        record = spool.peek()
        assert record is not None
        spool.commit(record)
        with pytest.raises(ValueError, match="peek"):
            spool.commit(record)
    with pytest.raises(ValueError, match="closed"):
        spool.append(b"x", 1)


_CRASH_WRITER = """
import sys
from pathlib import Path

from ingest.telemetry.spool import Spool
from tests.ingest.telemetry.test_spool import payload_for, points_for

directory, commit_every = Path(sys.argv[1]), int(sys.argv[2])
spool = Spool(directory, max_bytes=2**30, segment_bytes=2048)
for i in range(10**6):
    spool.append(payload_for(i), points_for(i))
    print("appended", i, flush=True)
    if commit_every and i % commit_every == 0:
        record = spool.peek()
        spool.commit(record)
        print("committed", flush=True)
"""


@pytest.mark.parametrize("commit_every", [0, 3], ids=["append-only", "with-commits"])
def test_sigkill_at_any_moment_loses_no_acknowledged_record(
    tmp_path: Path, commit_every: int
) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_CRASH_WRITER)
    directory = tmp_path / "spool"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(script), str(directory), str(commit_every)]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as writer:
        assert writer.stdout is not None
        lines: list[bytes] = []
        try:
            while len(lines) < 400:
                line = writer.stdout.readline()
                if not line:
                    break
                lines.append(line)
        finally:
            writer.kill()  # SIGKILL, wherever the writer happens to be
        rest, err = writer.communicate()
    assert writer.returncode == -signal.SIGKILL, err.decode()
    lines += rest.splitlines()

    appended = [int(line.split()[1]) for line in lines if line.startswith(b"appended")]
    assert appended == list(range(len(appended)))
    acknowledged = len(appended)
    committed = sum(1 for line in lines if line.startswith(b"committed"))

    with open_spool(directory) as spool:
        pending = spool.pending_records
        got = drain(spool)
    assert len(got) == pending
    # The record being committed or appended when the kill came may or may not have made it.
    start = committed if got[:1] == [payload_for(committed)] else committed + 1
    assert got == expected(range(start, start + len(got)))
    assert start in (committed, committed + 1)
    assert start + len(got) in (acknowledged, acknowledged + 1)
