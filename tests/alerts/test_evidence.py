"""Evidence files: names that cannot escape the folder, and pruning by age and budget."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from alerts.evidence import EvidenceError, EvidenceStore

DAY = 86400.0
NOW = 1_780_000_000.0


def aged(store: EvidenceStore, camera: str, days: float, size: int, n: int = 0) -> Path:
    at_ms = round((NOW - days * DAY) * 1000) + n
    name = store.save(store.name_for(camera, at_ms, "camera_covered", "jpg"), b"x" * size)
    path = store.path(name)
    os.utime(path, (NOW - days * DAY, NOW - days * DAY))
    return path


def test_a_name_is_saved_whole_and_found_again(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    name = store.name_for("kitchen-0001-cam-1", 1_780_000_000_123, "camera_covered", "jpg")
    assert name == "video/2026-05-28/kitchen-0001-cam-1/202640123-camera_covered.jpg"
    store.save(name, b"\xff\xd8jpeg")
    assert store.path(name).read_bytes() == b"\xff\xd8jpeg"
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize(
    "name",
    [
        "snap.jpg",  # a device's own evidence: not a file of ours
        "video/2026-05-28/../../../etc/passwd.jpg",
        "/etc/passwd",
        "video/2026-05-28/cam/x.exe",
        "video/2026-05-28/cam/../x.jpg",
    ],
)
def test_names_outside_the_evidence_folder_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(EvidenceError):
        EvidenceStore(tmp_path).path(name)


def test_gone_evidence_says_so(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    with pytest.raises(EvidenceError, match="no longer kept"):
        store.path("video/2026-05-28/cam/1-camera_covered.jpg")


def test_pruning_removes_the_too_old_and_the_oldest_over_budget_but_keeps_the_week(
    tmp_path: Path,
) -> None:
    store = EvidenceStore(tmp_path)
    ancient = aged(store, "cam", 40, 100)
    old = [aged(store, "cam", d, 100, n) for n, d in enumerate((20, 15, 10))]
    recent = [aged(store, "cam", d, 100, n) for n, d in enumerate((5, 1))]
    # Budget 250 bytes: the 40-day-old goes by age, then the oldest between 7 and 30 days
    # until under budget... but never the kept week: 200 bytes remain in it.
    pruned = store.prune(keep_days=7, max_age_days=30, max_bytes=250, now=NOW)
    assert not ancient.exists() and not any(p.exists() for p in old)
    assert all(p.exists() for p in recent)
    assert (pruned.files, pruned.bytes, pruned.kept_bytes) == (4, 400, 200)
    assert not pruned.over_budget
    # A budget smaller than the kept week: nothing in it goes, and it is said.
    pruned = store.prune(keep_days=7, max_age_days=30, max_bytes=50, now=NOW)
    assert pruned.files == 0 and pruned.over_budget
    assert all(p.exists() for p in recent)


def test_pruning_within_budget_keeps_what_is_not_too_old(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path)
    kept = aged(store, "cam", 20, 100)
    gone = aged(store, "cam", 31, 100)
    pruned = store.prune(keep_days=7, max_age_days=30, max_bytes=10**9, now=NOW)
    assert kept.exists() and not gone.exists() and pruned.files == 1
    assert not (
        tmp_path / "video" / time.strftime("%Y-%m-%d", time.gmtime(NOW - 31 * DAY))
    ).exists()
