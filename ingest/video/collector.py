"""Collect what the camera workers' analytics found and hand it to the alert engine.

Every `signal_poll_s` each worker is asked for its findings after the last one collected;
the cursor moves only once the engine has taken them, so a finding is handed over at least
once (the alert store counts a repeated raise as a repeat, not a new alert). A worker that
restarted has a new run id: its findings start again from the beginning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from analytics.events import Clear, Raise, Severity, Signal, Source
from ingest.video.pool import CameraPool, WorkerUnavailable
from ingest.video.stats import Finding

log = logging.getLogger(__name__)


def to_signal(finding: Finding) -> Signal:
    source = Source(finding.site_id, finding.camera_id)
    if finding.edge == "raise":
        return Raise(
            source=source,
            kind=finding.kind,
            rule=finding.rule,
            severity=Severity(finding.severity or "warning"),
            at_ms=finding.at_ms,
            details=finding.details,
            evidence=tuple(finding.evidence),
        )
    return Clear(source, finding.kind, finding.rule, finding.at_ms, finding.details)


class FindingCollector:
    def __init__(
        self,
        pool: CameraPool,
        submit: Callable[[Sequence[Signal]], None],
        poll_s: float,
    ) -> None:
        """`submit` hands signals to the alert engine and may wait (called off the loop)."""
        self._pool = pool
        self._submit = submit
        self._poll_s = poll_s
        self._cursors: dict[int, tuple[str, int]] = {}
        self._dropped: dict[int, tuple[str, int]] = {}
        self.collected = 0
        self.dropped = 0

    async def run(self) -> None:
        while True:
            await self.collect()
            await asyncio.sleep(self._poll_s)  # the poll period

    async def collect(self) -> int:
        """One round over the workers; how many findings were handed to the engine."""
        handed = 0
        for worker in self._pool.workers:
            run, after = self._cursors.get(worker.index, ("", 0))
            try:
                found = await self._pool.findings(worker.index, after)
            except WorkerUnavailable:
                continue  # restarting: its loop in the supervisor says so
            if found.run != run and after:
                found = await self._pool.findings(worker.index, 0)
            self._count_dropped(worker.index, found.run, found.dropped)
            if found.items:
                await asyncio.to_thread(self._submit, [to_signal(f) for f in found.items])
                handed += len(found.items)
            self._cursors[worker.index] = (found.run, found.next)
        self.collected += handed
        return handed

    def _count_dropped(self, index: int, run: str, dropped: int) -> None:
        seen_run, seen = self._dropped.get(index, (run, 0))
        if seen_run != run:
            seen = 0
        if dropped > seen:
            self.dropped += dropped - seen
            log.warning(
                "camera worker %d dropped %d findings nobody collected", index, dropped - seen
            )
        self._dropped[index] = (run, dropped)
