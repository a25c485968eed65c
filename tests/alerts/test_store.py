"""The alert store against real databases: every test runs on SQLite (a file) and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from alerts.store import (
    EVIDENCE_LIMIT,
    Alert,
    AlertFilter,
    AlertNotFound,
    AlertStore,
    ChangeAction,
    DatabaseUnavailable,
    TransitionRefused,
)
from analytics.events import Category, Clear, Raise, Severity, Source
from analytics.lifecycle import Action, CaseStatus, InvalidTransition, Status
from simulators.local_services import free_port
from tests.support import ManualClock

T = TypeVar("T")


KITCHEN = Source("kitchen-1", "cam-7")
STREET = Source("street-3", "cam-40")
T0 = 1_700_000_000_000


@pytest.fixture
def backend(store_url: str) -> str:
    return "sqlite" if store_url.startswith("sqlite") else "postgresql"


@pytest.fixture
def store(store_url: str, clock: ManualClock) -> Iterator[AlertStore]:
    alert_store = AlertStore(store_url, clock=clock)
    alert_store.create_schema()
    yield alert_store
    alert_store.close()


def smoking(
    at_ms: int = T0,
    severity: Severity = Severity.MAJOR,
    evidence: tuple[str, ...] = (),
    source: Source = KITCHEN,
    rule: str = "det.smoking",
) -> Raise:
    return Raise(source, "smoking", rule, severity, at_ms, {"at": at_ms}, evidence)


def vending(at_ms: int = T0, source: Source = STREET) -> Raise:
    return Raise(source, "street_vending", "det.vending", Severity.MINOR, at_ms)


def together(n: int, work: Callable[[int], T]) -> list[T | Exception]:
    """Run work(0..n-1) on n threads released at once; each result or the exception raised."""
    barrier = threading.Barrier(n)

    def one(i: int) -> T | Exception:
        barrier.wait()
        try:
            return work(i)
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


# -- raising -----------------------------------------------------------------------------------


def test_create_then_repeat_counts_and_keeps_most_urgent_severity(store: AlertStore) -> None:
    first = store.raise_(smoking(T0, Severity.MINOR, ("img/1.jpg",)))
    assert first.action is ChangeAction.CREATED
    alert = first.alert
    assert (alert.status, alert.case_status, alert.category) == (
        Status.OPEN,
        None,
        Category.KITCHEN,
    )
    assert (alert.count, alert.severity, alert.first_seen_ms, alert.last_seen_ms) == (
        1,
        Severity.MINOR,
        T0,
        T0,
    )
    assert first.actor == "rule:det.smoking"

    second = store.raise_(smoking(T0 + 5000, Severity.CRITICAL, ("img/2.jpg",)))
    assert second.action is ChangeAction.REPEATED
    assert second.alert_id == first.alert_id
    assert second.alert.count == 2
    assert second.alert.severity is Severity.CRITICAL
    assert second.alert.evidence == ("img/1.jpg", "img/2.jpg")
    assert second.alert.details == {"at": T0 + 5000}

    # A milder, older repeat neither lowers the severity nor moves last_seen back.
    third = store.raise_(smoking(T0 + 1000, Severity.WARNING))
    assert (third.alert.count, third.alert.severity) == (3, Severity.CRITICAL)
    assert (third.alert.first_seen_ms, third.alert.last_seen_ms) == (T0, T0 + 5000)
    assert [c.action for c in store.changes_since(0)] == [
        ChangeAction.CREATED,
        ChangeAction.REPEATED,
        ChangeAction.REPEATED,
    ]


def test_evidence_is_appended_without_duplicates_and_bounded(store: AlertStore) -> None:
    store.raise_(smoking(evidence=("a", "b")))
    store.raise_(smoking(evidence=("b", "c")))
    assert store.get(1).evidence == ("a", "b", "c")
    many = tuple(f"img/{i}.jpg" for i in range(EVIDENCE_LIMIT + 5))
    alert = store.raise_(smoking(evidence=many)).alert
    assert alert.evidence == many[-EVIDENCE_LIMIT:]


def test_sources_and_rules_are_separate_alerts(store: AlertStore) -> None:
    ids = {
        store.raise_(smoking()).alert_id,
        store.raise_(smoking(rule="other.rule")).alert_id,
        store.raise_(smoking(source=Source("kitchen-1"))).alert_id,
        store.raise_(smoking(source=Source("kitchen-2", "cam-7"))).alert_id,
    }
    assert len(ids) == 4
    # A site-level source (no device) repeats like any other.
    assert store.raise_(smoking(source=Source("kitchen-1"))).alert.count == 2


def test_unknown_kind_is_a_value_error(store: AlertStore) -> None:
    with pytest.raises(ValueError, match="unknown alert kind 'unicorn'"):
        store.raise_(Raise(KITCHEN, "unicorn", "r", Severity.MINOR, T0))
    with pytest.raises(ValueError, match="unknown alert kind"):
        store.clear(Clear(KITCHEN, "unicorn", "r", T0))
    assert store.last_seq() == 0


# -- clearing ----------------------------------------------------------------------------------


def test_clear_resolves_and_a_later_raise_opens_a_new_alert(
    store: AlertStore, clock: ManualClock
) -> None:
    created = store.raise_(smoking(T0))
    clock.now = T0 + 60_000
    cleared = store.clear(Clear(KITCHEN, "smoking", "det.smoking", T0 + 30_000))
    assert cleared is not None
    assert cleared.action is ChangeAction.CLEARED
    alert = cleared.alert
    assert alert.id == created.alert_id
    assert (alert.status, alert.resolution, alert.resolved_by) == (
        Status.RESOLVED,
        "auto",
        "rule:det.smoking",
    )
    assert (alert.ended_ms, alert.resolved_at_ms) == (T0 + 30_000, T0 + 60_000)

    assert store.clear(Clear(KITCHEN, "smoking", "det.smoking", T0 + 31_000)) is None
    again = store.raise_(smoking(T0 + 90_000))
    assert again.action is ChangeAction.CREATED
    assert again.alert_id != created.alert_id
    assert again.alert.count == 1


def test_clear_resolves_an_acknowledged_alert_too(store: AlertStore) -> None:
    alert_id = store.raise_(smoking()).alert_id
    store.act(alert_id, Action.ACKNOWLEDGE, "wang")
    cleared = store.clear(Clear(KITCHEN, "smoking", "det.smoking", T0 + 1))
    assert cleared is not None
    assert cleared.alert.status is Status.RESOLVED
    assert cleared.alert.acknowledged_by == "wang"


def test_clear_without_an_open_alert_is_none(store: AlertStore) -> None:
    assert store.clear(Clear(KITCHEN, "smoking", "det.smoking", T0)) is None
    store.raise_(smoking())
    # Same source, another rule: not this alert.
    assert store.clear(Clear(KITCHEN, "smoking", "another", T0)) is None
    assert store.last_seq() == 1


def test_street_case_clear_records_the_end_but_stays_open(store: AlertStore) -> None:
    created = store.raise_(vending(T0))
    assert created.alert.case_status is CaseStatus.COLLECTED
    ended = store.clear(Clear(STREET, "street_vending", "det.vending", T0 + 10))
    assert ended is not None
    assert ended.action is ChangeAction.ENDED
    assert (ended.alert.status, ended.alert.case_status, ended.alert.ended_ms) == (
        Status.OPEN,
        CaseStatus.COLLECTED,
        T0 + 10,
    )
    # Already ended: nothing to record.
    assert store.clear(Clear(STREET, "street_vending", "det.vending", T0 + 11)) is None
    # The vendor is back: the same case counts a repeat and is ongoing again.
    back = store.raise_(vending(T0 + 20))
    assert (back.alert_id, back.alert.count, back.alert.ended_ms) == (created.alert_id, 2, None)
    ended_again = store.clear(Clear(STREET, "street_vending", "det.vending", T0 + 30))
    assert ended_again is not None
    assert ended_again.alert.ended_ms == T0 + 30


# -- the life cycle ----------------------------------------------------------------------------


def test_acknowledge_then_resolve(store: AlertStore, clock: ManualClock) -> None:
    alert_id = store.raise_(smoking()).alert_id
    clock.now = T0 + 100
    ack = store.act(alert_id, Action.ACKNOWLEDGE, "wang")
    assert ack.action is ChangeAction.ACKNOWLEDGED
    assert (ack.alert.status, ack.alert.acknowledged_by, ack.alert.acknowledged_at_ms) == (
        Status.ACKNOWLEDGED,
        "wang",
        T0 + 100,
    )
    clock.now = T0 + 200
    done = store.act(alert_id, Action.RESOLVE, "li", note="bin lid fixed")
    assert done.action is ChangeAction.RESOLVED
    assert (done.alert.status, done.alert.resolution, done.alert.resolved_by) == (
        Status.RESOLVED,
        "manual",
        "li",
    )
    assert done.note == "bin lid fixed"
    # The note is kept with the alert as a comment by the actor.
    [note] = store.get(alert_id).comments
    assert (note.author, note.text, note.at_ms) == ("li", "bin lid fixed", T0 + 200)


def test_street_case_full_flow(store: AlertStore) -> None:
    alert_id = store.raise_(vending()).alert_id
    steps = [
        (Action.FILE, Status.ACKNOWLEDGED, CaseStatus.FILED),
        (Action.DISPATCH, Status.ACKNOWLEDGED, CaseStatus.DISPATCHED),
        (Action.HANDLE, Status.ACKNOWLEDGED, CaseStatus.HANDLED),
        (Action.VERIFY, Status.ACKNOWLEDGED, CaseStatus.VERIFIED),
        (Action.CLOSE, Status.RESOLVED, CaseStatus.CLOSED),
    ]
    for action, status, case_status in steps:
        change = store.act(alert_id, action, "zhao")
        assert (change.alert.status, change.alert.case_status) == (status, case_status)
    final = store.get(alert_id)
    assert (final.acknowledged_by, final.resolved_by, final.resolution) == (
        "zhao",
        "zhao",
        "closed",
    )
    assert [c.action.value for c in store.changes_since(0)] == [
        "created",
        "filed",
        "dispatched",
        "handled",
        "verified",
        "closed",
    ]


def test_street_case_can_be_cancelled_before_dispatch(store: AlertStore) -> None:
    alert_id = store.raise_(vending()).alert_id
    store.act(alert_id, Action.FILE, "zhao")
    cancelled = store.act(alert_id, Action.CANCEL, "zhao", note="duplicate report")
    assert (cancelled.alert.status, cancelled.alert.case_status, cancelled.alert.resolution) == (
        Status.RESOLVED,
        CaseStatus.CANCELLED,
        "cancelled",
    )


@pytest.mark.parametrize(
    ("kind", "before", "action", "reason"),
    [
        ("smoking", [Action.ACKNOWLEDGE], Action.ACKNOWLEDGE, "already acknowledged"),
        ("street_vending", [], Action.RESOLVE, "cannot resolve a street case"),
        ("street_vending", [], Action.DISPATCH, "must be filed"),
        ("street_vending", [Action.FILE, Action.DISPATCH], Action.CANCEL, "collected or filed"),
        ("smoking", [], Action.FILE, "not a street case"),
        ("smoking", [Action.RESOLVE], Action.ACKNOWLEDGE, "already resolved"),
        ("smoking", [Action.RESOLVE], Action.RESOLVE, "already resolved"),
        ("street_vending", [Action.CANCEL], Action.FILE, "cannot file a case that is cancelled"),
    ],
)
def test_invalid_transitions_are_refused_with_the_reason(
    store: AlertStore, kind: str, before: list[Action], action: Action, reason: str
) -> None:
    source = STREET if kind == "street_vending" else KITCHEN
    alert_id = store.raise_(Raise(source, kind, "r", Severity.MINOR, T0)).alert_id
    for step in before:
        store.act(alert_id, step, "wang")
    seq = store.last_seq()
    state = store.get(alert_id).state
    with pytest.raises(TransitionRefused, match=reason) as refused:
        store.act(alert_id, action, "li")
    assert reason in refused.value.reason
    assert (refused.value.alert_id, refused.value.action) == (alert_id, action.value)
    assert isinstance(refused.value.__cause__, InvalidTransition)
    # Nothing changed, nothing was logged.
    assert store.get(alert_id).state == state
    assert store.last_seq() == seq


def test_unknown_alert(store: AlertStore) -> None:
    with pytest.raises(AlertNotFound, match="no alert with id 42"):
        store.get(42)
    with pytest.raises(AlertNotFound):
        store.act(42, Action.ACKNOWLEDGE, "wang")
    with pytest.raises(AlertNotFound):
        store.comment(42, "wang", "hello")
    with pytest.raises(AlertNotFound):
        store.assign(42, "wang", "li")


def test_assign_and_comment(store: AlertStore, clock: ManualClock) -> None:
    alert_id = store.raise_(smoking()).alert_id
    clock.now = T0 + 1
    assigned = store.assign(alert_id, "wang", actor="li")
    assert (assigned.action, assigned.actor, assigned.alert.assignee) == (
        ChangeAction.ASSIGNED,
        "li",
        "wang",
    )
    clock.now = T0 + 2
    commented = store.comment(alert_id, "wang", "checking the camera")
    assert (commented.action, commented.note, commented.alert.updated_ms) == (
        ChangeAction.COMMENTED,
        "checking the camera",
        T0 + 2,
    )
    store.comment(alert_id, "li", "thanks")
    alert = store.get(alert_id)
    assert [(c.author, c.text) for c in alert.comments] == [
        ("wang", "checking the camera"),
        ("li", "thanks"),
    ]
    assert store.assign(alert_id, None, actor="li").alert.assignee is None
    store.act(alert_id, Action.RESOLVE, "li")
    with pytest.raises(TransitionRefused, match="already resolved"):
        store.assign(alert_id, "wang", actor="li")
    # Comments stay possible after resolution: findings come later.
    store.comment(alert_id, "li", "root cause: ventilation")
    with pytest.raises(ValueError, match="must not be empty"):
        store.comment(alert_id, "li", "  ")
    with pytest.raises(ValueError, match="actor must not be empty"):
        store.act(alert_id, Action.ACKNOWLEDGE, "")


# -- concurrency -------------------------------------------------------------------------------


def test_fifty_concurrent_raises_make_one_alert(store: AlertStore) -> None:
    results = together(50, lambda i: store.raise_(smoking(T0 + i, evidence=(f"img/{i}",))))
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors
    page = store.list(AlertFilter(), None, 500)
    assert len(page.items) == 1
    alert = page.items[0]
    assert (alert.count, alert.last_seen_ms) == (50, T0 + 49)
    assert len(alert.evidence) == EVIDENCE_LIMIT
    actions = [c.action for c in store.changes_since(0)]
    assert actions.count(ChangeAction.CREATED) == 1
    assert actions.count(ChangeAction.REPEATED) == 49
    # Every change saw a different count: the repeats really were serialised.
    counts = sorted(c.alert.count for c in store.changes_since(0))
    assert counts == list(range(1, 51))


def test_twenty_concurrent_acknowledgements_one_wins(store: AlertStore) -> None:
    alert_id = store.raise_(smoking()).alert_id
    results = together(20, lambda i: store.act(alert_id, Action.ACKNOWLEDGE, f"user{i}"))
    wins = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, TransitionRefused)]
    assert len(wins) == 1, results
    assert len(refused) == 19, results
    assert all("already acknowledged" in r.reason for r in refused)
    winner = wins[0].actor
    assert store.get(alert_id).acknowledged_by == winner
    acks = [c for c in store.changes_since(0) if c.action is ChangeAction.ACKNOWLEDGED]
    assert [c.actor for c in acks] == [winner]


def test_concurrent_writers_keep_the_change_log_in_commit_order(store: AlertStore) -> None:
    sources = [Source(f"site-{i % 5}", f"dev-{i}") for i in range(30)]
    results = together(30, lambda i: store.raise_(smoking(source=sources[i])))
    assert not [r for r in results if isinstance(r, Exception)]
    changes = store.changes_since(0)
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 30
    assert store.last_seq() == seqs[-1]


# -- listing -----------------------------------------------------------------------------------


def _populate(store: AlertStore) -> dict[str, int]:
    ids = {}
    ids["kitchen smoking"] = store.raise_(smoking(T0 + 1000)).alert_id
    ids["kitchen rodent"] = store.raise_(
        Raise(Source("kitchen-1", "cam-8"), "rodent", "det.rodent", Severity.CRITICAL, T0 + 2000)
    ).alert_id
    ids["other kitchen"] = store.raise_(
        Raise(Source("kitchen-2", "cam-1"), "no_hat", "det.hat", Severity.WARNING, T0 + 3000)
    ).alert_id
    ids["street"] = store.raise_(vending(T0 + 4000)).alert_id
    ids["fridge"] = store.raise_(
        Raise(
            Source("kitchen-2", "fridge-1"),
            "cold_chain_temperature",
            "cold",
            Severity.MAJOR,
            T0 + 5000,
        )
    ).alert_id
    store.act(ids["kitchen rodent"], Action.ACKNOWLEDGE, "wang")
    store.act(ids["other kitchen"], Action.RESOLVE, "wang")
    return ids


def _listed(store: AlertStore, flt: AlertFilter) -> list[int]:
    return [a.id for a in store.list(flt, None, 500).items]


def test_filters(store: AlertStore) -> None:
    ids = _populate(store)
    everything = _listed(store, AlertFilter())
    assert everything == [
        ids["fridge"],
        ids["street"],
        ids["other kitchen"],
        ids["kitchen rodent"],
        ids["kitchen smoking"],
    ]
    assert _listed(store, AlertFilter(status=frozenset({Status.OPEN}))) == [
        ids["fridge"],
        ids["street"],
        ids["kitchen smoking"],
    ]
    assert _listed(store, AlertFilter(status=frozenset({Status.ACKNOWLEDGED}))) == [
        ids["kitchen rodent"]
    ]
    assert _listed(store, AlertFilter(status=frozenset())) == []
    assert _listed(store, AlertFilter(device_id="cam-7")) == [ids["kitchen smoking"]]
    assert _listed(store, AlertFilter(kind="rodent")) == [ids["kitchen rodent"]]
    assert _listed(store, AlertFilter(category=Category.STREET)) == [ids["street"]]
    assert _listed(store, AlertFilter(category=Category.SENSOR)) == [ids["fridge"]]
    assert _listed(store, AlertFilter(severity=Severity.WARNING)) == [ids["other kitchen"]]
    # since is inclusive, until exclusive, both on first_seen_ms.
    assert _listed(store, AlertFilter(since_ms=T0 + 2000, until_ms=T0 + 4000)) == [
        ids["other kitchen"],
        ids["kitchen rodent"],
    ]
    assert _listed(
        store,
        AlertFilter(site_ids=frozenset({"kitchen-2"}), status=frozenset({Status.OPEN})),
    ) == [ids["fridge"]]
    with pytest.raises(ValueError, match="unknown alert kind"):
        store.list(AlertFilter(kind="unicorn"))


def test_site_scoping(store: AlertStore) -> None:
    ids = _populate(store)
    assert _listed(store, AlertFilter(site_ids=frozenset({"kitchen-1", "street-3"}))) == [
        ids["street"],
        ids["kitchen rodent"],
        ids["kitchen smoking"],
    ]
    # An empty scope sees nothing (a principal with no sites), not everything.
    assert _listed(store, AlertFilter(site_ids=frozenset())) == []
    assert _listed(store, AlertFilter(site_ids=frozenset({"elsewhere"}))) == []


def test_cursor_pagination_newest_first_without_duplicates_or_gaps(store: AlertStore) -> None:
    expected: list[Alert] = []
    for i in range(23):
        # Groups of equal first_seen: the id must break the ties the same way on every page.
        source = Source(f"site-{i % 3}", f"cam-{i}")
        expected.append(store.raise_(smoking(T0 + (i // 4) * 1000, source=source)).alert)
    expected.sort(key=lambda a: (a.first_seen_ms, a.id), reverse=True)

    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = store.list(AlertFilter(), cursor, 5)
        pages += 1
        seen.extend(a.id for a in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
        # A raise between pages (newer than everything) does not disturb the walk.
        if pages == 2:
            store.raise_(smoking(T0 + 99_000, source=Source("late", "cam")))
    assert seen == [a.id for a in expected]
    assert pages == 5

    # Pages of a filtered list.
    flt = AlertFilter(site_ids=frozenset({"site-1"}))
    first = store.list(flt, None, 3)
    second = store.list(flt, first.next_cursor, 3)
    site1 = [a.id for a in expected if a.site_id == "site-1"]
    assert [a.id for a in first.items + second.items] == site1[:6]
    # Exactly a full last page: no cursor to an empty page.
    assert store.list(AlertFilter(), None, 500).next_cursor is None


@pytest.mark.parametrize("cursor", ["", "not-a-cursor", "!!!", "MTIz", "YTpi", "MTIzOjA", "MTI"])
def test_bad_cursor_is_a_value_error(store: AlertStore, cursor: str) -> None:
    store.raise_(smoking())
    with pytest.raises(ValueError, match="bad cursor"):
        store.list(AlertFilter(), cursor, 10)


def test_limit_bounds(store: AlertStore) -> None:
    for limit in (0, 501):
        with pytest.raises(ValueError, match="between 1 and 500"):
            store.list(AlertFilter(), None, limit)


# -- the change log ----------------------------------------------------------------------------


def test_changes_since_in_order_with_snapshots_and_site_filter(
    store: AlertStore, clock: ManualClock
) -> None:
    assert store.last_seq() == 0
    assert store.changes_since(0) == []
    kitchen = store.raise_(smoking()).alert_id
    clock.now = T0 + 1
    street = store.raise_(vending()).alert_id
    clock.now = T0 + 2
    store.raise_(smoking())
    store.act(kitchen, Action.ACKNOWLEDGE, "wang")
    store.act(street, Action.FILE, "zhao")

    changes = store.changes_since(0)
    assert [(c.alert_id, c.action.value) for c in changes] == [
        (kitchen, "created"),
        (street, "created"),
        (kitchen, "repeated"),
        (kitchen, "acknowledged"),
        (street, "filed"),
    ]
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    assert store.last_seq() == changes[-1].seq
    # Each entry carries the alert as that change left it.
    assert [c.alert.count for c in changes if c.alert_id == kitchen] == [1, 2, 2]
    assert changes[3].alert.status is Status.ACKNOWLEDGED
    assert (changes[1].at_ms, changes[1].site_id, changes[1].kind) == (
        T0 + 1,
        "street-3",
        "street_vending",
    )

    # Resuming after an event id returns only what came later.
    assert [c.seq for c in store.changes_since(changes[2].seq)] == [c.seq for c in changes[3:]]
    street_only = store.changes_since(0, frozenset({"street-3"}))
    assert [c.action.value for c in street_only] == ["created", "filed"]
    assert store.changes_since(0, frozenset()) == []
    assert [c.seq for c in store.changes_since(0, limit=2)] == [c.seq for c in changes[:2]]


# -- overdue -----------------------------------------------------------------------------------


def test_overdue_reminds_then_escalates_idempotently(store: AlertStore) -> None:
    remind = {Severity.MAJOR: 60_000}
    escalate = {Severity.MAJOR: 300_000}
    late = store.raise_(smoking(T0)).alert_id
    store.raise_(smoking(T0, source=Source("kitchen-9", "cam-1")))  # acknowledged below
    store.act(2, Action.ACKNOWLEDGE, "wang")
    store.raise_(  # warning: no limits configured
        Raise(Source("kitchen-1", "cam-2"), "no_hat", "det.hat", Severity.WARNING, T0)
    )

    assert store.overdue(T0 + 59_999, remind, escalate) == []
    first = store.overdue(T0 + 60_000, remind, escalate)
    assert [(c.alert_id, c.action.value, c.actor) for c in first] == [(late, "reminded", "system")]
    assert first[0].alert.last_reminded_ms == T0 + 60_000
    assert store.overdue(T0 + 60_000, remind, escalate) == []  # same time: nothing new
    assert store.overdue(T0 + 119_999, remind, escalate) == []
    assert [c.action.value for c in store.overdue(T0 + 120_000, remind, escalate)] == ["reminded"]

    at_escalation = store.overdue(T0 + 300_000, remind, escalate)
    assert [c.action.value for c in at_escalation] == ["reminded", "escalated"]
    assert at_escalation[-1].alert.escalation_level == 1
    assert store.overdue(T0 + 300_000, remind, escalate) == []
    assert [c.action.value for c in store.overdue(T0 + 330_000, remind, escalate)] == []
    second_level = store.overdue(T0 + 600_000, remind, escalate)
    assert [c.action.value for c in second_level] == ["reminded", "escalated"]
    assert store.get(late).escalation_level == 2

    # Once acknowledged, nobody is reminded any more.
    store.act(late, Action.ACKNOWLEDGE, "li")
    assert store.overdue(T0 + 3_600_000, remind, escalate) == []
    logged = [c.action.value for c in store.changes_since(0) if c.actor == "system"]
    assert logged == ["reminded", "reminded", "reminded", "escalated", "reminded", "escalated"]


def test_overdue_validates_intervals(store: AlertStore) -> None:
    assert store.overdue(T0, {}, {}) == []
    with pytest.raises(ValueError, match="positive"):
        store.overdue(T0, {Severity.MAJOR: 0}, {})


# -- dashboards and rule state -----------------------------------------------------------------


def test_open_counts(store: AlertStore) -> None:
    _populate(store)
    store.raise_(smoking(source=Source("kitchen-1", "cam-99")))
    assert store.open_counts() == [
        ("kitchen-1", "rodent", "critical", 1),
        ("kitchen-1", "smoking", "major", 2),
        ("kitchen-2", "cold_chain_temperature", "major", 1),
        ("street-3", "street_vending", "minor", 1),
    ]


def test_rule_states_save_load_delete(store: AlertStore) -> None:
    assert store.load_rule_states() == {}
    store.save_rule_states({"fridge-1/held": {"since_ms": T0, "values": [1.5, 2]}, "b": [1]})
    store.save_rule_states({"b": {"n": 2}, "c": "text"})
    assert store.load_rule_states() == {
        "fridge-1/held": {"since_ms": T0, "values": [1.5, 2]},
        "b": {"n": 2},
        "c": "text",
    }
    store.save_rule_states({"fridge-1/held": None, "missing": None})
    assert store.load_rule_states() == {"b": {"n": 2}, "c": "text"}


# -- the database ------------------------------------------------------------------------------


def test_schema_is_idempotent_and_shared(store_url: str, store: AlertStore) -> None:
    alert_id = store.raise_(smoking()).alert_id
    again = AlertStore(store_url)
    try:
        again.create_schema()
        assert again.get(alert_id).count == 1
    finally:
        again.close()


def test_one_open_alert_is_enforced_by_the_database(store: AlertStore) -> None:
    store.raise_(smoking())
    columns = (
        "site_id, device_id, kind, category, rule, severity, status, first_seen_ms, "
        "last_seen_ms, count, evidence, details, escalation_level, updated_ms"
    )
    values = "'kitchen-1', 'cam-7', 'smoking', 'kitchen', 'det.smoking', 'major', 'open', 1, 1, 1"
    with store.engine.connect() as conn:
        with pytest.raises(IntegrityError, match=r"(?i)unique"):
            conn.execute(
                text(f"INSERT INTO alerts ({columns}) VALUES ({values}, '[]', '{{}}', 0, 1)")
            )
        conn.rollback()


def test_sqlite_settings(backend: str, store: AlertStore) -> None:
    with store.engine.connect() as conn:
        if backend == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
        else:
            assert conn.exec_driver_sql("SHOW server_version").scalar()


def test_unreachable_database_is_database_unavailable(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'alerts.db'}"
    else:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    unreachable = AlertStore(url)
    try:
        with pytest.raises(DatabaseUnavailable, match="did not answer"):
            unreachable.get(1)
    finally:
        unreachable.close()


def test_bad_urls_are_refused(backend: str) -> None:
    with pytest.raises(ValueError, match="in-memory"):
        AlertStore("sqlite://")
    with pytest.raises(ValueError, match="unsupported database"):
        AlertStore("mysql://localhost/x")
    with pytest.raises(ValueError, match="not a database URL"):
        AlertStore("::nonsense::")


def test_devices_with_unresolved_alerts_of_some_kinds(store: AlertStore) -> None:
    def offline(site: str, device: str) -> Raise:
        return Raise(Source(site, device), "device_offline", "fridge.silent", Severity.MAJOR, T0)

    store.raise_(offline("kitchen-0001", "kitchen-0001-fridge-1"))
    store.raise_(offline("kitchen-0002", "kitchen-0002-fridge-1"))
    gone = store.raise_(offline("kitchen-0003", "kitchen-0003-fridge-1"))
    store.act(gone.alert.id, Action.RESOLVE, "wang.li")
    kinds = ("device_offline", "camera_offline")
    assert store.devices_with_unresolved(kinds) == {
        "kitchen-0001-fridge-1", "kitchen-0002-fridge-1"
    }  # fmt: skip
    assert store.devices_with_unresolved(kinds, frozenset({"kitchen-0002"})) == {
        "kitchen-0002-fridge-1"
    }
    assert store.devices_with_unresolved(("rodent",)) == set()
