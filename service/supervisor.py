"""One policy for every background loop: run it, and when it fails, log, count, back off, restart.

    Supervisor
     ├── thread loops   blocking work (the telemetry writer, alert rules, alert store, relay, ...)
     └── task loops     asyncio work (the change feed, camera health, camera workers)

A loop's body runs until it is asked to stop. When it raises (or returns without being asked):

* the exception is logged once with its traceback (`expected` kinds, whose message says it
  all, such as a database being away, without one); the same error again is one line;
* `mingliang_loop_failures_total{loop}` counts it, and the loop's status keeps the error;
* the body starts again after a back-off that doubles from `initial_s` up to `max_s`, and starts
  again from `initial_s` once a run has lasted longer than `max_s`;
* after a restart the loop counts as `recovering`, not up, until it has run `recover_s` without
  failing: a loop stuck waiting on a database that is still away must not look healthy.

A loop marked `critical` is one ingest depends on: while it is not running, `/healthz` answers
503. Every loop's status (state, failures, last error) is in `/healthz` and `/readyz`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

log = logging.getLogger(__name__)


class LoopState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"  # failed; waiting before the next start
    RECOVERING = "recovering"  # restarted after a failure, not yet for long
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class LoopStatus:
    name: str
    state: LoopState
    critical: bool
    failures: int
    last_error: str | None
    last_error_ms: int | None
    retry_in_s: float | None  # while in back-off

    @property
    def up(self) -> bool:
        return self.state is LoopState.RUNNING

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state.value,
            "critical": self.critical,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_error_ms": self.last_error_ms,
            "retry_in_s": self.retry_in_s,
        }


class LoopEnded(Exception):
    """A loop body returned although nobody asked it to stop."""


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.failures = Counter(
            "mingliang_loop_failures",
            "Background loop failures (each followed by a restart after a back-off), by loop",
            ["loop"],
            registry=registry,
        )
        self.up = Gauge(
            "mingliang_loop_up",
            "1 while a background loop is running, by loop",
            ["loop"],
            registry=registry,
        )


@dataclass(frozen=True, slots=True)
class _Policy:
    metrics: _Metrics
    initial_s: float
    max_s: float
    recover_s: float
    expected: tuple[type[BaseException], ...]


class _Loop:
    """What thread and task loops share: status, back-off and the failure policy."""

    def __init__(self, name: str, critical: bool, policy: _Policy) -> None:
        self.name = name
        self.critical = critical
        self._metrics = policy.metrics
        self._initial_s = policy.initial_s
        self._max_s = policy.max_s
        self._expected = policy.expected
        self._recover_s = policy.recover_s
        self._recovering_until = 0.0
        self._delay = 0.0
        self._lock = threading.Lock()
        self._state = LoopState.STARTING
        self._failures = 0
        self._last_error: str | None = None
        self._last_error_ms: int | None = None
        self._retry_at: float | None = None
        self._repeats = 0
        self._started_at = 0.0
        self.stopping = False
        self._metrics.failures.labels(name)  # the series exists (at 0) before a failure
        self._metrics.up.labels(name).set(0)

    def status(self) -> LoopStatus:
        with self._lock:
            now = time.monotonic()
            retry = None
            if self._state is LoopState.BACKOFF and self._retry_at is not None:
                retry = round(max(0.0, self._retry_at - now), 3)
            state = self._state
            if state is LoopState.RUNNING and now < self._recovering_until:
                state = LoopState.RECOVERING
            return LoopStatus(
                self.name,
                state,
                self.critical,
                self._failures,
                self._last_error,
                self._last_error_ms,
                retry,
            )

    def _set(self, state: LoopState) -> None:
        with self._lock:
            self._state = state
        self._metrics.up.labels(self.name).set(1 if state is LoopState.RUNNING else 0)

    def _running(self) -> None:
        self._started_at = time.monotonic()
        if self._failures:
            self._recovering_until = self._started_at + self._recover_s
        self._set(LoopState.RUNNING)

    def _failed(self, exc: BaseException) -> float:
        """Log and count a failure; the back-off to wait before the next start."""
        ran_for = time.monotonic() - self._started_at
        if ran_for > self._max_s:
            self._delay = 0.0  # it ran well for a while: this is a new failure, not a streak
        self._delay = min(self._max_s, self._delay * 2 if self._delay else self._initial_s)
        error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            same = error == self._last_error
            self._failures += 1
            self._last_error = error
            self._last_error_ms = time.time_ns() // 1_000_000
            self._retry_at = time.monotonic() + self._delay
            self._state = LoopState.BACKOFF
            self._repeats = self._repeats + 1 if same else 0
        self._metrics.failures.labels(self.name).inc()
        self._metrics.up.labels(self.name).set(0)
        if same:
            log.error(
                "%s failed again (%d times in a row): %s; restarting in %.1f s",
                self.name,
                self._repeats + 1,
                error,
                self._delay,
            )
        elif isinstance(exc, self._expected):
            log.error("%s failed: %s; restarting in %.1f s", self.name, error, self._delay)
        else:
            log.error(
                "%s failed; restarting in %.1f s",
                self.name,
                self._delay,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        return self._delay


class ThreadLoop(_Loop):
    """A blocking body on a thread of its own. `stop` tells the body to return."""

    def __init__(
        self,
        name: str,
        body: Callable[[], None],
        stop: Callable[[], None],
        critical: bool,
        policy: _Policy,
    ) -> None:
        super().__init__(name, critical, policy)
        self._body = body
        self._request_stop = stop
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Ask the body to return and wait for it; False if it did not within `timeout`."""
        self.stopping = True
        self._wake.set()
        self._request_stop()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("%s did not stop within %s s", self.name, timeout)
            return False
        self._set(LoopState.STOPPED)
        return True

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self.stopping:
            self._running()
            try:
                self._body()
                if self.stopping:
                    break
                raise LoopEnded(f"{self.name} ended by itself")
            except Exception as exc:
                if self.stopping:
                    log.error("%s failed while stopping", self.name, exc_info=True)
                    break
                self._wake.wait(self._failed(exc))
        self._set(LoopState.STOPPED)


