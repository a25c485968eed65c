"""A bounded on-disk queue of line-protocol batches, kept while InfluxDB is down or slow.

Ingest appends a batch and acknowledges its MQTT messages once `Spool.append` has returned, by
which time the record is fsync'ed. One writer thread replays the spool oldest first with `peek`
and `commit`. A SIGKILL at any instant loses no appended record; the record being committed at
that instant may be replayed once more, which InfluxDB absorbs because identical points are
idempotent.

The directory holds:

* ``00000000000000000001.seg``, ``...02.seg``, ...: segments, appended to in order. A new one
  starts once the current one reaches ``segment_bytes``. A record is a little-endian header
  (magic u8, payload length u32, points u32, CRC32 of the payload u32) and then the payload.
* ``cursor.json``: ``{"segment": n, "offset": m}``, where the next record to replay starts.
  It is replaced atomically; segments wholly before it are deleted.

Exception hierarchy:

* SpoolError
  + SpoolFull - appending would exceed ``max_bytes``; nothing was written.
  + SpoolCorrupt - a record that was intact when written or opened no longer is.
  + SpoolIOError - the operating system refused (disk full, permissions); names the path.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

logger = logging.getLogger(__name__)

_HEADER = struct.Struct("<BIII")
# A fixed first byte makes zero-filled or foreign bytes fail fast; change it with the format.
_MAGIC = 0xB7
_U32_MAX = 2**32 - 1
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_CURSOR = "cursor.json"
_CURSOR_TMP = "cursor.json.tmp"


class SpoolError(Exception):
    """Base of spool errors."""


class SpoolFull(SpoolError):
    """Appending would exceed max_bytes; nothing was written."""


class SpoolCorrupt(SpoolError):
    """A record that was intact when written or when the spool was opened is damaged now."""


class SpoolIOError(SpoolError):
    """The operating system refused a spool operation; the message names the path."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    payload: bytes = field(repr=False)  # batches can be megabytes; keep them out of logs
    points: int
    segment: int
    offset: int


