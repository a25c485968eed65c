"""The change feed and the relay with two nodes on one store: a change made on one node wakes
the other's followers through PostgreSQL's notifications, and only one node relays."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator

import psycopg
import pytest

from alerts.feed import ChangeFeed
from alerts.relay import AlertRelay
from alerts.store import AlertStore, DatabaseUnavailable
from alerts.store.db import listen_conninfo
from analytics.events import Raise, Severity, Source
from analytics.lifecycle import Action
from tests.pg import reset_database
from tests.support import in_background, wait_until

T0 = 1_700_000_000_000


def smoking(site: str, at_ms: int = T0) -> Raise:
    return Raise(Source(site, "cam-1"), "smoking", "det.smoking", Severity.MAJOR, at_ms, {}, ())


@pytest.fixture
def stores(store_url: str) -> Iterator[tuple[AlertStore, AlertStore]]:
    """Two nodes' stores: two engines (connection pools) on one database."""
    a, b = AlertStore(store_url), AlertStore(store_url)
    a.create_schema()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def following(feed: ChangeFeed) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return in_background(feed.run(), DatabaseUnavailable)


def test_a_change_on_one_node_wakes_the_followers_of_the_other(
    stores: tuple[AlertStore, AlertStore], store_url: str
) -> None:
    a, b = stores
    postgres = store_url.startswith("postgresql")

    async def scenario() -> None:
        # On PostgreSQL nothing polls within the test's time: only a notification can wake B.
        feed = ChangeFeed(b, poll_s=0.05, check_s=600)
        assert feed.listening is postgres
        async with following(feed):
            base = feed.seq
            for n in range(3):
                change = await asyncio.to_thread(a.raise_, smoking(f"kitchen-{n}"))
                assert await feed.wait_beyond(change.seq - 1, 10), f"change {change.seq} unheard"
                assert feed.seq == change.seq > base
            acked = await asyncio.to_thread(a.act, change.alert.id, Action.ACKNOWLEDGE, "wang")
            assert await feed.wait_beyond(acked.seq - 1, 10)

    asyncio.run(scenario())


def test_a_follower_whose_connection_is_cut_fails_loudly_and_resumes(postgres_url: str) -> None:
    reset_database(postgres_url)
    a, b = AlertStore(postgres_url), AlertStore(postgres_url)
    a.create_schema()

    async def scenario() -> None:
        feed = ChangeFeed(b, check_s=600)
        task = asyncio.create_task(feed.run())
        conninfo = listen_conninfo(b.engine)
        assert conninfo is not None
        with psycopg.connect(conninfo, autocommit=True) as admin:

            def listeners() -> int:
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
                ).fetchone()
                return int(row[0]) if row else 0

            await asyncio.to_thread(wait_until, lambda: listeners() == 1, 10, "the LISTEN")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
            )
        with pytest.raises(DatabaseUnavailable, match="lost the alert change notifications"):
            await asyncio.wait_for(task, 10)
        # The supervisor starts it again: changes made while it was away are not missed.
        change = await asyncio.to_thread(a.raise_, smoking("kitchen-9"))
        async with following(feed):
            assert await feed.wait_beyond(change.seq - 1, 10)

    try:
        asyncio.run(scenario())
    finally:
        a.close()
        b.close()


def test_only_the_active_node_relays_and_a_takeover_goes_on_where_it_stopped(
    stores: tuple[AlertStore, AlertStore],
) -> None:
    a, b = stores
    published: dict[str, list[int]] = {"a": [], "b": []}
    active = {"a": True, "b": False}

    def relay(node: str, store: AlertStore) -> AlertRelay:
        def publish(topic: str, payload: bytes) -> bool:
            published[node].append(json.loads(payload)["seq"])
            return True

        return AlertRelay(store, publish, poll_s=0.02, active=lambda: active[node])

    relays = {"a": relay("a", a), "b": relay("b", b)}
    threads = [threading.Thread(target=r.run, daemon=True) for r in relays.values()]
    for thread in threads:
        thread.start()
    try:
        first = [a.raise_(smoking(f"kitchen-{n}")).seq for n in range(3)]
        wait_until(lambda: published["a"] == first, 10, "node a relaying the first changes")
        active["a"] = False
        wait_until(lambda: not relays["a"].relaying, 10, "node a standing by")
        active["b"] = True
        second = [b.raise_(smoking(f"kitchen-{n}", T0 + 1)).seq for n in range(3)]
        wait_until(lambda: published["b"] == second, 10, "node b relaying from where a stopped")
        assert published["a"] == first  # a, standing by, published nothing more
    finally:
        for r in relays.values():
            r.stop()
        for thread in threads:
            thread.join(10)
