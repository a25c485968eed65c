"""Tables of the alert store, identical on SQLite and PostgreSQL.

The rule "at most one unresolved alert per (source, rule)" is the partial unique index
``alerts_one_open``; raising is an upsert against exactly that index, so the database, not
the caller, decides between "created" and "repeated", even under concurrent raises.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    func,
    literal_column,
)

from analytics.events import Category, Severity
from analytics.lifecycle import CaseStatus, Status

metadata = MetaData()

# SQLite makes only INTEGER PRIMARY KEY an alias of the rowid; PostgreSQL gets 64 bits.
_ID = BigInteger().with_variant(Integer(), "sqlite")


def _one_of(column: str, values: type[Status | Severity | Category | CaseStatus]) -> str:
    listed = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({listed})"


alerts = Table(
    "alerts",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("site_id", Text, nullable=False),
    Column("device_id", Text),
    Column("kind", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("case_status", Text),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("ended_ms", BigInteger),
    Column("count", Integer, nullable=False),
    Column("evidence", JSON, nullable=False),
    Column("details", JSON, nullable=False),
    Column("assignee", Text),
    Column("acknowledged_by", Text),
    Column("acknowledged_at_ms", BigInteger),
    Column("resolved_by", Text),
    Column("resolved_at_ms", BigInteger),
    Column("resolution", Text),
    Column("escalation_level", Integer, nullable=False),
    Column("last_reminded_ms", BigInteger),
    Column("updated_ms", BigInteger, nullable=False),
    CheckConstraint(_one_of("status", Status), name="alerts_status"),
    CheckConstraint(_one_of("severity", Severity), name="alerts_severity"),
    CheckConstraint(_one_of("category", Category), name="alerts_category"),
    CheckConstraint(
        f"case_status IS NULL OR {_one_of('case_status', CaseStatus)}", name="alerts_case_status"
    ),
    CheckConstraint("count >= 1", name="alerts_count"),
    # AUTOINCREMENT: ids are never reused, even after the newest row is deleted.
    sqlite_autoincrement=True,
)

# Literal SQL, not bound parameters: an upsert's conflict target must repeat the index
# expressions and predicate textually for PostgreSQL and SQLite to infer the index.
UNRESOLVED: Final[ColumnElement[bool]] = alerts.c.status != literal_column("'resolved'")
device_key: Final[ColumnElement[str]] = func.coalesce(alerts.c.device_id, literal_column("''"))
ONE_OPEN_ELEMENTS: Final = (alerts.c.site_id, device_key, alerts.c.rule)

Index(
    "alerts_one_open",
    *ONE_OPEN_ELEMENTS,
    unique=True,
    sqlite_where=UNRESOLVED,
    postgresql_where=UNRESOLVED,
)
# list() pages newest first by (first_seen_ms, id); each filter that narrows a lot has an
# index that still yields rows in that order, so a page is a short index range scan.
Index("alerts_newest", alerts.c.first_seen_ms, alerts.c.id)
Index("alerts_site_newest", alerts.c.site_id, alerts.c.first_seen_ms, alerts.c.id)
Index("alerts_status_newest", alerts.c.status, alerts.c.first_seen_ms, alerts.c.id)
Index("alerts_device_newest", alerts.c.device_id, alerts.c.first_seen_ms, alerts.c.id)
Index("alerts_kind_newest", alerts.c.kind, alerts.c.first_seen_ms, alerts.c.id)

alert_comments = Table(
    "alert_comments",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("alert_id", _ID, ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    Column("author", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("at_ms", BigInteger, nullable=False),
    sqlite_autoincrement=True,
)
Index("alert_comments_alert", alert_comments.c.alert_id, alert_comments.c.id)

alert_changes = Table(
    "alert_changes",
    metadata,
    Column("seq", _ID, primary_key=True, autoincrement=True),
    Column("alert_id", _ID, ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    Column("site_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("note", Text),
    Column("at_ms", BigInteger, nullable=False),
    Column("alert", JSON, nullable=False),  # snapshot of the alert after the change
    # Change sequence numbers are SSE event ids: they must never be handed out twice.
    sqlite_autoincrement=True,
)
Index("alert_changes_alert", alert_changes.c.alert_id, alert_changes.c.seq)

# Who changed what, when and from where (devices/audit.py reads and writes it). Defined with
# the alert tables so that every alert change writes its entry in its own transaction, and so
# that AlertStore.create_schema makes it: devices/audit.py builds on this package, not the
# reverse.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target_kind", Text, nullable=False),
    Column("target_id", Text, nullable=False),
    Column("site_id", Text),
    Column("source", Text),  # a client address, "rules", or cli:<user>@<host>
    Column("details", JSON, nullable=False),
    # Ids order the trail and page it: never reused, even after the newest row is deleted.
    sqlite_autoincrement=True,
)
# Read newest first (by id) under the filters an administrator uses most; the time filter
# has its own. Each index is one more write per change: no more of them than this.
Index("audit_log_target", audit_log.c.target_kind, audit_log.c.target_id, audit_log.c.id)
Index("audit_log_actor", audit_log.c.actor, audit_log.c.id)
Index("audit_log_site", audit_log.c.site_id, audit_log.c.id)
Index("audit_log_at", audit_log.c.at_ms)

rule_state = Table(
    "rule_state",
    metadata,
    Column("key", Text, primary_key=True),
    Column("state", JSON, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
