"""The audit trail against real databases: every test runs on SQLite (a file) and PostgreSQL."""

from __future__ import annotations

import getpass
import socket
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from alerts.store import AlertStore, TransitionRefused, make_engine
from alerts.store.db import transaction
from analytics.events import Clear, Raise, Severity, Source
from analytics.lifecycle import Action
from devices.audit import AuditEntry, AuditFilter, AuditLog, cli_actor, encode_cursor
from devices.sessions import OpenedSession, SessionStore
from devices.tokens import Role, TokenStore
from tests.support import ManualClock

KITCHEN = Source("kitchen-0001", "kitchen-0001-cam-1")


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[AlertStore]:
    alert_store = AlertStore(store_url, clock=clock)
    alert_store.create_schema()  # makes the audit table too
    yield alert_store
    alert_store.close()


@pytest.fixture
def audit(store: AlertStore, clock: ManualClock) -> AuditLog:
    return AuditLog(store.engine, clock=clock)


def entries(audit: AuditLog, **flt: str | int) -> list[AuditEntry]:
    return audit.list(AuditFilter(**flt), limit=500).items


def test_record_and_read_newest_first_with_filters_and_pages(
    audit: AuditLog, clock: ManualClock
) -> None:
    start = clock.now
    made = []
    for n in range(7):
        made.append(
            audit.record(
                actor="ops" if n % 2 else "cli:root@host",
                action="credential.created" if n < 5 else "credential.revoked",
                target_kind="credential",
                target_id=f"kitchen-0001-fridge-{n % 3}",
                site_id="kitchen-0001" if n < 6 else None,
                source="10.0.0.9",
                details={"method": "password", "n": n},
            )
        )
        clock.now += 1000
    newest = entries(audit)
    assert [e.id for e in newest] == made[::-1]
    first = newest[-1]
    assert first == AuditEntry(
        made[0],
        start,
        "cli:root@host",
        "credential.created",
        "credential",
        "kitchen-0001-fridge-0",
        "kitchen-0001",
        "10.0.0.9",
        {"method": "password", "n": 0},
    )
    assert [e.details["n"] for e in entries(audit, actor="ops")] == [5, 3, 1]
    assert [e.details["n"] for e in entries(audit, action="credential.revoked")] == [6, 5]
    fridge_1 = entries(audit, target_kind="credential", target_id="kitchen-0001-fridge-1")
    assert [e.details["n"] for e in fridge_1] == [4, 1]
    assert len(entries(audit, site_id="kitchen-0001")) == 6
    window = entries(audit, since_ms=start + 2000, until_ms=start + 4000)
    assert [e.details["n"] for e in window] == [3, 2]
    assert entries(audit, target_kind="alert") == []

    # Pages of three: every entry once, in order, then no cursor.
    seen, cursor = [], None
    while True:
        page = audit.list(AuditFilter(), cursor, 3)
        seen += [e.id for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == made[::-1]
    too_big = encode_cursor(2**63)
    for bad in ("nonsense", "YXVkaXQ6MA", "YWxlcnQ6NQ", too_big):  # garbage, audit:0, alert:5
        with pytest.raises(ValueError, match="bad cursor"):
            audit.list(AuditFilter(), bad)
    with pytest.raises(ValueError, match="limit"):
        audit.list(AuditFilter(), None, 501)


def test_an_entry_written_in_a_transaction_goes_with_it(store: AlertStore, audit: AuditLog) -> None:
    """With `conn`, the entry is part of the caller's transaction: rolled back with it."""

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), transaction(store.engine, write=True) as conn:
        audit.record(
            actor="ops",
            action="credential.rotated",
            target_kind="credential",
            target_id="kitchen-0001-fridge-1",
            conn=conn,
        )
        raise Abandoned
    assert entries(audit) == []
    with transaction(store.engine, write=True) as conn:
        audit.record(
            actor="ops",
            action="credential.rotated",
            target_kind="credential",
            target_id="kitchen-0001-fridge-1",
            conn=conn,
        )
    assert [e.action for e in entries(audit)] == ["credential.rotated"]


