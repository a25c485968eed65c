"""An alert change as every consumer sees it: the REST API's answers, the Server-Sent Events
stream and the MQTT relay all send this one payload (`ChangeView`), so an integration that
reads one reads them all."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from alerts.store import Alert, Change
from analytics.events import Category, Severity
from analytics.lifecycle import Action, CaseStatus, Status, allowed_actions


class CommentView(BaseModel):
    author: str
    text: str
    at_ms: int


class AlertView(BaseModel):
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
    ended_ms: int | None = Field(description="When the condition stopped holding, if it did.")
    count: int = Field(description="Raises seen while open, the first included.")
    evidence: list[str]
    details: dict[str, Any]
    assignee: str | None
    acknowledged_by: str | None
    acknowledged_at_ms: int | None
    resolved_by: str | None
    resolved_at_ms: int | None
    resolution: str | None
    escalation_level: int
    last_reminded_ms: int | None
    updated_ms: int
    comments: list[CommentView] = Field(default_factory=list)
    actions: list[Action] = Field(
        default_factory=list,
        description="The life-cycle actions the alert accepts now (POST .../acknowledge, "
        ".../resolve, .../case/{action}); who may take them depends on the caller's role.",
    )

    @classmethod
    def of(cls, alert: Alert) -> AlertView:
        comments = [
            CommentView(author=c.author, text=c.text, at_ms=c.at_ms) for c in alert.comments
        ]
        return cls.model_validate(
            {**alert.to_json(), "comments": comments, "actions": allowed_actions(alert.state)}
        )


class ChangeView(BaseModel):
    """One entry of the change log: what happened to the alert, and the alert as it left it
    (its comments are in the alert's own page; a `commented` change carries the text in
    `note`)."""

    seq: int
    action: str
    actor: str
    at_ms: int
    note: str | None
    alert: AlertView

    @classmethod
    def of(cls, change: Change) -> ChangeView:
        return cls(
            seq=change.seq,
            action=change.action.value,
            actor=change.actor,
            at_ms=change.at_ms,
            note=change.note,
            alert=AlertView.of(change.alert),
        )


def change_json(change: Change) -> str:
    """The payload as JSON text (UTF-8 as it is, not escaped)."""
    return ChangeView.of(change).model_dump_json()
