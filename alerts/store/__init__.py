"""The relational alert store: SQLite by default (one file), PostgreSQL by URL.

    store = AlertStore("sqlite:////var/lib/mingliang/alerts.db")   # or postgresql+psycopg://...
    store.create_schema()
    store.raise_(signal)            # -> Change "created" | "repeated"
    store.act(alert_id, Action.ACKNOWLEDGE, "wang")

Tables: ``alerts`` (one row per alert; at most one unresolved row per (site, device, rule),
enforced by a partial unique index), ``alert_comments``, ``alert_changes`` (the change log;
``seq`` is the Server-Sent Events id), ``rule_state`` (JSON state of the telemetry rules) and
``audit_log`` (who changed what: every change gets an entry in its own transaction; read and
written by others through devices.audit); devices.tokens keeps ``api_tokens`` in the same
database, sharing ``AlertStore.engine``.
The API calls the store through ``asyncio.to_thread``; the alert engine thread calls it
directly. Times are epoch milliseconds.

Errors::

    Exception
    ├── AlertStoreError              everything raised on purpose
    │   ├── AlertNotFound            no alert with that id                       (HTTP 404)
    │   ├── TransitionRefused        lifecycle.InvalidTransition, with .reason   (HTTP 409)
    │   └── DatabaseUnavailable      database unreachable or locked too long     (HTTP 503)
    └── ValueError                   bad input: unknown kind, malformed cursor, limit out of range,
                                     empty actor or text                         (HTTP 400/422)
"""

from alerts.store.db import make_engine, now_ms
from alerts.store.records import (
    Alert,
    AlertFilter,
    AlertNotFound,
    AlertStoreError,
    Change,
    ChangeAction,
    Comment,
    DatabaseUnavailable,
    Page,
    TransitionRefused,
)
from alerts.store.store import EVIDENCE_LIMIT, MAX_PAGE, AlertStore

__all__ = [
    "EVIDENCE_LIMIT",
    "MAX_PAGE",
    "Alert",
    "AlertFilter",
    "AlertNotFound",
    "AlertStore",
    "AlertStoreError",
    "Change",
    "ChangeAction",
    "Comment",
    "DatabaseUnavailable",
    "Page",
    "TransitionRefused",
    "make_engine",
    "now_ms",
]
