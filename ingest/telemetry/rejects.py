"""Where refused input goes: a rotated JSON-lines file, a recent-items ring, throttled logs.

One instance keeps the messages that broke the MQTT contract (rejects.jsonl); another keeps
the points InfluxDB itself refused (deadletter.jsonl). An operator reads either file, or
`GET /api/v1/ingest/rejections` (which shows excerpts).

Ingest acknowledges a refused message, so the broker forgets it: the file is then the only
copy, and keeps the payload whole (as base64 if it is not UTF-8), with every problem found in
it. Only a payload larger than `rejects.keep_payload_bytes` is cut, and marked `truncated`.
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from config.settings import RejectsSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Problem:
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class RejectRecord:
    """One refused message (or part of one), kept whole with every problem found in it."""

    at: str  # RFC 3339 receive time
    reason: str  # the first problem's
    detail: str
    topic: str
    payload: str  # the whole payload: as text if it is UTF-8, else base64
    payload_encoding: str  # "utf-8" or "base64"
    payload_bytes: int
    truncated: bool  # only a payload longer than rejects.keep_payload_bytes (too_large)
    problems: tuple[Problem, ...]  # the first included: each bad element of an array

    def has(self, reason: str) -> bool:
        return any(p.reason == reason for p in self.problems)

    def excerpt(self, size: int) -> RejectRecord:
        """The same record with at most `size` characters of payload (for the API's list)."""
        if len(self.payload) <= size:
            return self
        return replace(self, payload=self.payload[:size], truncated=True)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> RejectRecord:
        data = json.loads(raw)
        data["problems"] = tuple(Problem(**p) for p in data["problems"])
        return cls(**data)


def make_record(
    problems: Sequence[tuple[str, str]],
    topic: str,
    payload: bytes,
    received_ns: int,
    keep_bytes: int,
) -> RejectRecord:
    """A record of `payload` and its problems, (reason, detail) pairs, the first one first."""
    if not problems:
        raise ValueError("a rejection names at least one problem")
    kept = payload[:keep_bytes]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return RejectRecord(
        at=datetime.fromtimestamp(received_ns / 1e9, UTC).isoformat(timespec="milliseconds"),
        reason=problems[0][0],
        detail=problems[0][1],
        topic=topic,
        payload=text,
        payload_encoding=encoding,
        payload_bytes=len(payload),
        truncated=len(kept) < len(payload),
        problems=tuple(Problem(reason, detail) for reason, detail in problems),
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
    def __init__(
        self,
        path: Path,
        settings: RejectsSettings,
        what: str = "rejected",
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_error` counts a failed write or rotation (a metric)."""
        self._path = path
        self._settings = settings
        self._what = what
        # The file keeps payloads whole; memory keeps an excerpt of each for the API.
        self._recent: collections.deque[RejectRecord] = collections.deque(maxlen=settings.recent)
        self._excerpt = settings.payload_excerpt_bytes
        self._lock = threading.Lock()
        self._throttle = _Throttle(settings.log_every_s)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write_errors = 0
        self._on_error = on_error
        self._load_recent()
        self._fh: IO[str] | None = path.open("a", encoding="utf-8")

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
                self._recent.append(RejectRecord.from_json(raw).excerpt(self._excerpt))
            except (ValueError, TypeError, KeyError):
                continue  # the first line of the tail may be cut; older formats are skipped

    def add(self, records: Sequence[RejectRecord]) -> bool:
        """Append, flush and fsync; False if they could not be written (logged and counted,
        never raised into the pipeline, which then leaves those messages to the broker)."""
        if not records:
            return True
        with self._lock:
            for record in records:
                self._throttle(record, self._what)
                self._recent.append(record.excerpt(self._excerpt))
            try:
                if self._fh is None:
                    self._fh = self._path.open("a", encoding="utf-8")
                self._fh.write("".join(r.to_json() + "\n" for r in records))
                self._fh.flush()
                os.fsync(self._fh.fileno())
            except (OSError, ValueError) as exc:  # ValueError: a file closed under us
                self._failed()
                log.error("cannot write %s: %s", self._path, exc)
                return False
            if self._fh.tell() >= self._settings.max_file_bytes:
                try:
                    self._rotate()
                except OSError as exc:  # written already; the file grows until this works
                    self._failed()
                    log.error("cannot rotate %s: %s", self._path, exc)
        return True

    def _failed(self) -> None:
        self.write_errors += 1
        self._on_error()

    def _rotate(self) -> None:
        assert self._fh is not None
        self._fh.close()
        self._fh = None  # reopened by the next add(), also when the renames below fail
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
            items = [r for r in reversed(self._recent) if reason is None or r.has(reason)]
        return items[:limit]

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
