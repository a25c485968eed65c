"""Server-Sent Events of every alert change, resumable with Last-Event-ID.

The store's change log is the source of truth, so a client sees changes made by any process,
in order, and a reconnecting client resumes where it left off (alerts/feed.py wakes it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from alerts.changes import change_json
from alerts.feed import ChangeFeed
from alerts.store import AlertStore, DatabaseUnavailable

KEEPALIVE_S = 15.0
RETRY_S = 2.0  # while the alert database is away
_BATCH = 200


async def events(
    store: AlertStore,
    feed: ChangeFeed,
    after: int,
    sites: frozenset[str] | None,
) -> AsyncIterator[str]:
    """SSE frames for changes after `after` that the caller may see; keep-alives in between.

    While the alert database is away the stream stays open, saying so in a comment, and
    resumes where it was when the database returns."""
    last = after
    yield "retry: 3000\n\n"
    while True:
        upto = feed.seq
        try:
            changes = await asyncio.to_thread(store.changes_since, last, sites, _BATCH)
        except DatabaseUnavailable:
            yield ": the alert database is unavailable; waiting for it\n\n"
            await asyncio.sleep(RETRY_S)  # the retry period while the database is away
            continue
        for change in changes:
            data = change_json(change)
            yield f"id: {change.seq}\nevent: {change.action}\ndata: {data}\n\n"
            last = change.seq
        if len(changes) == _BATCH:
            continue
        # Nothing more for this caller up to `upto`: changes of other sites are skipped too.
        last = max(last, upto)
        if not await feed.wait_beyond(last, KEEPALIVE_S):
            yield ": keep-alive\n\n"
