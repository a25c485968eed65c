"""Console sessions against real databases: every test runs on SQLite (a file) and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from alerts.store import make_engine
from devices.sessions import KEEP_ENDED_MS, SESSION_PREFIX, OpenedSession, SessionStore
from devices.tokens import Principal, Refusal, Refused, Role, TokenStore
from tests.support import ManualClock

HOUR_S = 3600


@pytest.fixture
def tokens(store_url: str, clock: ManualClock) -> Iterator[TokenStore]:
    store = TokenStore(store_url, clock=clock)
    store.create_schema()
    yield store
    store.close()


@pytest.fixture
def sessions(store_url: str, clock: ManualClock, tokens: TokenStore) -> Iterator[SessionStore]:
    store = SessionStore(store_url, clock=clock)
    store.create_schema()
    yield store
    store.dispose()


def signed_in(sessions: SessionStore, token: str, ttl_s: int) -> OpenedSession:
    opened = sessions.open(token, ttl_s)
    assert isinstance(opened, OpenedSession), opened
    return opened


def count_rows(store_url: str) -> int:
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM console_sessions")).scalar_one())
    finally:
        engine.dispose()


def test_open_with_a_good_token_and_verify(
    tokens: TokenStore, sessions: SessionStore, clock: ManualClock, store_url: str
) -> None:
    token, _ = tokens.create("wang", Role.SUPERVISOR, frozenset({"k1", "k2"}))
    opened = signed_in(sessions, token, 8 * HOUR_S)
    wang = Principal("wang", Role.SUPERVISOR, frozenset({"k1", "k2"}))
    assert opened.principal == wang
    assert opened.secret.startswith(SESSION_PREFIX)
    assert len(opened.secret) >= len(SESSION_PREFIX) + 43  # 32 random bytes, base64url
    assert len(opened.csrf) >= 43 and opened.csrf != opened.secret
    assert opened.expires_ms == clock.now + 8 * HOUR_S * 1000
    assert sessions.verify(opened.secret) == (wang, opened.csrf, opened.expires_ms)

    # Only the secret's hash is kept.
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            (row,) = conn.execute(text("SELECT * FROM console_sessions")).mappings().all()
    finally:
        engine.dispose()
    assert opened.secret not in " ".join(str(v) for v in row.values())
    assert row["id"] == hashlib.sha256(opened.secret.encode()).hexdigest()
    assert row["created_ms"] == clock.now and row["ended_ms"] is None

    # Each sign-in is a session of its own.
    again = signed_in(sessions, token, HOUR_S)
    assert again.secret != opened.secret and again.csrf != opened.csrf


def test_unknown_revoked_and_camera_tokens_open_nothing(
    tokens: TokenStore, sessions: SessionStore, store_url: str
) -> None:
    revoked, _ = tokens.create("li", Role.ADMIN, None)
    tokens.revoke("li")
    camera = tokens.create_camera("kitchen-0001-cam-1")
    for token, reason in (
        (revoked, Refusal.REVOKED),
        (camera, Refusal.WRONG_KIND),
        ("mlt_" + "x" * 43, Refusal.UNKNOWN),
        ("", Refusal.MALFORMED),
        ("nonsense", Refusal.MALFORMED),
        ("mlt_" + "y" * 5000, Refusal.MALFORMED),
    ):
        assert sessions.open(token, HOUR_S) == Refused(reason), token
    assert count_rows(store_url) == 0
    with pytest.raises(ValueError, match="seconds"):
        sessions.open(revoked, 0)


@pytest.mark.parametrize(
    "candidate", ["", "nonsense", SESSION_PREFIX, SESSION_PREFIX + "x" * 43, "mlt_abc"]
)
def test_unknown_or_malformed_secrets_verify_to_none(
    tokens: TokenStore, sessions: SessionStore, candidate: str
) -> None:
    token, _ = tokens.create("wang", Role.ADMIN, None)
    signed_in(sessions, token, HOUR_S)
    assert sessions.verify(candidate) is None
    assert sessions.close(candidate) is False


def test_a_session_expires(tokens: TokenStore, sessions: SessionStore, clock: ManualClock) -> None:
    token, _ = tokens.create("wang", Role.VIEWER, frozenset({"k1"}))
    opened = signed_in(sessions, token, 60)
    clock.now += 59_999
    assert sessions.verify(opened.secret) is not None
    clock.now += 1
    assert sessions.verify(opened.secret) is None
    assert sessions.close(opened.secret) is False  # already over
    assert tokens.verify(token) is not None  # the token itself lives on


def test_close_ends_one_session(
    tokens: TokenStore, sessions: SessionStore, clock: ManualClock
) -> None:
    token, _ = tokens.create("wang", Role.ADMIN, None)
    ending, staying = signed_in(sessions, token, HOUR_S), signed_in(sessions, token, HOUR_S)
    clock.now += 1000
    assert sessions.close(ending.secret) is True
    assert sessions.verify(ending.secret) is None
    assert sessions.verify(staying.secret) is not None
    assert sessions.close(ending.secret) is False  # twice ends nothing more


def test_revoking_the_token_ends_its_sessions_at_once(
    tokens: TokenStore, sessions: SessionStore, store_url: str, clock: ManualClock
) -> None:
    token, _ = tokens.create("wang", Role.SUPERVISOR, frozenset({"k1"}))
    other, _ = tokens.create("li", Role.VIEWER, frozenset({"k1"}))
    mine, theirs = signed_in(sessions, token, HOUR_S), signed_in(sessions, other, HOUR_S)
    # Revoked through a store of its own, as another API node or the CLI would.
    elsewhere = TokenStore(store_url, clock=clock)
    try:
        assert elsewhere.revoke("wang") is True
    finally:
        elsewhere.close()
    assert sessions.verify(mine.secret) is None
    assert sessions.verify(theirs.secret) is not None
    # A new token with the freed name does not bring the old sessions back.
    renewed, _ = tokens.create("wang", Role.SUPERVISOR, frozenset({"k1"}))
    assert sessions.verify(mine.secret) is None
    signed_in(sessions, renewed, HOUR_S)


def test_prune_removes_sessions_over_for_more_than_a_day(
    tokens: TokenStore, sessions: SessionStore, clock: ManualClock, store_url: str
) -> None:
    token, _ = tokens.create("wang", Role.ADMIN, None)
    _expired, ended, live = (signed_in(sessions, token, ttl) for ttl in (60, HOUR_S, 2 * 86_400))
    start = clock.now
    clock.now += 60_000  # signed out as the short one expires: both over at the same moment
    assert sessions.close(ended.secret)
    # Within the day after they were over, both stay.
    assert sessions.prune(start + 60_000 + KEEP_ENDED_MS) == 0
    assert count_rows(store_url) == 3
    # A day after: both go, the live one stays.
    assert sessions.prune(start + 60_001 + KEEP_ENDED_MS) == 2
    assert count_rows(store_url) == 1
    assert sessions.verify(live.secret) is not None

    # open() prunes too: once the live one has been over for a day, a sign-in removes it.
    clock.now = live.expires_ms + KEEP_ENDED_MS + 1
    signed_in(sessions, token, 60)
    assert count_rows(store_url) == 1


def test_schema_is_created_once_whoever_comes_first(store_url: str, clock: ManualClock) -> None:
    # The session store first (its table refers to the tokens' table), then again, then tokens.
    first = SessionStore(store_url, clock=clock)
    try:
        first.create_schema()
        first.create_schema()
        tokens = TokenStore(store_url, clock=clock)
        try:
            tokens.create_schema()
            token, _ = tokens.create("wang", Role.ADMIN, None)
            signed_in(first, token, HOUR_S)
        finally:
            tokens.close()
    finally:
        first.dispose()


def test_a_session_ends_when_its_token_expires(
    tokens: TokenStore, sessions: SessionStore, clock: ManualClock
) -> None:
    expires = clock.now + 10 * 60_000  # ten minutes: sooner than the session's eight hours
    token, _ = tokens.create("temp", Role.VIEWER, frozenset({"k1"}), expires_ms=expires)
    opened = signed_in(sessions, token, 8 * HOUR_S)
    assert opened.expires_ms == expires  # the browser is told, and drops the cookie then
    clock.now = expires - 1
    assert sessions.verify(opened.secret) is not None
    clock.now = expires
    assert sessions.authenticate(opened.secret) == Refused(Refusal.EXPIRED, expires)
    assert sessions.open(token, HOUR_S) == Refused(Refusal.EXPIRED, expires)


def test_refused_sessions_say_why(
    tokens: TokenStore, sessions: SessionStore, clock: ManualClock
) -> None:
    token, _ = tokens.create("wang", Role.ADMIN, None)
    ended, expired = signed_in(sessions, token, HOUR_S), signed_in(sessions, token, 60)
    assert sessions.close(ended.secret)
    clock.now += 60_000
    assert sessions.authenticate(ended.secret) == Refused(Refusal.SESSION_OVER)
    assert sessions.authenticate(expired.secret) == Refused(Refusal.SESSION_OVER)
    assert sessions.authenticate(SESSION_PREFIX + "x" * 43) == Refused(Refusal.UNKNOWN_SESSION)
    assert sessions.authenticate("nonsense") == Refused(Refusal.MALFORMED)
    live = signed_in(sessions, token, HOUR_S)
    tokens.revoke("wang")
    assert sessions.authenticate(live.secret) == Refused(Refusal.REVOKED)