@pytest.mark.parametrize(
    "details",
    [
        {"password": "hunter2"},
        {"token": "x"},
        {"mqtt_password": "x"},
        {"token_hash": "ab12"},
        {"note": "mlt_" + "x" * 43},
        {"blob": "x" * 5000},
    ],
)
def test_details_never_hold_secrets_and_stay_small(
    audit: AuditLog, details: dict[str, str]
) -> None:
    with pytest.raises(ValueError):
        audit.record(actor="a", action="b.c", target_kind="b", target_id="d", details=details)
    assert entries(audit) == []


def test_names_must_say_something(audit: AuditLog) -> None:
    with pytest.raises(ValueError, match="actor"):
        audit.record(actor=" ", action="b.c", target_kind="b", target_id="d")
    with pytest.raises(ValueError, match="target id"):
        audit.record(actor="a", action="b.c", target_kind="b", target_id="x" * 501)


def test_cli_actor_names_the_user_and_the_host() -> None:
    assert cli_actor() == f"cli:{getpass.getuser()}@{socket.gethostname()}"


def test_every_alert_change_is_in_the_trail(
    store: AlertStore, audit: AuditLog, clock: ManualClock
) -> None:
    raised = store.raise_(Raise(KITCHEN, "no_hat", "event.no_hat", Severity.WARNING, clock.now))
    alert_id = raised.alert.id
    store.raise_(Raise(KITCHEN, "no_hat", "event.no_hat", Severity.WARNING, clock.now))
    clock.now += 1000
    store.act(alert_id, Action.ACKNOWLEDGE, "wang", "on it", source="10.1.2.3")
    store.assign(alert_id, "li", "wang", source="10.1.2.3")
    store.comment(alert_id, "li", "hat found", source="10.1.2.4")
    with pytest.raises(TransitionRefused):  # refused: no change, no entry
        store.act(alert_id, Action.ACKNOWLEDGE, "wang", source="10.1.2.3")
    clock.now += 1000
    store.clear(Clear(KITCHEN, "no_hat", "event.no_hat", clock.now))
    trail = entries(audit, target_kind="alert", target_id=str(alert_id))
    assert [(e.action, e.actor, e.source) for e in reversed(trail)] == [
        ("alert.created", "rule:event.no_hat", "rules"),
        ("alert.repeated", "rule:event.no_hat", "rules"),
        ("alert.acknowledged", "wang", "10.1.2.3"),
        ("alert.assigned", "wang", "10.1.2.3"),
        ("alert.commented", "li", "10.1.2.4"),
        ("alert.cleared", "rule:event.no_hat", "rules"),
    ]
    history = store.history(alert_id)
    assert [e.details["seq"] for e in reversed(trail)] == [c.seq for c in history]
    assert [e.at_ms for e in reversed(trail)] == [c.at_ms for c in history]
    assert {e.site_id for e in trail} == {"kitchen-0001"}
    assert trail[0].details == {
        "seq": history[-1].seq,
        "kind": "no_hat",
        "status": "resolved",
        "severity": "warning",
    }
    assigned = next(e for e in trail if e.action == "alert.assigned")
    assert assigned.details["assignee"] == "li"
    # The comment's text stays in the alert's history; the trail names the change only.
    assert all("hat found" not in str(e.details) for e in trail)


def test_reminders_and_escalations_are_in_the_trail(
    store: AlertStore, audit: AuditLog, clock: ManualClock
) -> None:
    raised = store.raise_(Raise(KITCHEN, "gas_leak", "gas.high", Severity.CRITICAL, clock.now))
    store.overdue(clock.now + 60_000, {Severity.CRITICAL: 60_000}, {Severity.CRITICAL: 60_000})
    trail = entries(audit, target_kind="alert", target_id=str(raised.alert.id))
    assert [(e.action, e.actor, e.source) for e in reversed(trail)] == [
        ("alert.created", "rule:gas.high", "rules"),
        ("alert.reminded", "system", "rules"),
        ("alert.escalated", "system", "rules"),
    ]


