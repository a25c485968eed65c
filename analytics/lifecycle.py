"""The alert life cycle as a pure state machine.

every alert:   open --acknowledge--> acknowledged --resolve--> resolved
               open --resolve--> resolved            (also automatic, when the rule clears)

street cases:  collected --file--> filed --dispatch--> dispatched --handle--> handled
               --verify--> verified --close--> closed;   collected|filed --cancel--> cancelled
               Filing acknowledges the alert; closing or cancelling resolves it. A street
               case ends only by close or cancel, never by a plain resolve, because a
               person must review, dispatch and verify it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from analytics.events import Category


class Status(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class CaseStatus(StrEnum):
    COLLECTED = "collected"
    FILED = "filed"
    DISPATCHED = "dispatched"
    HANDLED = "handled"
    VERIFIED = "verified"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Action(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    FILE = "file"
    DISPATCH = "dispatch"
    HANDLE = "handle"
    VERIFY = "verify"
    CLOSE = "close"
    CANCEL = "cancel"


CASE_ACTIONS = frozenset(
    {Action.FILE, Action.DISPATCH, Action.HANDLE, Action.VERIFY, Action.CLOSE, Action.CANCEL}
)

# action: (case states it applies to, the case state it leads to)
_CASE_STEPS: dict[Action, tuple[frozenset[CaseStatus], CaseStatus]] = {
    Action.FILE: (frozenset({CaseStatus.COLLECTED}), CaseStatus.FILED),
    Action.DISPATCH: (frozenset({CaseStatus.FILED}), CaseStatus.DISPATCHED),
    Action.HANDLE: (frozenset({CaseStatus.DISPATCHED}), CaseStatus.HANDLED),
    Action.VERIFY: (frozenset({CaseStatus.HANDLED}), CaseStatus.VERIFIED),
    Action.CLOSE: (frozenset({CaseStatus.VERIFIED}), CaseStatus.CLOSED),
    Action.CANCEL: (frozenset({CaseStatus.COLLECTED, CaseStatus.FILED}), CaseStatus.CANCELLED),
}


class InvalidTransition(Exception):
    """The action does not apply to the alert in its current state; says why."""


@dataclass(frozen=True, slots=True)
class State:
    status: Status
    case_status: CaseStatus | None  # None unless the alert is a street case


def initial_state(category: Category) -> State:
    case = CaseStatus.COLLECTED if category is Category.STREET else None
    return State(Status.OPEN, case)


def apply(state: State, action: Action) -> State:
    """The state after `action`, or InvalidTransition naming what is wrong."""
    if state.status is Status.RESOLVED and action not in CASE_ACTIONS:
        raise InvalidTransition(f"cannot {action.value}: the alert is already resolved")
    if action in CASE_ACTIONS:
        return _case_step(state, action)
    if action is Action.ACKNOWLEDGE:
        if state.status is Status.ACKNOWLEDGED:
            raise InvalidTransition("cannot acknowledge: the alert is already acknowledged")
        return State(Status.ACKNOWLEDGED, state.case_status)
    if action is Action.RESOLVE:
        if state.case_status is not None:
            raise InvalidTransition(
                f"cannot resolve a street case ({state.case_status.value}): "
                "it ends by close or cancel"
            )
        return State(Status.RESOLVED, None)
    raise InvalidTransition(f"unknown action {action!r}")


def _case_step(state: State, action: Action) -> State:
    if state.case_status is None:
        raise InvalidTransition(f"cannot {action.value}: the alert is not a street case")
    allowed, target = _CASE_STEPS[action]
    if state.case_status not in allowed:
        needed = " or ".join(sorted(s.value for s in allowed))
        raise InvalidTransition(
            f"cannot {action.value} a case that is {state.case_status.value}; it must be {needed}"
        )
    if target in (CaseStatus.CLOSED, CaseStatus.CANCELLED):
        return State(Status.RESOLVED, target)
    if target is CaseStatus.FILED:
        return State(Status.ACKNOWLEDGED, target)  # filing is a person's review
    return State(state.status, target)


def allowed_actions(state: State) -> list[Action]:
    """The actions `apply` accepts in `state`, in the order of `Action`: what a person may be
    offered (the console shows only these)."""
    allowed = []
    for action in Action:
        try:
            apply(state, action)
        except InvalidTransition:
            continue
        allowed.append(action)
    return allowed


def clears_automatically(state: State) -> bool:
    """Whether a Clear signal resolves the alert: not for street cases, a person ends those."""
    return state.status is not Status.RESOLVED and state.case_status is None
