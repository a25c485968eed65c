"""Collects decoded messages until a batch is due: by size, by message count or by age.

The MQTT thread puts, the writer thread takes. The queue is bounded: the broker sends at most
Receive Maximum unacknowledged messages, and `put` blocks beyond `max_messages` (QoS 0 has no
such limit), which stops the MQTT thread reading and pushes back on the broker.
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
    ) -> None:
        self._max_points = max_points
        self._max_delay = max_delay_s
        self._max_messages = max_messages
        self._items: collections.deque[tuple[float, Pending]] = collections.deque()
        self._points = 0
        self._closed = False
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Pending) -> None:
        with self._cond:
            while len(self._items) >= self._max_messages * 2 and not self._closed:
                self._cond.wait()
            if self._closed:
                raise BatcherClosed("the service is stopping")
            self._items.append((time.monotonic(), item))
            self._points += len(item.lines)
            if len(self._items) == 1 or self._due():
                self._cond.notify_all()

    def close(self) -> None:
        """Take no more; `take` hands out what is left at once, then returns []."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _due(self) -> bool:
        return (
            self._closed
            or self._points >= self._max_points
            or len(self._items) >= self._max_messages
            or (bool(self._items) and time.monotonic() - self._items[0][0] >= self._max_delay)
        )

    def take(self, timeout: float) -> list[Pending]:
        """A due batch, waiting up to `timeout` s for one; [] if none became due."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._due():
                now = time.monotonic()
                wait = deadline - now
                if self._items:
                    wait = min(wait, self._items[0][0] + self._max_delay - now)
                if wait <= 0:
                    if not self._due():
                        return []
                    break
                self._cond.wait(wait)
            batch: list[Pending] = []
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
