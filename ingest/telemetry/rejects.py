"""Where refused input goes: a rotated JSON-lines file, a recent-items ring, throttled logs.

One instance keeps the messages that broke the MQTT contract (rejects.jsonl); another keeps
the points InfluxDB itself refused (deadletter.jsonl). An operator reads either file, or
`GET /api/v1/ingest/rejections`.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from config.settings import RejectsSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RejectRecord:
    at: str  # RFC 3339 receive time
    reason: str
    detail: str
    topic: str
    payload: str  # excerpt, UTF-8 with replacement characters
    payload_bytes: int


def make_record(
    reason: str, detail: str, topic: str, payload: bytes, received_ns: int, excerpt: int
) -> RejectRecord:
    return RejectRecord(
        at=datetime.fromtimestamp(received_ns / 1e9, UTC).isoformat(timespec="milliseconds"),
        reason=reason,
        detail=detail,
        topic=topic,
        payload=payload[:excerpt].decode("utf-8", errors="replace"),
        payload_bytes=len(payload),
    )


class _Throttle:
    """At most one log line per reason per interval; the rest are summed into the next one."""

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._next: dict[str, float] = {}
        self._suppressed: collections.Counter[str] = collections.Counter()

    def __call__(self, record: RejectRecord, what: str) -> None:
        now = time.monotonic()
        if now < self._next.get(record.reason, 0.0):
            self._suppressed[record.reason] += 1
            return
        self._next[record.reason] = now + self._interval
        more = self._suppressed.pop(record.reason, 0)
        log.warning(
            "%s %s on %s: %s%s",
            what,
            record.reason,
            record.topic,
            record.detail,
            f" (and {more} more {record.reason} in the last {self._interval:g} s)" if more else "",
        )


class RejectLog:
    def __init__(self, path: Path, settings: RejectsSettings, what: str = "rejected") -> None:
        self._path = path
        self._settings = settings
        self._what = what
        self._recent: collections.deque[RejectRecord] = collections.deque(maxlen=settings.recent)
        self._lock = threading.Lock()
        self._throttle = _Throttle(settings.log_every_s)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._load_recent()
        self._fh = path.open("a", encoding="utf-8")

    @property
    def path(self) -> Path:
        return self._path

    def _load_recent(self) -> None:
        try:
            with self._path.open("rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - 256 * self._settings.recent))
                tail = fh.read().splitlines()
        except FileNotFoundError:
            return
        for raw in tail[-self._settings.recent :]:
            try:
                self._recent.append(RejectRecord(**json.loads(raw)))
            except (ValueError, TypeError):
                continue  # the first line of the tail may be cut; older formats are skipped

    def add(self, records: Sequence[RejectRecord]) -> None:
        """Append, flush and fsync; a disk error is logged, never raised into the pipeline."""
        if not records:
            return
        with self._lock:
            for record in records:
                self._throttle(record, self._what)
                self._recent.append(record)
            try:
                self._fh.write(
                    "".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in records)
                )
                self._fh.flush()
                os.fsync(self._fh.fileno())
                if self._fh.tell() >= self._settings.max_file_bytes:
                    self._rotate()
            except OSError as exc:
                log.error("cannot write %s: %s", self._path, exc)

    def _rotate(self) -> None:
        self._fh.close()
        keep = self._settings.keep_files
        for n in range(keep - 1, 0, -1):
            older = self._path.with_name(f"{self._path.name}.{n}")
            if older.exists():
                os.replace(older, self._path.with_name(f"{self._path.name}.{n + 1}"))
        os.replace(self._path, self._path.with_name(f"{self._path.name}.1"))
        self._path.with_name(f"{self._path.name}.{keep + 1}").unlink(missing_ok=True)
        self._fh = self._path.open("a", encoding="utf-8")

    def recent(self, reason: str | None = None, limit: int = 100) -> list[RejectRecord]:
        """Newest first."""
        with self._lock:
            items = [r for r in reversed(self._recent) if reason is None or r.reason == reason]
        return items[:limit]

    def close(self) -> None:
        with self._lock:
            self._fh.close()
