"""What the life cycle offers a person in each state (the console shows only these)."""

from __future__ import annotations

import itertools

import pytest

from analytics.lifecycle import (
    Action,
    CaseStatus,
    InvalidTransition,
    State,
    Status,
    allowed_actions,
    apply,
)

A = Action


@pytest.mark.parametrize(
    ("state", "offered"),
    [
        (State(Status.OPEN, None), [A.ACKNOWLEDGE, A.RESOLVE]),
        (State(Status.ACKNOWLEDGED, None), [A.RESOLVE]),
        (State(Status.RESOLVED, None), []),
        (State(Status.OPEN, CaseStatus.COLLECTED), [A.ACKNOWLEDGE, A.FILE, A.CANCEL]),
        (State(Status.ACKNOWLEDGED, CaseStatus.FILED), [A.DISPATCH, A.CANCEL]),
        (State(Status.ACKNOWLEDGED, CaseStatus.DISPATCHED), [A.HANDLE]),
        (State(Status.RESOLVED, CaseStatus.CLOSED), []),
    ],
)
def test_offered_actions(state: State, offered: list[Action]) -> None:
    assert allowed_actions(state) == offered


@pytest.mark.parametrize(("status", "case"), list(itertools.product(Status, [None, *CaseStatus])))
def test_what_is_offered_applies_and_nothing_else_does(
    status: Status, case: CaseStatus | None
) -> None:
    state = State(status, case)
    offered = allowed_actions(state)
    for action in Action:
        if action in offered:
            apply(state, action)
        else:
            with pytest.raises(InvalidTransition):
                apply(state, action)
