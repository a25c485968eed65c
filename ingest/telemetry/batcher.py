"""Collects decoded messages until a batch is due: by size, by message count or by age.

The MQTT thread puts, the writer thread takes. The queue is bounded at twice `max_messages`
(Receive Maximum): the broker sends at most that many unacknowledged QoS 1 messages, so a QoS 1
message never waits in practice. QoS 0 messages have no such limit and are refused beyond the
bound (`put(wait=False)`; QoS 0 is "at most once"), so paho's network thread never waits.

Points the service makes itself (open-alert counts, camera health) come in through `offer`,
which never waits: they have a bound of their own (`max_internal_points`), and when it is
reached the oldest are dropped and counted. So no part that the writer waits on (the alert
engine) ever waits on the writer in turn.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field

from ingest.telemetry.contract import Record
from ingest.telemetry.rejects import RejectRecord


@dataclass(frozen=True, slots=True)
class Ack:
    generation: int  # which MQTT connection the message arrived on
    mid: int
    qos: int
    link: int = 0  # which of ingest's connections (a partition of the sites) took it


@dataclass(slots=True)
class Pending:
    """One received message, decoded: its records, their lines, and the rejections to keep."""

    received_ns: int
    ack: Ack | None
    lines: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    rejects: list[RejectRecord] = field(default_factory=list)


class BatcherClosed(Exception):
    """The batcher no longer takes messages (the service is stopping)."""


class Batcher:
    def __init__(
        self,
        *,
        max_points: int,
        max_delay_s: float,
        max_messages: int,
        max_internal_points: int = 100_000,
    ) -> None:
        self._max_points = max_points
        self._max_delay = max_delay_s
        self._max_messages = max_messages
        self._max_internal = max_internal_points
        self._items: collections.deque[tuple[float, Pending]] = collections.deque()
        self._points = 0
        self._internal: collections.deque[tuple[float, list[str]]] = collections.deque()
        self._internal_points = 0
        self._closed = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        """Messages waiting (the service's own points are not messages)."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Pending, wait: bool = True) -> bool:
        """Take a message; when full, wait for room, or (not `wait`) refuse it: False."""
        with self._cond:
            while len(self._items) >= self._max_messages * 2 and not self._closed:
                if not wait:
                    return False
                self._cond.wait()
            if self._closed:
                raise BatcherClosed("the service is stopping")
            self._items.append((time.monotonic(), item))
            self._points += len(item.lines)
            if len(self._items) == 1 or self._due():
                self._cond.notify_all()
            return True

    def offer(self, lines: list[str]) -> int:
        """Take points the service made itself, without waiting; how many old ones were dropped
        to make room (0 normally). Refused with BatcherClosed once closed."""
        if not lines:
            return 0
        dropped = 0
        with self._cond:
            if self._closed:
                raise BatcherClosed("the service is stopping")
            self._internal.append((time.monotonic(), list(lines)))
            self._internal_points += len(lines)
            while self._internal_points > self._max_internal and len(self._internal) > 1:
                _, old = self._internal.popleft()
                self._internal_points -= len(old)
                dropped += len(old)
            self._cond.notify_all()
        return dropped

    def close(self) -> None:
        """Take no more; `take` hands out what is left at once, then returns []."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _oldest(self) -> float | None:
        times = [q[0][0] for q in (self._items, self._internal) if q]
        return min(times) if times else None

    def _due(self) -> bool:
        oldest = self._oldest()
        return (
            self._closed
            or self._points + self._internal_points >= self._max_points
            or len(self._items) >= self._max_messages
            or (oldest is not None and time.monotonic() - oldest >= self._max_delay)
        )

    def take(self, timeout: float) -> list[Pending]:
        """A due batch, waiting up to `timeout` s for one; [] if none became due."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._due():
                now = time.monotonic()
                wait = deadline - now
                oldest = self._oldest()
                if oldest is not None:
                    wait = min(wait, oldest + self._max_delay - now)
                if wait <= 0:
                    if not self._due():
                        return []
                    break
                self._cond.wait(wait)
            batch: list[Pending] = []
            if self._internal:
                lines = [line for _, part in self._internal for line in part]
                batch.append(Pending(received_ns=time.time_ns(), ack=None, lines=lines))
                self._internal.clear()
                self._internal_points = 0
            points = 0
            while self._items and (
                not batch or points + len(self._items[0][1].lines) <= self._max_points
            ):
                _, item = self._items.popleft()
                batch.append(item)
                points += len(item.lines)
            self._points -= points
            self._cond.notify_all()  # room for a blocked put
            return batch
