"""Camera workers: who owns which camera, and no worker outlives its pool."""

from __future__ import annotations

import os
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
    assert owner_index("kitchen-0001-cam-1", 3) == zlib.crc32(b"kitchen-0001-cam-1") % 3


def test_owners_are_the_same_in_another_process() -> None:
    """The API process and the workers must agree: not Python's per-process salted hash."""
    cameras = ["kitchen-0001-cam-1", "kitchen-0002-cam-1", "street-cam-00001", "street-cam-01500"]
    here = [owner_index(c, 4) for c in cameras]
    there = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from ingest.video.worker import owner_index; "
            "print(*(owner_index(c, 4) for c in sys.argv[1:]))",
            *cameras,
        ],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert [int(w) for w in there.stdout.split()] == here


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
