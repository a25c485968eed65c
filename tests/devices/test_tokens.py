"""API tokens against real databases: every test runs on SQLite (a file) and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import fields

import pytest
from sqlalchemy import JSON, BigInteger, Column, Integer, MetaData, Table, Text, inspect, text

from alerts.store import AlertStore, make_engine
from devices.tokens import (
    CAMERA_PREFIX,
    PREFIX,
    Principal,
    Refusal,
    Refused,
    Role,
    TokenInfo,
    TokenStore,
    parse_sites,
)
from tests.support import ManualClock


@pytest.fixture
def tokens(store_url: str, clock: ManualClock) -> Iterator[TokenStore]:
    store = TokenStore(store_url, clock=clock)
    store.create_schema()
    yield store
    store.close()


def test_create_and_verify(tokens: TokenStore, clock: ManualClock) -> None:
    token, info = tokens.create("wang", Role.SUPERVISOR, frozenset({"k1", "k2"}))
    assert token.startswith(PREFIX)
    assert len(token) >= len(PREFIX) + 43  # 32 random bytes, base64url
    assert (info.name, info.role, info.sites, info.created_ms, info.active) == (
        "wang",
        Role.SUPERVISOR,
        frozenset({"k1", "k2"}),
        clock.now,
        True,
    )
    assert tokens.verify(token) == Principal("wang", Role.SUPERVISOR, frozenset({"k1", "k2"}))
    other, _ = tokens.create("li", Role.VIEWER, frozenset({"k1"}))
    assert other != token
    assert tokens.verify(other) == Principal("li", Role.VIEWER, frozenset({"k1"}))


@pytest.mark.parametrize(
    "candidate",
    ["", "nonsense", PREFIX, PREFIX + "x" * 43, "Bearer " + PREFIX + "x", PREFIX + "y" * 5000],
)
def test_unknown_or_malformed_tokens_are_none(tokens: TokenStore, candidate: str) -> None:
    tokens.create("wang", Role.ADMIN, None)
    assert tokens.verify(candidate) is None


def test_only_the_hash_is_stored(tokens: TokenStore, store_url: str) -> None:
    token, info = tokens.create("wang", Role.ADMIN, None)
    engine = make_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM api_tokens")).mappings().all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0].values())
    assert token not in stored
    assert token[len(PREFIX) :] not in stored
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    # The listing shows neither the token nor the hash.
    assert {f.name for f in fields(TokenInfo)} == {
        "id",
        "name",
        "role",
        "sites",
        "created_ms",
        "revoked_ms",
        "expires_ms",
    }
    assert tokens.list() == [info]


def test_revoke_by_name_and_by_id(tokens: TokenStore, clock: ManualClock) -> None:
    by_name, _ = tokens.create("wang", Role.SUPERVISOR, frozenset({"k1"}))
    by_id, info = tokens.create("li", Role.VIEWER, frozenset({"k1"}))
    kept, _ = tokens.create("zhao", Role.ADMIN, None)
    clock.now += 1000
    assert tokens.revoke("wang") is True
    assert tokens.revoke(info.id) is True
    assert tokens.verify(by_name) is None
    assert tokens.verify(by_id) is None
    assert tokens.verify(kept) is not None
    # Revoking twice, or something unknown, revokes nothing.
    assert tokens.revoke("wang") is False
    assert tokens.revoke(info.id) is False
    assert tokens.revoke("nobody") is False
    assert tokens.revoke(12345) is False
    listed = {t.name: t for t in tokens.list()}
    assert listed["wang"].revoked_ms == clock.now
    assert not listed["li"].active
    assert listed["zhao"].active


def test_names_are_unique_among_active_tokens(tokens: TokenStore) -> None:
    old, _ = tokens.create("grafana", Role.VIEWER, None)
    with pytest.raises(ValueError, match="active token named 'grafana' exists"):
        tokens.create("grafana", Role.VIEWER, None)
    tokens.revoke("grafana")
    new, _ = tokens.create("grafana", Role.VIEWER, None)  # rotation frees the name
    assert tokens.verify(old) is None
    assert tokens.verify(new) is not None
    assert [t.active for t in tokens.list()] == [False, True]


def test_create_validates(tokens: TokenStore) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        tokens.create(" ", Role.VIEWER, None)
    with pytest.raises(ValueError, match="at least one site"):
        tokens.create("x", Role.VIEWER, frozenset())
    with pytest.raises(ValueError, match="admin token covers all sites"):
        tokens.create("x", Role.ADMIN, frozenset({"k1"}))
    with pytest.raises(ValueError):
        tokens.create("x", "superuser", None)
    # "*" among the sites means all sites; a role may be given by name.
    _, info = tokens.create("x", "supervisor", frozenset({"*"}))
    assert (info.role, info.sites) == (Role.SUPERVISOR, None)


def test_shares_the_alert_store_engine(store_url: str) -> None:
    store = AlertStore(store_url)
    try:
        store.create_schema()
        shared = TokenStore(store.engine)
        shared.create_schema()
        token, _ = shared.create("wang", Role.ADMIN, None)
        shared.close()  # does not dispose an engine it was given
        assert shared.verify(token) == Principal("wang", Role.ADMIN, None)
    finally:
        store.close()


def test_roles_and_scoping() -> None:
    viewer = Principal("v", Role.VIEWER, frozenset({"k1"}))
    assert viewer.can_see("k1")
    assert not viewer.can_see("k2")
    assert not viewer.can_act("k1")
    assert viewer.site_scope == frozenset({"k1"})

    supervisor = Principal("s", Role.SUPERVISOR, frozenset({"k1", "k2"}))
    assert supervisor.can_act("k1")
    assert supervisor.can_act("k2")
    assert not supervisor.can_act("k3")
    assert not supervisor.can_see("k3")

    everywhere = Principal("s", Role.SUPERVISOR, None)
    assert everywhere.can_act("any-site")
    assert everywhere.site_scope is None

    admin = Principal("a", Role.ADMIN, None)
    assert admin.can_see("k9")
    assert admin.can_act("k9")
    assert admin.is_admin
    assert not supervisor.is_admin


def test_parse_sites() -> None:
    assert parse_sites("*") is None
    assert parse_sites(" k1, k2 ,") == frozenset({"k1", "k2"})
    with pytest.raises(ValueError, match="at least one site"):
        parse_sites(" , ")


def test_camera_tokens_publish_for_one_camera(tokens: TokenStore) -> None:
    first = tokens.create_camera("kitchen-0001-cam-1")
    second = tokens.create_camera("kitchen-0001-cam-1")  # installed before the first is revoked
    assert first.startswith(CAMERA_PREFIX) and first != second
    assert tokens.verify_camera(first) == "kitchen-0001-cam-1"
    assert tokens.verify_camera(second) == "kitchen-0001-cam-1"
    # A camera token is not an API token, and an API token is not a camera token.
    assert tokens.verify(first) is None
    api, _ = tokens.create("ops", Role.ADMIN, None)
    assert tokens.verify_camera(api) is None
    assert tokens.verify_camera(CAMERA_PREFIX + "guess") is None
    assert tokens.revoke_camera("kitchen-0001-cam-1") == 2
    assert tokens.verify_camera(first) is None and tokens.verify_camera(second) is None
    assert tokens.revoke_camera("kitchen-0001-cam-1") == 0
    with pytest.raises(ValueError):
        tokens.create_camera(" ")


def test_a_token_with_an_expiry_works_until_then(tokens: TokenStore, clock: ManualClock) -> None:
    expires = clock.now + 3_600_000
    token, info = tokens.create("temp", Role.VIEWER, frozenset({"k1"}), expires_ms=expires)
    forever, _ = tokens.create("ops", Role.ADMIN, None)
    assert info.expires_ms == expires and not info.expired(clock.now)
    assert tokens.verify(token) == Principal("temp", Role.VIEWER, frozenset({"k1"}))
    clock.now = expires - 1
    assert tokens.authenticate(token) == Principal("temp", Role.VIEWER, frozenset({"k1"}))
    clock.now = expires
    assert tokens.authenticate(token) == Refused(Refusal.EXPIRED, expires)
    assert tokens.verify(token) is None
    assert tokens.verify(forever) is not None  # no expiry: never
    listed = {t.name: t for t in tokens.list()}
    assert listed["temp"].expired(clock.now) and listed["temp"].active  # expired, not revoked
    assert listed["ops"].expires_ms is None and not listed["ops"].expired(clock.now)
    with pytest.raises(ValueError, match="expire before it is made"):
        tokens.create("late", Role.VIEWER, None, expires_ms=clock.now)


def test_refusals_say_why(tokens: TokenStore) -> None:
    revoked, _ = tokens.create("gone", Role.VIEWER, None)
    tokens.revoke("gone")
    camera = tokens.create_camera("kitchen-0001-cam-1")
    api, _ = tokens.create("ops", Role.ADMIN, None)
    for token, reason in (
        (PREFIX + "x" * 43, Refusal.UNKNOWN),
        (revoked, Refusal.REVOKED),
        ("nonsense", Refusal.MALFORMED),
        (PREFIX + "y" * 5000, Refusal.MALFORMED),
        (camera, Refusal.WRONG_KIND),
    ):
        assert tokens.authenticate(token) == Refused(reason), token
    assert tokens.authenticate_camera(api) == Refused(Refusal.WRONG_KIND)
    assert tokens.authenticate_camera(CAMERA_PREFIX + "guess") == Refused(Refusal.UNKNOWN)
    tokens.revoke_camera("kitchen-0001-cam-1")
    assert tokens.authenticate_camera(camera) == Refused(Refusal.REVOKED)


def test_camera_tokens_may_expire(tokens: TokenStore, clock: ManualClock) -> None:
    expires = clock.now + 60_000
    token = tokens.create_camera("kitchen-0001-cam-1", expires_ms=expires)
    assert tokens.verify_camera(token) == "kitchen-0001-cam-1"
    clock.now = expires
    assert tokens.authenticate_camera(token) == Refused(Refusal.EXPIRED, expires)
    with pytest.raises(ValueError, match="expire before it is made"):
        tokens.create_camera("kitchen-0001-cam-1", expires_ms=clock.now - 1)


def test_a_database_made_before_expiry_gets_the_column(store_url: str, clock: ManualClock) -> None:
    """The tables as the first release made them, with a token in each; create_schema adds
    `expires_ms` (NULL: the old tokens never expire), and does so only once."""
    old = MetaData()
    Table(
        "api_tokens",
        old,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
        Column("name", Text, nullable=False),
        Column("role", Text, nullable=False),
        Column("sites", JSON),
        Column("token_hash", Text, nullable=False, unique=True),
        Column("created_ms", BigInteger, nullable=False),
        Column("revoked_ms", BigInteger),
    )
    Table(
        "camera_tokens",
        old,
        Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True),
        Column("camera_id", Text, nullable=False),
        Column("token_hash", Text, nullable=False, unique=True),
        Column("created_ms", BigInteger, nullable=False),
        Column("revoked_ms", BigInteger),
    )
    api_token, camera_token = PREFIX + "a" * 43, CAMERA_PREFIX + "c" * 43
    engine = make_engine(store_url)
    try:
        with engine.begin() as conn:
            old.create_all(conn)
            conn.execute(
                old.tables["api_tokens"].insert(),
                {"name": "old", "role": "admin", "sites": None, "created_ms": 1,
                 "token_hash": hashlib.sha256(api_token.encode()).hexdigest()},
            )  # fmt: skip
            conn.execute(
                old.tables["camera_tokens"].insert(),
                {"camera_id": "kitchen-0001-cam-1", "created_ms": 1,
                 "token_hash": hashlib.sha256(camera_token.encode()).hexdigest()},
            )  # fmt: skip
        store = TokenStore(engine, clock=clock)
        store.create_schema()
        store.create_schema()  # the column is there now: nothing more to add
        for table in ("api_tokens", "camera_tokens"):
            columns = {c["name"] for c in inspect(engine).get_columns(table)}
            assert "expires_ms" in columns, table
        assert store.verify(api_token) == Principal("old", Role.ADMIN, None)
        assert store.verify_camera(camera_token) == "kitchen-0001-cam-1"
        assert [t.expires_ms for t in store.list()] == [None]
        new, _ = store.create("new", Role.VIEWER, None, expires_ms=clock.now + 1000)
        assert store.verify(new) is not None
    finally:
        engine.dispose()
