"""AlertStore: signals in, alerts with a life cycle and a change log out.

Every mutating method is one transaction that updates the alert and appends its change-log
row together, so an SSE client replaying the log never sees a change the alerts table lacks,
or the reverse. The same transaction adds the change's entry to the audit trail
(devices/audit.py): who, what, when and from where (`source`: the client address of an API
call, "rules" for the alert engine). Life-cycle rules come from analytics.lifecycle; this
module only persists their outcome.

Concurrency:
* Raising is one upsert against the partial unique index on unresolved (source, rule).
* Acting reads the alert, asks lifecycle.apply, then updates only if the state is still the
  one it read; if another writer got there first it reads again, and lifecycle then names
  the refusal (for example "already acknowledged").
* Change-log order is commit order. SQLite serialises writers anyway; on PostgreSQL every
  writer takes one advisory lock just before appending to the log (after all its row locks,
  so no deadlock), which keeps a reader from seeing seq 11 committed while 10 is still in
  flight and later skipping it when it resumes "after 11".
"""

from __future__ import annotations

import base64
import binascii
import builtins
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    QueuePool,
    Row,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)

from alerts.store.db import (
    CHANGELOG_LOCK,
    SCHEMA_LOCK,
    Clock,
    advisory_lock,
    make_engine,
    notify_change,
    now_ms,
    transaction,
    upsert,
)
from alerts.store.records import (
    Alert,
    AlertFilter,
    AlertNotFound,
    AlertStoreError,
    Change,
    ChangeAction,
    Comment,
    Page,
    TransitionRefused,
)
from alerts.store.schema import (
    ONE_OPEN_ELEMENTS,
    UNRESOLVED,
    alert_changes,
    alert_comments,
    alerts,
    audit_log,
    device_key,
    metadata,
    rule_state,
)
from analytics.events import TAXONOMY, Clear, Kind, Raise, Severity
from analytics.lifecycle import (
    Action,
    InvalidTransition,
    Status,
    apply,
    clears_automatically,
    initial_state,
)

EVIDENCE_LIMIT: Final = 20  # newest evidence references kept on a repeating alert
MAX_PAGE: Final = 500
MAX_TEXT: Final = 4000  # characters of a comment or note
_ATTEMPTS: Final = 20  # optimistic retries; each one means another writer committed first

_PAST: Final[Mapping[Action, ChangeAction]] = {
    Action.ACKNOWLEDGE: ChangeAction.ACKNOWLEDGED,
    Action.RESOLVE: ChangeAction.RESOLVED,
    Action.FILE: ChangeAction.FILED,
    Action.DISPATCH: ChangeAction.DISPATCHED,
    Action.HANDLE: ChangeAction.HANDLED,
    Action.VERIFY: ChangeAction.VERIFIED,
    Action.CLOSE: ChangeAction.CLOSED,
    Action.CANCEL: ChangeAction.CANCELLED,
}
_RESOLUTION: Final[Mapping[Action, str]] = {
    Action.RESOLVE: "manual",
    Action.CLOSE: "closed",
    Action.CANCEL: "cancelled",
}
SYSTEM_ACTOR: Final = "system"
ENGINE_SOURCE: Final = "rules"  # the audit trail's source of what the alert engine changes


def _kind(name: str) -> Kind:
    try:
        return TAXONOMY[name]
    except KeyError:
        raise ValueError(f"unknown alert kind {name!r}") from None


def _rank(severity: ColumnElement[str]) -> ColumnElement[int]:
    """Severity.rank in SQL: lower is more urgent."""
    return case({s.value: s.rank for s in Severity}, value=severity, else_=len(Severity))


def _text(what: str, value: str) -> str:
    if not value or not value.strip():
        raise ValueError(f"{what} must not be empty")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} is longer than {MAX_TEXT} characters")
    return value


def _rule_actor(rule: str) -> str:
    return f"rule:{rule}"


