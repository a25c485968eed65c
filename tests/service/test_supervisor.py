"""The one supervision policy: restart with back-off, counted, reported, logged once."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from service.supervisor import LoopState, Supervisor
from tests.support import wait_until


class Flaky:
    """A loop body that fails `times` times, then runs until stopped."""

    def __init__(self, times: int, error: Exception | None = None) -> None:
        self.left = times
        self.runs = 0
        self.error = error or RuntimeError("the database is away")
        self.stop = threading.Event()
        self.started_at: list[float] = []

    def __call__(self) -> None:
        self.runs += 1
        self.started_at.append(time.monotonic())
        if self.left:
            self.left -= 1
            raise self.error
        self.stop.wait()


def test_a_failing_loop_is_restarted_with_growing_waits_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(initial_s=0.05, max_s=1.0, recover_s=0.2)
    body = Flaky(3)
    with caplog.at_level(logging.ERROR, logger="service.supervisor"):
        loop = supervisor.thread("store", body, stop=body.stop.set, critical=True)
        wait_until(lambda: body.runs == 4, 10, "three restarts")
        status = loop.status()
        assert status.failures == 3 and status.last_error == "RuntimeError: the database is away"
        assert status.state is LoopState.RECOVERING and not status.up
        assert [s.name for s in supervisor.down(critical_only=True)] == ["store"]
        wait_until(lambda: loop.status().up, 10, "recovered")
        assert supervisor.down() == []
        assert loop.stop(10)
    waits = [b - a for a, b in zip(body.started_at, body.started_at[1:], strict=False)]
    assert waits[0] >= 0.05 and waits[1] >= 0.1 and waits[2] >= 0.2  # doubling
    # The traceback once; the same error again is one line each.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and len(caplog.records) == 3
    assert "failed again (3 times in a row)" in caplog.records[-1].getMessage()
    samples = supervisor.registry.get_sample_value
    assert samples("mingliang_loop_failures_total", {"loop": "store"}) == 3
    assert samples("mingliang_loop_up", {"loop": "store"}) == 0  # stopped


def test_expected_errors_are_one_line_and_a_loop_that_just_ends_is_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = Supervisor(initial_s=0.05, max_s=0.05, expected=(ConnectionError,))
    body = Flaky(1, ConnectionError("refused"))
    ended = threading.Event()
    runs = []

    def returns_once() -> None:
        runs.append(1)
        if len(runs) == 1:
            return  # nobody asked it to stop
        ended.wait()

    with caplog.at_level(logging.ERROR, logger="service.supervisor"):
        first = supervisor.thread("relay", body, stop=body.stop.set)
        second = supervisor.thread("feed", returns_once, stop=ended.set)
        wait_until(lambda: body.runs == 2 and len(runs) == 2, 10, "both restarted")
        assert first.stop(10) and second.stop(10)
    assert not [r for r in caplog.records if "relay" in r.getMessage() and r.exc_info]
    assert second.status().last_error == "LoopEnded: feed ended by itself"


def test_stop_cuts_a_back_off_short() -> None:
    supervisor = Supervisor(initial_s=60, max_s=60)
    body = Flaky(1)
    loop = supervisor.thread("writer", body, stop=body.stop.set)
    wait_until(lambda: loop.status().state is LoopState.BACKOFF, 10, "the back-off")
    started = time.monotonic()
    assert loop.stop(10)
    assert time.monotonic() - started < 5 and loop.status().state is LoopState.STOPPED


def test_task_loops_follow_the_same_policy() -> None:
    supervisor = Supervisor(initial_s=0.05, max_s=0.2, recover_s=0.0)
    calls: list[int] = []

    async def body() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("worker exited")
        await asyncio.Event().wait()  # runs until cancelled

    async def scenario() -> None:
        loop = supervisor.task("camera-worker-0", body, critical=True)
        while len(calls) < 3 or not loop.status().up:
            await asyncio.sleep(0.01)  # polling the loop's status
        assert loop.status().failures == 2
        await loop.stop()
        assert loop.status().state is LoopState.STOPPED

    asyncio.run(asyncio.wait_for(scenario(), 10))


def test_names_are_unique() -> None:
    supervisor = Supervisor()
    body = Flaky(0)
    loop = supervisor.thread("alert-rules", body, stop=body.stop.set)
    with pytest.raises(ValueError, match="already supervised"):
        supervisor.thread("alert-rules", body, stop=body.stop.set)
    assert loop.stop(10)
