"""The failed-authentication throttle as a state machine, on a clock the test moves."""

from __future__ import annotations

import pytest

from api.throttle import Failure, Throttle
from tests.support import ManualSeconds as Seconds

A, B, C, D = "10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"


@pytest.fixture
def clock() -> Seconds:
    return Seconds()


def throttle(clock: Seconds, **overrides: float) -> Throttle:
    params: dict[str, float] = {
        "free_failures": 5,
        "window_s": 300,
        "penalty_initial_s": 1,
        "penalty_max_s": 60,
        "max_addresses": 10_000,
        **overrides,
    }
    return Throttle(
        free_failures=int(params["free_failures"]),
        window_s=params["window_s"],
        penalty_initial_s=params["penalty_initial_s"],
        penalty_max_s=params["penalty_max_s"],
        max_addresses=int(params["max_addresses"]),
        clock=clock,
    )


def test_free_failures_cost_nothing_and_the_last_free_one_starts_the_wait(clock: Seconds) -> None:
    t = throttle(clock)
    for n in range(1, 5):
        assert t.failed(A) == Failure(n, 0.0, False)
        assert t.wait(A) == 0
    # The fifth uses up the free ones: the address now waits the first penalty.
    assert t.failed(A) == Failure(5, 1.0, True)
    assert t.wait(A) == 1.0
    clock.now += 0.25
    assert t.wait(A) == 0.75
    clock.now += 0.75
    assert t.wait(A) == 0
    assert t.failures(A) == 5
    # Other addresses are not concerned.
    assert t.wait(B) == 0 and t.failures(B) == 0


def test_each_further_failure_doubles_the_wait_up_to_the_cap(clock: Seconds) -> None:
    t = throttle(clock)
    for _ in range(5):
        t.failed(A)
    waits = []
    for _ in range(9):
        clock.now += t.wait(A)  # the client waits as told, then fails again
        failure = t.failed(A)
        assert not failure.started  # the warning is logged once, not per failure
        waits.append(failure.wait_s)
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60, 60]
    assert t.failures(A) == 14


def test_a_failure_racing_an_ongoing_wait_never_shortens_it(clock: Seconds) -> None:
    t = throttle(clock, penalty_initial_s=10, penalty_max_s=10)
    for _ in range(5):
        t.failed(A)
    clock.now += 8
    # A request that passed the check before the wait began fails now: the wait is 10 s from
    # now, not the 2 s left.
    assert t.failed(A).wait_s == 10
    assert t.wait(A) == 10


def test_a_success_forgets_the_address(clock: Seconds) -> None:
    t = throttle(clock)
    for _ in range(7):
        t.failed(A)
    assert t.wait(A) > 0
    t.succeeded(A)
    assert t.wait(A) == 0 and t.failures(A) == 0 and A not in t
    # Counting starts over: four more failures are free again.
    for _ in range(4):
        assert t.failed(A).wait_s == 0
    t.succeeded(B)  # an address without failures: nothing happens


def test_failures_are_forgotten_after_a_whole_window_without_one(clock: Seconds) -> None:
    t = throttle(clock)
    for _ in range(4):
        t.failed(A)
        clock.now += 299  # never a whole window apart: they add up
    assert t.failures(A) == 4
    clock.now += 1  # 300 s since the last one
    assert t.failures(A) == 0
    assert t.failed(A) == Failure(1, 0.0, False)

    # Past the window, even a waiting address starts over (penalty_max_s <= window_s).
    for _ in range(10):
        clock.now += t.wait(A)
        t.failed(A)
    clock.now += 300
    assert t.wait(A) == 0 and t.failed(A) == Failure(1, 0.0, False)


def test_memory_is_bounded_dropping_the_address_that_failed_longest_ago(clock: Seconds) -> None:
    t = throttle(clock, max_addresses=3)
    for address in (A, B, C):
        t.failed(address)
        clock.now += 1
    t.failed(A)  # A failed again: now B is the one that failed longest ago
    t.failed(D)
    assert len(t) == 3
    assert [address in t for address in (A, B, C, D)] == [True, False, True, True]
    assert t.failures(A) == 2


def test_expired_records_are_tidied_away(clock: Seconds) -> None:
    t = throttle(clock)
    t.failed(A)
    t.failed(B)
    clock.now += 300
    t.failed(C)
    assert len(t) == 1 and C in t


@pytest.mark.parametrize(
    "bad",
    [
        {"free_failures": 0},
        {"max_addresses": 0},
        {"penalty_initial_s": 0},
        {"penalty_initial_s": 61},
        {"penalty_max_s": 301},
    ],
)
def test_inconsistent_parameters_are_refused(clock: Seconds, bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        throttle(clock, **bad)