def test_an_alert_change_and_its_entry_are_one_transaction(
    store: AlertStore, audit: AuditLog, store_url: str
) -> None:
    """When the entry cannot be written, the change is not made either."""
    raised = store.raise_(Raise(KITCHEN, "no_hat", "event.no_hat", Severity.WARNING, 1))
    before = store.history(raised.alert.id)
    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:  # the database refuses the entry: its table is away
            conn.execute(text("ALTER TABLE audit_log RENAME TO audit_log_away"))
        with pytest.raises(Exception, match="audit_log"):
            store.act(raised.alert.id, Action.ACKNOWLEDGE, "wang", source="10.1.2.3")
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_log_away RENAME TO audit_log"))
    finally:
        engine.dispose()
    assert store.get(raised.alert.id).status.value == "open"
    assert store.history(raised.alert.id) == before
    assert [e.action for e in entries(audit)] == ["alert.created"]


def test_token_and_session_changes_are_in_the_trail(
    store: AlertStore, audit: AuditLog, clock: ManualClock
) -> None:
    tokens = TokenStore(store.engine, clock=clock)
    tokens.create_schema()
    sessions = SessionStore(store.engine, clock=clock)
    sessions.create_schema()
    secret, info = tokens.create(
        "wang", Role.SUPERVISOR, frozenset({"kitchen-0001"}), expires_ms=clock.now + 86_400_000
    )
    opened = sessions.open(secret, 3600, source="10.0.0.5")
    assert isinstance(opened, OpenedSession)
    assert sessions.close(opened.secret, source="10.0.0.5")
    assert tokens.revoke("wang", actor="ops", source="10.0.0.6")
    camera = tokens.create_camera("kitchen-0001-cam-1", site_id="kitchen-0001")
    assert tokens.revoke_camera("kitchen-0001-cam-1", site_id="kitchen-0001") == 1

    me = cli_actor()  # no actor given: the command line that runs this
    trail = [(e.action, e.target_kind, e.target_id, e.actor, e.source) for e in entries(audit)]
    assert trail[::-1] == [
        ("token.created", "token", "wang", me, me),
        ("session.opened", "session", "wang", "wang", "10.0.0.5"),
        ("session.closed", "session", "wang", "wang", "10.0.0.5"),
        ("token.revoked", "token", "wang", "ops", "10.0.0.6"),
        ("camera_token.created", "camera_token", "kitchen-0001-cam-1", me, me),
        ("camera_token.revoked", "camera_token", "kitchen-0001-cam-1", me, me),
    ]
    created = entries(audit, action="token.created")[0]
    assert created.details == {
        "token_id": info.id,
        "role": "supervisor",
        "sites": ["kitchen-0001"],
        "expires_ms": clock.now + 86_400_000,
    }
    # Never a secret nor its hash, anywhere in the trail.
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_log")).all()
        hashes = conn.execute(
            text(
                "SELECT token_hash FROM api_tokens UNION ALL "
                "SELECT token_hash FROM camera_tokens UNION ALL SELECT id FROM console_sessions"
            )
        ).scalars()
        hidden = [secret, camera, opened.secret, opened.csrf, *hashes]
    stored = " ".join(str(value) for row in rows for value in row)
    assert len(hidden) == 7  # two tokens, a session and its CSRF value, and their 3 hashes
    for value in hidden:
        assert value not in stored


def test_the_table_is_made_by_whichever_store_comes_first(
    store_url: str, clock: ManualClock
) -> None:
    for first in (TokenStore, SessionStore, AuditLog):
        engine = make_engine(store_url)
        try:
            with engine.begin() as conn:
                conn.execute(text("DROP TABLE IF EXISTS audit_log"))
            maker = first(engine, clock=clock)
            maker.create_schema()
            maker.create_schema()
            log = AuditLog(engine, clock=clock)
            log.record(actor="a", action="b.c", target_kind="b", target_id=first.__name__)
            assert [e.target_id for e in log.list().items] == [first.__name__]
        finally:
            engine.dispose()