class Spool:
    """Segmented append-only spool with a durable replay cursor. See the module docstring.

    Not thread-safe, except that `pending_*` and `empty` may be read from any thread.
    """

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int) -> None:
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ValueError("max_bytes and segment_bytes must be positive")
        self._dir = Path(directory)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        # Bytes of valid records per segment, in ascending segment order; the reader never goes
        # past these, so a failed write's leftovers are never replayed.
        self._sizes: dict[int, int] = {}
        self._active = 0
        self._write_fd: int | None = None
        self._read_fd: int | None = None
        self._read_segment = 0
        self._cursor_segment = 0
        self._cursor_offset = 0
        self._head: SpoolRecord | None = None
        self._pending_records = 0
        self._pending_points = 0
        self._pending_bytes = 0
        self._closed = False
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._recover()
        except OSError as exc:
            self.close()
            raise SpoolIOError(f"cannot open spool {self._dir}: {exc}") from exc
        except BaseException:
            self.close()
            raise
        logger.info(
            "spool %s: %d records (%d points, %d bytes) pending",
            self._dir,
            self._pending_records,
            self._pending_points,
            self._pending_bytes,
        )

    @property
    def pending_records(self) -> int:
        return self._pending_records

    @property
    def pending_points(self) -> int:
        return self._pending_points

    @property
    def pending_bytes(self) -> int:
        """Bytes of pending records as stored, headers included: what max_bytes bounds."""
        return self._pending_bytes

    @property
    def empty(self) -> bool:
        return self._pending_records == 0

    def append(self, payload: bytes, points: int) -> None:
        """Store one batch; it is on disk (fsync'ed) when this returns."""
        self._check_open()
        if not 0 <= points <= _U32_MAX or len(payload) > _U32_MAX:
            raise ValueError(f"points ({points}) and payload length must fit in 32 bits")
        size = _HEADER.size + len(payload)
        if self._pending_bytes + size > self._max_bytes:
            raise SpoolFull(
                f"spool {self._dir} is full: {self._pending_bytes} bytes pending, a record of "
                f"{size} bytes would exceed max_bytes={self._max_bytes}"
            )
        fd = self._write_fd
        if fd is None or self._sizes[self._active] >= self._segment_bytes:
            fd = self._roll()
        header = _HEADER.pack(_MAGIC, len(payload), points, zlib.crc32(payload))
        try:
            _write_all(fd, header + payload)
            os.fsync(fd)
        except OSError as exc:
            self._abandon_writer()
            path = self._path(self._active)
            raise SpoolIOError(f"cannot append to spool segment {path}: {exc}") from exc
        self._sizes[self._active] += size
        self._pending_records += 1
        self._pending_points += points
        self._pending_bytes += size

    def peek(self) -> SpoolRecord | None:
        """The oldest record not yet committed, or None. Repeated calls return the same record."""
        self._check_open()
        if self._head is None and self._pending_records:
            self._head = self._read_head()
        return self._head

    def commit(self, record: SpoolRecord) -> None:
        """Mark `record`, the one `peek` returned, as replayed; durable when this returns."""
        self._check_open()
        head = self._head
        if head is None or (record.segment, record.offset) != (head.segment, head.offset):
            raise ValueError("commit() takes the record that peek() returned, once")
        self._store_cursor(record.segment, record.offset)
        self._head = None
        self._cursor_segment, self._cursor_offset = record.segment, record.offset
        self._pending_records -= 1
        self._pending_points -= record.points
        self._pending_bytes -= _HEADER.size + len(record.payload)
        self._drop_consumed()

    def close(self) -> None:
        self._closed = True
        self._close_reader()
        if self._write_fd is not None:
            fd, self._write_fd = self._write_fd, None
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Opening

    def _recover(self) -> None:
        with suppress(FileNotFoundError):
            (self._dir / _CURSOR_TMP).unlink()
        segments = sorted(
            int(m.group(1)) for p in self._dir.iterdir() if (m := _SEGMENT_NAME.match(p.name))
        )
        cursor = self._load_cursor()
        segment, offset = cursor if cursor is not None else (0, 0)
        for stale in [s for s in segments if s < segment]:
            # Consumed already: a crash came between storing the cursor and deleting these.
            self._path(stale).unlink()
        segments = [s for s in segments if s >= segment]
        if not segments:
            # Numbered past the cursor, so its offset can never apply to the new file.
            os.close(_create_file(self._path(segment + 1)))
            _fsync_directory(self._dir)
            segments = [segment + 1]
        if segments[0] != segment:
            # The cursor's own segment was fully consumed and deleted.
            segment, offset = segments[0], 0
        for s in segments:
            start = self._load_segment(s, offset if s == segment else 0)
            if s == segment and start != offset:
                logger.warning(
                    "spool cursor pointed at offset %d of %s, not at a record; replaying from "
                    "offset %d",
                    offset,
                    self._path(s),
                    start,
                )
                offset = start
        self._cursor_segment, self._cursor_offset = segment, offset
        self._active = segments[-1]
        self._write_fd = os.open(self._path(self._active), os.O_WRONLY | os.O_APPEND)
        self._drop_consumed()

    def _load_cursor(self) -> tuple[int, int] | None:
        path = self._dir / _CURSOR
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        with suppress(ValueError, KeyError, TypeError):
            data = json.loads(raw)
            segment, offset = data["segment"], data["offset"]
            if isinstance(segment, int) and isinstance(offset, int) and min(segment, offset) >= 0:
                return segment, offset
        # Replaying from the oldest record duplicates points but loses none.
        logger.warning("spool cursor %s is unreadable; replaying from the oldest record", path)
        return None

    def _load_segment(self, segment: int, replay_from: int) -> int:
        """Validate `segment`, cut a damaged tail and count the records from `replay_from`.

        Returns the record boundary where replay starts in this segment.
        """
        path = self._path(segment)
        good = 0
        first: int | None = None
        for start, end, points in _valid_records(path):
            good = end
            if end > replay_from:
                first = start if first is None else first
                self._pending_records += 1
                self._pending_points += points
                self._pending_bytes += end - start
        size = path.stat().st_size
        if good < size:
            with path.open("r+b") as f:
                f.truncate(good)
                os.fsync(f.fileno())
            logger.warning(
                "spool segment %s: cut %d bytes of torn or corrupt data after the last good "
                "record (offset %d)",
                path,
                size - good,
                good,
            )
        self._sizes[segment] = good
        return first if first is not None else min(replay_from, good)

    # Writing

    def _roll(self) -> int:
        segment = self._active + 1
        path = self._path(segment)
        try:
            fd = _create_file(path)
        except OSError as exc:
            raise SpoolIOError(f"cannot create spool segment {path}: {exc}") from exc
        # The new segment is active even if the fsync below fails, so that a retry moves on to
        # the next number instead of colliding with this file.
        if self._write_fd is not None:
            os.close(self._write_fd)
        self._write_fd = None
        self._sizes[segment] = 0
        self._active = segment
        try:
            _fsync_directory(self._dir)
        except OSError as exc:
            os.close(fd)
            raise SpoolIOError(f"cannot make spool segment {path} durable: {exc}") from exc
        self._write_fd = fd
        self._drop_consumed()
        return fd

    def _abandon_writer(self) -> None:
        # After a failed write or fsync the file's tail is unknown: cut it back if possible,
        # and append to a fresh segment next time, never after bytes we cannot vouch for.
        fd, self._write_fd = self._write_fd, None
        if fd is not None:
            with suppress(OSError):
                os.ftruncate(fd, self._sizes[self._active])
            with suppress(OSError):
                os.close(fd)

    # Replaying

    def _read_head(self) -> SpoolRecord:
        segment, offset = self._cursor_segment, self._cursor_offset
        path = self._path(segment)
        try:
            if self._read_fd is None or self._read_segment != segment:
                self._close_reader()
                self._read_fd = os.open(path, os.O_RDONLY)
                self._read_segment = segment
            header = os.pread(self._read_fd, _HEADER.size, offset)
            if len(header) == _HEADER.size:
                magic, length, points, crc = _HEADER.unpack(header)
                end = offset + _HEADER.size + length
                if magic == _MAGIC and end <= self._sizes[segment]:
                    payload = os.pread(self._read_fd, length, offset + _HEADER.size)
                    if zlib.crc32(payload) == crc and len(payload) == length:
                        return SpoolRecord(payload, points, segment, end)
        except OSError as exc:
            raise SpoolIOError(f"cannot read spool segment {path}: {exc}") from exc
        raise SpoolCorrupt(
            f"spool segment {path}: the record at offset {offset} was intact but is damaged now"
        )

    def _store_cursor(self, segment: int, offset: int) -> None:
        path, tmp = self._dir / _CURSOR, self._dir / _CURSOR_TMP
        try:
            with tmp.open("wb") as f:
                f.write(json.dumps({"segment": segment, "offset": offset}).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_directory(self._dir)
        except OSError as exc:
            raise SpoolIOError(f"cannot store spool cursor {path}: {exc}") from exc

    def _drop_consumed(self) -> None:
        # The cursor is kept off the end of a sealed segment so that the reader need not look
        # ahead. The stored cursor may still name a deleted segment; reopening handles that.
        while (
            self._cursor_segment != self._active
            and self._cursor_offset == self._sizes[self._cursor_segment]
        ):
            self._cursor_segment = next(s for s in self._sizes if s > self._cursor_segment)
            self._cursor_offset = 0
        for segment in [s for s in self._sizes if s < self._cursor_segment]:
            if self._read_segment == segment:
                self._close_reader()
            path = self._path(segment)
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                # Only disk space is at stake; the next commit or open tries again.
                logger.warning("cannot delete consumed spool segment %s: %s", path, exc)
                return
            del self._sizes[segment]

    # Helpers

    def _path(self, segment: int) -> Path:
        return self._dir / f"{segment:020d}.seg"

    def _close_reader(self) -> None:
        if self._read_fd is not None:
            fd, self._read_fd = self._read_fd, None
            os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"spool {self._dir} is closed")


def _valid_records(path: Path) -> Iterator[tuple[int, int, int]]:
    """(start, end, points) of each record of a segment up to the first damaged one."""
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = 0
        while start + _HEADER.size <= size:
            magic, length, points, crc = _HEADER.unpack(f.read(_HEADER.size))
            end = start + _HEADER.size + length
            # Checking the length against the file first keeps a garbage length from
            # allocating gigabytes.
            if magic != _MAGIC or end > size or zlib.crc32(f.read(length)) != crc:
                return
            yield start, end, points
            start = end


def _create_file(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_directory(directory: Path) -> None:
    # Creating, replacing or deleting a file is durable only once its directory is fsync'ed.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