def encode_cursor(first_seen_ms: int, alert_id: int) -> str:
    raw = f"{first_seen_ms}:{alert_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """(first_seen_ms, id) of the last alert of the previous page; ValueError if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        first, _, ident = raw.partition(":")
        key = int(first), int(ident)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"bad cursor {cursor[:40]!r}: pass next_cursor of a page") from exc
    if key[1] < 1 or encode_cursor(*key) != cursor:
        raise ValueError(f"bad cursor {cursor[:40]!r}: pass next_cursor of a page")
    return key


def _merge_evidence(old: Sequence[str], new: Iterable[str]) -> tuple[str, ...]:
    fresh = list(dict.fromkeys(new))
    kept = [item for item in old if item not in fresh]
    return tuple((kept + fresh)[-EVIDENCE_LIMIT:])


class AlertStore:
    """The relational alert store. Thread-safe; every method is synchronous."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = now_ms,
        busy_timeout_ms: int = 10_000,
    ) -> None:
        self._engine = make_engine(url, busy_timeout_ms=busy_timeout_ms)
        self._clock = clock

    @property
    def engine(self) -> Engine:
        """The pooled engine, for stores that share the database (devices.tokens)."""
        return self._engine

    def close(self, wait_s: float = 5.0) -> None:
        """Close the pool once the queries other threads have in flight are done (up to
        `wait_s`): a connection handed back to a closed pool would never be closed."""
        pool = self._engine.pool
        deadline = time.monotonic() + wait_s
        while isinstance(pool, QueuePool) and pool.checkedout() and time.monotonic() < deadline:
            time.sleep(0.02)  # polling the pool: its connections come back from other threads
        self._engine.dispose()

    def create_schema(self) -> None:
        """Create missing tables and indexes; safe to run at every start, by several nodes."""
        with transaction(self._engine, write=True) as conn:
            advisory_lock(conn, SCHEMA_LOCK)
            metadata.create_all(conn, checkfirst=True)

    # -- signals ---------------------------------------------------------------------------

    def raise_(self, signal: Raise) -> Change:
        """Open an alert for (source, rule), or count a repeat of the unresolved one."""
        kind = _kind(signal.kind)
        severity = Severity(signal.severity)
        now = self._clock()
        state = initial_state(kind.category)
        stmt = upsert(self._engine, alerts).values(
            site_id=signal.source.site_id,
            device_id=signal.source.device_id,
            kind=kind.name,
            category=kind.category.value,
            rule=signal.rule,
            severity=severity.value,
            status=state.status.value,
            case_status=None if state.case_status is None else state.case_status.value,
            first_seen_ms=signal.at_ms,
            last_seen_ms=signal.at_ms,
            ended_ms=None,
            count=1,
            evidence=list(_merge_evidence((), signal.evidence)),
            details=dict(signal.details),
            escalation_level=0,
            updated_ms=now,
        )
        new = stmt.excluded
        upsert_stmt = stmt.on_conflict_do_update(
            index_elements=ONE_OPEN_ELEMENTS,
            index_where=UNRESOLVED,
            set_={
                "count": alerts.c.count + 1,
                "last_seen_ms": case(
                    (new.last_seen_ms > alerts.c.last_seen_ms, new.last_seen_ms),
                    else_=alerts.c.last_seen_ms,
                ),
                "severity": case(
                    (_rank(new.severity) < _rank(alerts.c.severity), new.severity),
                    else_=alerts.c.severity,
                ),
                "details": new.details,
                "ended_ms": None,  # the condition holds again
                "updated_ms": new.updated_ms,
            },
        ).returning(*alerts.c)
        with transaction(self._engine, write=True) as conn:
            alert = Alert.from_mapping(conn.execute(upsert_stmt).one()._mapping)
            action = ChangeAction.CREATED if alert.count == 1 else ChangeAction.REPEATED
            if action is ChangeAction.REPEATED and signal.evidence:
                merged = _merge_evidence(alert.evidence, signal.evidence)
                if merged != alert.evidence:
                    # The upsert holds the row (PostgreSQL row lock, SQLite write lock) until
                    # commit, so this read-modify-write cannot interleave with another raise.
                    alert = self._update(conn, alert.id, {"evidence": list(merged)})
            actor = _rule_actor(signal.rule)
            return self._log(conn, alert, action, actor, now, None, ENGINE_SOURCE)

    def clear(self, signal: Clear) -> Change | None:
        """The condition ended: resolve the alert, or for a street case record `ended_ms`.

        None if (source, rule) has no unresolved alert, or the street case is already ended.
        """
        _kind(signal.kind)
        now = self._clock()
        where = and_(
            alerts.c.site_id == signal.source.site_id,
            device_key == (signal.source.device_id or ""),
            alerts.c.rule == signal.rule,
            UNRESOLVED,
        )
        for _ in range(_ATTEMPTS):
            with transaction(self._engine, write=True) as conn:
                row = conn.execute(select(alerts).where(where)).first()
                if row is None:
                    return None
                alert = Alert.from_mapping(row._mapping)
                if clears_automatically(alert.state):
                    target = apply(alert.state, Action.RESOLVE)
                    action = ChangeAction.CLEARED
                    values: dict[str, Any] = {
                        "status": target.status.value,
                        "resolution": "auto",
                        "resolved_by": _rule_actor(signal.rule),
                        "resolved_at_ms": now,
                        "ended_ms": signal.at_ms,
                    }
                elif alert.ended_ms is None:
                    action = ChangeAction.ENDED
                    values = {"ended_ms": signal.at_ms}
                else:
                    return None
                guard = alerts.c.ended_ms.is_(None)
                updated = self._update_if(conn, alert, values, now, guard)
                if updated is not None:
                    actor = _rule_actor(signal.rule)
                    return self._log(conn, updated, action, actor, now, None, ENGINE_SOURCE)
        raise AlertStoreError(
            f"{signal.source.key} {signal.rule}: gave up after {_ATTEMPTS} concurrent changes"
        )

    # -- people ----------------------------------------------------------------------------

    def act(
        self,
        alert_id: int,
        action: Action,
        actor: str,
        note: str | None = None,
        *,
        source: str | None = None,
    ) -> Change:
        """Apply a life-cycle action; TransitionRefused (with the reason) if it does not apply.

        A note is kept as a comment by `actor` and on the change-log entry. `source` is where
        the actor acted from (a client address), for the audit trail.
        """
        action = Action(action)
        _text("actor", actor)
        if note is not None:
            _text("note", note)
        for _ in range(_ATTEMPTS):
            with transaction(self._engine, write=True) as conn:
                alert = self._load(conn, alert_id)
                try:
                    target = apply(alert.state, action)
                except InvalidTransition as exc:
                    raise TransitionRefused(alert_id, action.value, str(exc)) from exc
                now = self._clock()
                values: dict[str, Any] = {
                    "status": target.status.value,
                    "case_status": None if target.case_status is None else target.case_status,
                }
                if alert.status is Status.OPEN and target.status is Status.ACKNOWLEDGED:
                    values |= {"acknowledged_by": actor, "acknowledged_at_ms": now}
                if target.status is Status.RESOLVED:
                    values |= {
                        "resolved_by": actor,
                        "resolved_at_ms": now,
                        "resolution": _RESOLUTION[action],
                    }
                updated = self._update_if(conn, alert, values, now)
                if updated is None:
                    continue  # another writer changed the state since we read it: read again
                if note is not None:
                    self._insert_comment(conn, alert_id, actor, note, now)
                return self._log(conn, updated, _PAST[action], actor, now, note, source)
        raise AlertStoreError(f"alert {alert_id}: gave up after {_ATTEMPTS} concurrent changes")

    def assign(
        self, alert_id: int, assignee: str | None, actor: str, *, source: str | None = None
    ) -> Change:
        """Give the alert to `assignee` (None takes it back); refused once resolved."""
        _text("actor", actor)
        if assignee is not None:
            _text("assignee", assignee)
        for _ in range(_ATTEMPTS):
            with transaction(self._engine, write=True) as conn:
                alert = self._load(conn, alert_id)
                if alert.status is Status.RESOLVED:
                    raise TransitionRefused(
                        alert_id, "assign", "cannot assign: the alert is already resolved"
                    )
                now = self._clock()
                updated = self._update_if(conn, alert, {"assignee": assignee}, now)
                if updated is not None:
                    return self._log(
                        conn, updated, ChangeAction.ASSIGNED, actor, now, assignee, source
                    )
        raise AlertStoreError(f"alert {alert_id}: gave up after {_ATTEMPTS} concurrent changes")

    def comment(
        self, alert_id: int, author: str, text: str, *, source: str | None = None
    ) -> Change:
        """Add a comment; allowed in any state, resolved included (findings after the fact)."""
        _text("author", author)
        _text("comment", text)
        with transaction(self._engine, write=True) as conn:
            self._load(conn, alert_id)
            now = self._clock()
            self._insert_comment(conn, alert_id, author, text, now)
            alert = self._update(conn, alert_id, {"updated_ms": now})
            return self._log(conn, alert, ChangeAction.COMMENTED, author, now, text, source)

    def overdue(
        self,
        now_ms: int,
        remind_after_ms: Mapping[Severity, int],
        escalate_after_ms: Mapping[Severity, int],
    ) -> list[Change]:
        """Remind about, then escalate, unacknowledged alerts left open too long.

        An open alert whose age (since first_seen) reached its severity's `remind_after` gets
        a "reminded" entry, and again each `remind_after` after the last reminder. Each time
        its age passes another multiple of `escalate_after`, its escalation level goes up by
        one ("escalated"). Severities missing from a mapping are never reminded or escalated.
        Calling again at the same time records nothing; the changes recorded are returned.
        """
        for mapping in (remind_after_ms, escalate_after_ms):
            for severity, after in mapping.items():
                if after <= 0:
                    raise ValueError(f"{severity}: interval must be positive, got {after}")
        remind = {Severity(s): v for s, v in remind_after_ms.items()}
        escalate = {Severity(s): v for s, v in escalate_after_ms.items()}
        # Only the alerts that are due, found by the database: a district has thousands of
        # open alerts, and this runs every 30 s.
        due_terms: list[ColumnElement[bool]] = []
        for severity in sorted({*remind, *escalate}, key=lambda s: s.rank):
            terms: list[ColumnElement[bool]] = []
            every = remind.get(severity)
            if every is not None:
                terms.append(
                    and_(
                        alerts.c.first_seen_ms <= now_ms - every,
                        or_(
                            alerts.c.last_reminded_ms.is_(None),
                            alerts.c.last_reminded_ms <= now_ms - every,
                        ),
                    )
                )
            limit = escalate.get(severity)
            if limit is not None:
                # BIGINT throughout: epoch milliseconds do not fit PostgreSQL's integer.
                level = cast(alerts.c.escalation_level, BigInteger)
                terms.append(
                    alerts.c.first_seen_ms
                    <= literal(now_ms, BigInteger) - (level + 1) * literal(limit, BigInteger)
                )
            due_terms.append(and_(alerts.c.severity == severity.value, or_(*terms)))
        if not due_terms:
            return []
        query = (
            select(alerts)
            .where(alerts.c.status == Status.OPEN.value, or_(*due_terms))
            .order_by(alerts.c.first_seen_ms, alerts.c.id)
        )
        with transaction(self._engine, write=False) as conn:
            candidates = [Alert.from_mapping(row._mapping) for row in conn.execute(query)]
        if not candidates:
            return []
        with transaction(self._engine, write=True) as conn:
            due: list[tuple[Alert, list[ChangeAction]]] = []
            for alert in candidates:
                age = now_ms - alert.first_seen_ms
                values: dict[str, Any] = {}
                actions: list[ChangeAction] = []
                every = remind.get(alert.severity)
                last = alert.last_reminded_ms
                if every is not None and age >= every and (last is None or now_ms - last >= every):
                    values["last_reminded_ms"] = now_ms
                    actions.append(ChangeAction.REMINDED)
                limit = escalate.get(alert.severity)
                if limit is not None and age >= (alert.escalation_level + 1) * limit:
                    values["escalation_level"] = alert.escalation_level + 1
                    actions.append(ChangeAction.ESCALATED)
                if not actions:
                    continue
                # Only if nobody acknowledged, reminded or escalated it since it was read.
                guard = and_(
                    alerts.c.last_reminded_ms.is_not_distinct_from(last),
                    alerts.c.escalation_level == alert.escalation_level,
                )
                updated = self._update_if(conn, alert, values, now_ms, guard)
                if updated is not None:  # else another checker or a person was first
                    due.append((updated, actions))
            # Log only after every row update: the PostgreSQL log lock must come last.
            return [
                self._log(conn, alert, action, SYSTEM_ACTOR, now_ms, None, ENGINE_SOURCE)
                for alert, actions in due
                for action in actions
            ]

    # -- reading ---------------------------------------------------------------------------

    def get(self, alert_id: int) -> Alert:
        with transaction(self._engine, write=False) as conn:
            alert = self._load(conn, alert_id)
            rows = conn.execute(
                select(alert_comments)
                .where(alert_comments.c.alert_id == alert_id)
                .order_by(alert_comments.c.id)
            )
            comments = tuple(
                Comment(int(r.id), int(r.alert_id), r.author, r.text, int(r.at_ms)) for r in rows
            )
        return replace(alert, comments=comments)

    def list(self, flt: AlertFilter, cursor: str | None = None, limit: int = 50) -> Page:
        """Alerts matching `flt`, newest first (first_seen_ms, then id), one page at a time.

        `cursor` is the previous page's next_cursor; a malformed one raises ValueError.
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        conditions = _conditions(flt)
        if conditions is None:
            return Page([], None)
        key = tuple_(alerts.c.first_seen_ms, alerts.c.id)
        if cursor is not None:
            conditions.append(key < tuple_(*decode_cursor(cursor)))
        query = (
            select(alerts)
            .where(*conditions)
            .order_by(alerts.c.first_seen_ms.desc(), alerts.c.id.desc())
            .limit(limit + 1)
        )
        with transaction(self._engine, write=False) as conn:
            items = [Alert.from_mapping(r._mapping) for r in conn.execute(query)]
        if len(items) <= limit:
            return Page(items, None)
        last = items[limit - 1]
        return Page(items[:limit], encode_cursor(last.first_seen_ms, last.id))

    def changes_since(
        self, seq: int, site_ids: frozenset[str] | None = None, limit: int = 500
    ) -> builtins.list[Change]:
        """Change-log entries after `seq` (an SSE Last-Event-ID), oldest first."""
        if not 1 <= limit <= 10 * MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {10 * MAX_PAGE}, got {limit}")
        if site_ids is not None and not site_ids:
            return []
        query = select(alert_changes).where(alert_changes.c.seq > seq)
        if site_ids is not None:
            query = query.where(alert_changes.c.site_id.in_(sorted(site_ids)))
        query = query.order_by(alert_changes.c.seq).limit(limit)
        with transaction(self._engine, write=False) as conn:
            return [_change(r) for r in conn.execute(query)]

    def history(self, alert_id: int, limit: int = MAX_PAGE) -> builtins.list[Change]:
        """The alert's own change-log entries, oldest first (at most `limit`, the newest kept)."""
        query = (
            select(alert_changes)
            .where(alert_changes.c.alert_id == alert_id)
            .order_by(alert_changes.c.seq.desc())
            .limit(limit)
        )
        with transaction(self._engine, write=False) as conn:
            return [_change(r) for r in reversed(conn.execute(query).all())]

    def last_seq(self) -> int:
        with transaction(self._engine, write=False) as conn:
            last = conn.execute(select(func.max(alert_changes.c.seq))).scalar_one()
        return 0 if last is None else int(last)

    def open_counts(self) -> builtins.list[tuple[str, str, str, int]]:
        """(site_id, kind, severity, n) for dashboards: n unresolved (open or acknowledged)."""
        query = (
            select(alerts.c.site_id, alerts.c.kind, alerts.c.severity, func.count())
            .where(UNRESOLVED)
            .group_by(alerts.c.site_id, alerts.c.kind, alerts.c.severity)
            .order_by(alerts.c.site_id, alerts.c.kind, alerts.c.severity)
        )
        with transaction(self._engine, write=False) as conn:
            return [(r[0], r[1], r[2], int(r[3])) for r in conn.execute(query)]

    def devices_with_unresolved(
        self, kinds: Iterable[str], site_ids: frozenset[str] | None = None, rule: str | None = None
    ) -> set[str]:
        """Devices with an unresolved alert of one of `kinds` (the directory's offline list),
        raised by `rule` if one is named."""
        query = (
            select(alerts.c.device_id)
            .distinct()
            .where(UNRESOLVED, alerts.c.kind.in_(list(kinds)), alerts.c.device_id.is_not(None))
        )
        if rule is not None:
            query = query.where(alerts.c.rule == rule)
        if site_ids is not None:
            query = query.where(alerts.c.site_id.in_(sorted(site_ids)))
        with transaction(self._engine, write=False) as conn:
            return {row[0] for row in conn.execute(query)}

    # -- rule state ------------------------------------------------------------------------

    def save_rule_states(self, states: Mapping[str, object | None]) -> None:
        """Upsert each key's JSON state; None deletes the key. One transaction, two statements:
        the alert engine saves thousands of keys at a time."""
        if any(not key for key in states):
            raise ValueError("rule state key must not be empty")
        now = self._clock()
        gone = [key for key, state in states.items() if state is None]
        kept = [
            {"key": key, "state": state, "updated_ms": now}
            for key, state in states.items()
            if state is not None
        ]
        with transaction(self._engine, write=True) as conn:
            if gone:
                conn.execute(delete(rule_state).where(rule_state.c.key.in_(gone)))
            if kept:
                stmt = upsert(self._engine, rule_state)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[rule_state.c.key],
                        set_={"state": stmt.excluded.state, "updated_ms": stmt.excluded.updated_ms},
                    ),
                    kept,
                )

    def load_rule_states(self) -> dict[str, object]:
        with transaction(self._engine, write=False) as conn:
            rows = conn.execute(select(rule_state.c.key, rule_state.c.state))
            return {row.key: row.state for row in rows}

    # -- internals -------------------------------------------------------------------------

    def _load(self, conn: Connection, alert_id: int) -> Alert:
        row = conn.execute(select(alerts).where(alerts.c.id == alert_id)).first()
        if row is None:
            raise AlertNotFound(alert_id)
        return Alert.from_mapping(row._mapping)

    def _update(self, conn: Connection, alert_id: int, values: Mapping[str, Any]) -> Alert:
        stmt = update(alerts).where(alerts.c.id == alert_id).values(**values)
        return Alert.from_mapping(conn.execute(stmt.returning(*alerts.c)).one()._mapping)

    def _update_if(
        self,
        conn: Connection,
        alert: Alert,
        values: Mapping[str, Any],
        now: int,
        extra: ColumnElement[bool] | None = None,
    ) -> Alert | None:
        """Update only if the state is still the one read (and `extra` holds); else None."""
        case_status = None if alert.case_status is None else alert.case_status.value
        conditions = [
            alerts.c.id == alert.id,
            alerts.c.status == alert.status.value,
            alerts.c.case_status.is_not_distinct_from(case_status),
        ]
        if extra is not None:
            conditions.append(extra)
        stmt = (
            update(alerts)
            .where(*conditions)
            .values(**{k: getattr(v, "value", v) for k, v in values.items()}, updated_ms=now)
            .returning(*alerts.c)
        )
        row = conn.execute(stmt).first()
        return None if row is None else Alert.from_mapping(row._mapping)

    def _insert_comment(
        self, conn: Connection, alert_id: int, author: str, text: str, now: int
    ) -> None:
        conn.execute(
            insert(alert_comments).values(alert_id=alert_id, author=author, text=text, at_ms=now)
        )

    def _log(
        self,
        conn: Connection,
        alert: Alert,
        action: ChangeAction,
        actor: str,
        at_ms: int,
        note: str | None,
        source: str | None,
    ) -> Change:
        advisory_lock(conn, CHANGELOG_LOCK)
        seq = conn.execute(
            insert(alert_changes)
            .values(
                alert_id=alert.id,
                site_id=alert.site_id,
                kind=alert.kind,
                action=action.value,
                actor=actor,
                note=note,
                at_ms=at_ms,
                alert=alert.to_json(),
            )
            .returning(alert_changes.c.seq)
        ).scalar_one()
        notify_change(conn, int(seq))
        # The trail names the change (its seq) rather than repeating its note: the alert's
        # history has the text, and the trail stays small.
        details: dict[str, Any] = {
            "seq": int(seq),
            "kind": alert.kind,
            "status": alert.status.value,
            "severity": alert.severity.value,
        }
        if alert.case_status is not None:
            details["case_status"] = alert.case_status.value
        if action is ChangeAction.ASSIGNED:
            details["assignee"] = note
        conn.execute(
            insert(audit_log).values(
                at_ms=at_ms,
                actor=actor,
                action=f"alert.{action.value}",
                target_kind="alert",
                target_id=str(alert.id),
                site_id=alert.site_id,
                source=source,
                details=details,
            )
        )
        return Change(
            int(seq), alert.id, alert.site_id, alert.kind, action, actor, at_ms, alert, note
        )


