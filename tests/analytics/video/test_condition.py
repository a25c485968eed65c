from analytics.video.condition import Condition, Phase, Timing


def feed(condition: Condition, spells: list[tuple[int, bool]]) -> list[tuple[int, str]]:
    """(at_ms, holds) in order; the edges that came out, with their times."""
    edges = []
    for at_ms, holds in spells:
        edge = condition.update(holds, at_ms)
        if edge is not None:
            edges.append((at_ms, edge))
    return edges


def every_second(start_s: int, stop_s: int, holds: bool) -> list[tuple[int, bool]]:
    return [(s * 1000, holds) for s in range(start_s, stop_s)]


def test_raised_only_after_holding_unbroken_for_the_time() -> None:
    condition = Condition(Timing(raise_after_ms=5000, clear_after_ms=3000))
    glimpses = every_second(0, 4, True) + every_second(4, 5, False)  # 4 s: not enough
    assert feed(condition, glimpses) == []
    assert condition.phase is Phase.QUIET
    assert feed(condition, every_second(5, 11, True)) == [(10_000, "raise")]
    assert condition.since_ms == 5000


def test_cleared_only_after_being_gone_for_the_time_and_a_return_keeps_it_raised() -> None:
    condition = Condition(Timing(raise_after_ms=0, clear_after_ms=3000))
    assert feed(condition, [(0, True)]) == [(0, "raise")]
    # Gone 2 s, back: still the same alert.
    assert feed(condition, [*every_second(1, 3, False), (3000, True)]) == []
    assert condition.raised
    assert feed(condition, every_second(4, 9, False)) == [(7000, "clear")]
    assert condition.phase is Phase.QUIET


def test_a_cool_down_after_a_clear_holds_back_the_next_raise() -> None:
    condition = Condition(Timing(raise_after_ms=0, clear_after_ms=0, cooldown_ms=10_000))
    assert feed(condition, [(0, True), (1000, False)]) == [(0, "raise"), (1000, "clear")]
    assert feed(condition, every_second(2, 11, True)) == []  # inside the cool-down
    assert feed(condition, [(11_000, True)]) == [(11_000, "raise")]


def test_a_break_shorter_than_the_grace_does_not_restart_the_count() -> None:
    strict = Condition(Timing(raise_after_ms=5000, clear_after_ms=0))
    lenient = Condition(Timing(raise_after_ms=5000, clear_after_ms=0, grace_ms=1500))
    spells = [*every_second(0, 3, True), (3000, False), *every_second(4, 7, True)]
    assert feed(strict, spells) == []  # restarted at 4 s: would raise at 9 s
    assert feed(lenient, spells) == [(5000, "raise")]
    # A longer break than the grace restarts it.
    lenient = Condition(Timing(raise_after_ms=5000, clear_after_ms=0, grace_ms=1500))
    spells = every_second(0, 3, True) + every_second(3, 5, False) + every_second(5, 8, True)
    assert feed(lenient, spells) == []


def test_reset_forgets_a_pending_spell_but_not_a_raised_alert() -> None:
    condition = Condition(Timing(raise_after_ms=5000, clear_after_ms=1000))
    feed(condition, every_second(0, 3, True))
    condition.reset()
    assert feed(condition, every_second(3, 7, True)) == []  # counting again from 3 s
    assert feed(condition, every_second(7, 9, True)) == [(8000, "raise")]
    condition.reset()
    assert condition.raised
