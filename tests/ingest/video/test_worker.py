"""Camera workers: who owns which camera, and no worker outlives its pool."""

from __future__ import annotations

import subprocess
import sys
import zlib
from collections import Counter

from config.settings import load_settings
from devices.registry import Registry
from ingest.video.worker import WorkerSpec, owner_index
from tests.conftest import INVENTORY


def test_cameras_spread_evenly_and_stably_over_workers(registry: Registry) -> None:
    cameras = [c.device_id for c in registry.cameras()]
    owners = Counter(owner_index(c, 4) for c in cameras)
    assert set(owners) == {0, 1, 2, 3}
    assert max(owners.values()) < 1.15 * len(cameras) / 4
    # The same in every process and run (not Python's salted hash).
    assert owner_index("kitchen-0001-cam-1", 4) == owner_index("kitchen-0001-cam-1", 4)
    assert owner_index("kitchen-0001-cam-1", 3) == zlib.crc32(b"kitchen-0001-cam-1") % 3


def test_a_worker_stops_when_its_pool_goes_away() -> None:
    spec = WorkerSpec(
        index=0,
        count=1,
        key="k" * 32,
        cameras=load_settings({}).cameras,
        inventory=INVENTORY,
        streams=[],
    )
    with subprocess.Popen(
        [sys.executable, "-m", "ingest.video.worker"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as worker:
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdin.write(spec.model_dump_json().encode() + b"\n")
        worker.stdin.flush()
        assert worker.stdout.readline().startswith(b"ready ")
        # The pool's end of the pipe closes when the pool exits, however it exits.
        worker.stdin.close()
        try:
            assert worker.wait(timeout=30) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