class TaskLoop(_Loop):
    """An asyncio body; cancelled to stop."""

    def __init__(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        critical: bool,
        policy: _Policy,
    ) -> None:
        super().__init__(name, critical, policy)
        self._body = body
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self.stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set(LoopState.STOPPED)

    async def _run(self) -> None:
        while True:
            self._running()
            try:
                await self._body()
                raise LoopEnded(f"{self.name} ended by itself")
            except Exception as exc:
                await asyncio.sleep(self._failed(exc))  # the back-off before restarting


class Supervisor:
    """Starts, restarts and reports every background loop of a process."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        initial_s: float = 0.5,
        max_s: float = 30.0,
        recover_s: float = 10.0,
        expected: tuple[type[BaseException], ...] = (),
    ) -> None:
        """`expected`: exception types whose message says it all (logged without a traceback)."""
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        self.registry = registry or CollectorRegistry()
        self._policy = _Policy(_Metrics(self.registry), initial_s, max_s, recover_s, expected)
        self._loops: dict[str, _Loop] = {}

    def thread(
        self,
        name: str,
        body: Callable[[], None],
        *,
        stop: Callable[[], None],
        critical: bool = False,
    ) -> ThreadLoop:
        """Start `body` on its own thread; `stop` must make it return."""
        loop = ThreadLoop(name, body, stop, critical, self._policy)
        self._add(loop)
        loop.start()
        return loop

    def task(
        self, name: str, body: Callable[[], Awaitable[None]], *, critical: bool = False
    ) -> TaskLoop:
        """Start `body` as a task of the running event loop; it stops by cancellation."""
        loop = TaskLoop(name, body, critical, self._policy)
        self._add(loop)
        loop.start()
        return loop

    def _add(self, loop: _Loop) -> None:
        if loop.name in self._loops and not self._loops[loop.name].stopping:
            raise ValueError(f"a loop named {loop.name!r} is already supervised")
        self._loops[loop.name] = loop

    def statuses(self) -> list[LoopStatus]:
        return [loop.status() for loop in self._loops.values()]

    def down(self, *, critical_only: bool = False) -> list[LoopStatus]:
        """Loops that are not running (critical ones only, if asked)."""
        return [
            s
            for s in self.statuses()
            if not s.up and s.state is not LoopState.STOPPED and (s.critical or not critical_only)
        ]
