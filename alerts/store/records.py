"""What the alert store returns and raises: frozen records and the error hierarchy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from analytics.events import Category, Severity, Source
from analytics.lifecycle import CaseStatus, State, Status


class AlertStoreError(Exception):
    """Base of everything the alert and token stores raise on purpose."""


class AlertNotFound(AlertStoreError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(f"no alert with id {alert_id}")
        self.alert_id = alert_id


class TransitionRefused(AlertStoreError):
    """The action does not apply to the alert as it is now; `reason` says why (HTTP 409)."""

    def __init__(self, alert_id: int, action: str, reason: str) -> None:
        super().__init__(f"alert {alert_id}: {reason}")
        self.alert_id = alert_id
        self.action = action
        self.reason = reason


class DatabaseUnavailable(AlertStoreError):
    """The database could not be reached or stayed locked too long (HTTP 503)."""


class ChangeAction(StrEnum):
    """What a change-log entry records."""

    CREATED = "created"
    REPEATED = "repeated"
    CLEARED = "cleared"  # the condition ended and the alert resolved itself
    ENDED = "ended"  # the condition of a street case ended; the case stays open
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"
    FILED = "filed"
    DISPATCHED = "dispatched"
    HANDLED = "handled"
    VERIFIED = "verified"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    ASSIGNED = "assigned"
    COMMENTED = "commented"
    REMINDED = "reminded"
    ESCALATED = "escalated"


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    alert_id: int
    author: str
    text: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    site_id: str
    device_id: str | None
    kind: str
    category: Category
    rule: str
    severity: Severity
    status: Status
    case_status: CaseStatus | None
    first_seen_ms: int
    last_seen_ms: int
    ended_ms: int | None  # when the condition stopped holding, if it did
    count: int  # raises seen while open, the first included
    evidence: tuple[str, ...]
    details: Mapping[str, Any]
    assignee: str | None
    acknowledged_by: str | None
    acknowledged_at_ms: int | None
    resolved_by: str | None
    resolved_at_ms: int | None
    resolution: str | None  # auto | manual | closed | cancelled
    escalation_level: int
    last_reminded_ms: int | None
    updated_ms: int
    # Only get() fills comments; left out of ==, so an alert from get() equals one from list().
    comments: tuple[Comment, ...] = field(default=(), compare=False)

    @property
    def state(self) -> State:
        return State(self.status, self.case_status)

    @property
    def source(self) -> Source:
        return Source(self.site_id, self.device_id)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; also the snapshot format of the change log (without comments)."""
        out = {name: getattr(self, name) for name in _ALERT_FIELDS}
        out["evidence"] = list(self.evidence)
        out["details"] = dict(self.details)
        for name in ("category", "severity", "status", "case_status"):
            value = out[name]
            out[name] = None if value is None else str(value.value)
        return out

    @classmethod
    def from_mapping(cls, row: Mapping[Any, Any]) -> Alert:
        """From a database row or a change-log snapshot."""
        case = row["case_status"]
        return cls(
            id=int(row["id"]),
            site_id=row["site_id"],
            device_id=row["device_id"],
            kind=row["kind"],
            category=Category(row["category"]),
            rule=row["rule"],
            severity=Severity(row["severity"]),
            status=Status(row["status"]),
            case_status=None if case is None else CaseStatus(case),
            first_seen_ms=int(row["first_seen_ms"]),
            last_seen_ms=int(row["last_seen_ms"]),
            ended_ms=_opt_int(row["ended_ms"]),
            count=int(row["count"]),
            evidence=tuple(row["evidence"] or ()),
            details=dict(row["details"] or {}),
            assignee=row["assignee"],
            acknowledged_by=row["acknowledged_by"],
            acknowledged_at_ms=_opt_int(row["acknowledged_at_ms"]),
            resolved_by=row["resolved_by"],
            resolved_at_ms=_opt_int(row["resolved_at_ms"]),
            resolution=row["resolution"],
            escalation_level=int(row["escalation_level"]),
            last_reminded_ms=_opt_int(row["last_reminded_ms"]),
            updated_ms=int(row["updated_ms"]),
        )


_ALERT_FIELDS = tuple(name for name in Alert.__dataclass_fields__ if name != "comments")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class Change:
    """One change-log entry; `seq` increases in commit order and serves as the SSE event id."""

    seq: int
    alert_id: int
    site_id: str
    kind: str
    action: ChangeAction
    actor: str
    at_ms: int
    alert: Alert  # the alert as this change left it
    note: str | None = None


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts list() returns; None means no condition on that field.

    `site_ids` also carries a caller's site scope: an empty set matches nothing. `since_ms`
    (inclusive) and `until_ms` (exclusive) bound `first_seen_ms`, the same key the pages are
    ordered by, so a time window is one index range.
    """

    status: frozenset[Status] | None = None
    site_ids: frozenset[str] | None = None
    device_id: str | None = None
    kind: str | None = None
    category: Category | None = None
    severity: Severity | None = None
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Alert]
    next_cursor: str | None  # None on the last page
