"""Failed authentication, slowed down per client address: a pure state machine.

An address may fail `free_failures` times; the failure that uses up the last free one makes
it wait `penalty_initial_s`, and every further failure doubles the wait, up to
`penalty_max_s`. While it waits, its attempts are refused without checking anything (the
caller asks `wait()` first). A success forgets the address at once; so does going
`window_s` without a failure. Memory is bounded: past `max_addresses`, the address whose
last failure is oldest is forgotten.

The tokens are 256 random bits and cannot be guessed anyway: this keeps a guessing client
from costing a database lookup per attempt, and makes it stand out (api/guard.py counts and
logs). An attacker with many addresses is slowed per address only.

    throttle = Throttle(free_failures=5, window_s=300, penalty_initial_s=1, penalty_max_s=60)
    if (wait := throttle.wait(address)) > 0: refuse, "try again in {wait} s"
    ... check the token ...
    throttle.failed(address)  or  throttle.succeeded(address)

Time is a monotonic clock in seconds, injectable so that tests control it. Not thread-safe:
the API calls it from its event loop only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

MonotonicClock = Callable[[], float]  # seconds; only differences matter
_MAX_DOUBLINGS = 64  # 2**64 times any penalty is past any cap: stop multiplying there


@dataclass(slots=True)
class _Record:
    failures: int
    last_failure: float
    blocked_until: float


class Failure(NamedTuple):
    """What one failure did to its address."""

    failures: int  # in a row, this one included
    wait_s: float  # how long the address must now wait (0: not yet)
    started: bool  # this failure made the address wait for the first time in this record


class Throttle:
    def __init__(
        self,
        *,
        free_failures: int,
        window_s: float,
        penalty_initial_s: float,
        penalty_max_s: float,
        max_addresses: int = 10_000,
        clock: MonotonicClock = time.monotonic,
    ) -> None:
        if free_failures < 1 or max_addresses < 1:
            raise ValueError("free_failures and max_addresses must be at least 1")
        if not 0 < penalty_initial_s <= penalty_max_s <= window_s:
            # A record forgotten while its address still waits would free the address early.
            raise ValueError("need 0 < penalty_initial_s <= penalty_max_s <= window_s")
        self.free_failures = free_failures
        self.window_s = window_s
        self.penalty_initial_s = penalty_initial_s
        self.penalty_max_s = penalty_max_s
        self.max_addresses = max_addresses
        self._clock = clock
        # Ordered by last failure, oldest first: expiry and eviction both take from the front.
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def __len__(self) -> int:
        """Addresses remembered (some may have expired and not been tidied away yet)."""
        return len(self._records)

    def __contains__(self, address: object) -> bool:
        return address in self._records

    def wait(self, address: str) -> float:
        """Seconds the address must still wait before its next attempt is checked; 0: now."""
        record = self._records.get(address)
        if record is None:
            return 0.0
        return max(0.0, record.blocked_until - self._clock())

    def failures(self, address: str) -> int:
        """Failures in a row the address has made (0 once forgotten)."""
        record = self._records.get(address)
        if record is None or self._clock() - record.last_failure >= self.window_s:
            return 0
        return record.failures

    def failed(self, address: str) -> Failure:
        """Count a failed authentication from `address`."""
        now = self._clock()
        self._forget_expired(now)
        record = self._records.pop(address, None)
        if record is None or now - record.last_failure >= self.window_s:
            record = _Record(failures=0, last_failure=now, blocked_until=now)
        record.failures += 1
        record.last_failure = now
        excess = record.failures - self.free_failures
        wait = 0.0
        if excess >= 0:
            wait = min(
                self.penalty_max_s, self.penalty_initial_s * 2.0 ** min(excess, _MAX_DOUBLINGS)
            )
            # A failure that raced past an ongoing wait (requests in flight together) never
            # shortens it.
            record.blocked_until = max(record.blocked_until, now + wait)
        self._records[address] = record  # to the back: the newest failure
        while len(self._records) > self.max_addresses:
            self._records.popitem(last=False)
        return Failure(record.failures, max(0.0, record.blocked_until - now), excess == 0)

    def succeeded(self, address: str) -> None:
        """The address authenticated: forget its failures."""
        self._records.pop(address, None)

    def _forget_expired(self, now: float) -> None:
        """Drop records whose last failure is a whole window old, from the oldest on; they
        no longer make anyone wait (penalty_max_s <= window_s)."""
        while self._records:
            address, record = next(iter(self._records.items()))
            if now - record.last_failure < self.window_s:
                return
            del self._records[address]