def _conditions(flt: AlertFilter) -> list[ColumnElement[bool]] | None:
    """WHERE terms for `flt`, or None if it cannot match anything (an empty set)."""
    out: list[ColumnElement[bool]] = []
    if flt.status is not None:
        if not flt.status:
            return None
        out.append(alerts.c.status.in_(sorted(Status(s).value for s in flt.status)))
    if flt.site_ids is not None:
        if not flt.site_ids:
            return None
        out.append(alerts.c.site_id.in_(sorted(flt.site_ids)))
    if flt.device_id is not None:
        out.append(alerts.c.device_id == flt.device_id)
    if flt.kind is not None:
        out.append(alerts.c.kind == _kind(flt.kind).name)
    if flt.category is not None:
        out.append(alerts.c.category == flt.category.value)
    if flt.severity is not None:
        out.append(alerts.c.severity == Severity(flt.severity).value)
    if flt.since_ms is not None:
        out.append(alerts.c.first_seen_ms >= flt.since_ms)
    if flt.until_ms is not None:
        out.append(alerts.c.first_seen_ms < flt.until_ms)
    return out


def _change(row: Row[Any]) -> Change:
    return Change(
        seq=int(row.seq),
        alert_id=int(row.alert_id),
        site_id=row.site_id,
        kind=row.kind,
        action=ChangeAction(row.action),
        actor=row.actor,
        at_ms=int(row.at_ms),
        alert=Alert.from_mapping(row.alert),
        note=row.note,
    )
