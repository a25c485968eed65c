"""Server-Sent Events of every alert change, resumable with Last-Event-ID.

The store's change log is the source of truth, so a client sees changes made by any process,
in order, and a reconnecting client resumes where it left off (alerts/feed.py wakes it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from alerts.feed import ChangeFeed
from alerts.relay import change_payload
from alerts.store import AlertStore

KEEPALIVE_S = 15.0
_BATCH = 200


async def events(
    store: AlertStore,
    feed: ChangeFeed,
    after: int,
    sites: frozenset[str] | None,
) -> AsyncIterator[str]:
    """SSE frames for changes after `after` that the caller may see; keep-alives in between."""
    last = after
    yield "retry: 3000\n\n"
    while True:
        upto = feed.seq
        changes = await asyncio.to_thread(store.changes_since, last, sites, _BATCH)
        for change in changes:
            data = json.dumps(change_payload(change), ensure_ascii=False)
            yield f"id: {change.seq}\nevent: {change.action}\ndata: {data}\n\n"
            last = change.seq
        if len(changes) == _BATCH:
            continue
        # Nothing more for this caller up to `upto`: changes of other sites are skipped too.
        last = max(last, upto)
        if not await feed.wait_beyond(last, KEEPALIVE_S):
            yield ": keep-alive\n\n"
