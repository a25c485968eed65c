"""Evidence of video alerts on disk: snapshots and clips, named, served, pruned.

A camera worker saves evidence when a detector raises; the alert carries the evidence's names
and the API serves a name only to whoever may see the alert. Names are relative paths under
the evidence folder, `video/<day>/<camera id>/<time>-<kind>.<ext>`, so that pruning by age
walks days and a name can never reach outside the folder.

Pruning keeps everything younger than `keep_days`, removes everything older than
`max_age_days`, and in between removes the oldest first while the total is above the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from config.settings import EvidenceSettings

log = logging.getLogger(__name__)

_NAME = re.compile(r"^video/\d{4}-\d{2}-\d{2}/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+\.(jpg|webm)$")
MEDIA_TYPES = {".jpg": "image/jpeg", ".webm": "video/webm"}


class EvidenceError(Exception):
    """Evidence cannot be saved or found."""


@dataclass(frozen=True, slots=True)
class Pruned:
    files: int
    bytes: int
    kept_bytes: int
    over_budget: bool  # the budget could not be met without touching kept evidence


class EvidenceStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def name_for(self, camera_id: str, at_ms: int, kind: str, ext: str) -> str:
        day = time.strftime("%Y-%m-%d", time.gmtime(at_ms / 1000))
        stamp = time.strftime("%H%M%S", time.gmtime(at_ms / 1000)) + f"{at_ms % 1000:03d}"
        return f"video/{day}/{camera_id}/{stamp}-{kind}.{ext}"

    def save(self, name: str, data: bytes) -> str:
        """Write atomically (a reader never sees half a file); the name back."""
        path = self.path(name, must_exist=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(path.suffix + ".partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        except OSError as exc:
            raise EvidenceError(f"cannot save evidence {name}: {exc.strerror}") from exc
        return name

    def path(self, name: str, must_exist: bool = True) -> Path:
        """The file of an evidence name; EvidenceError for what is not ours or is gone."""
        if not _NAME.match(name) or ".." in name:
            raise EvidenceError(f"{name!r} is not the name of video evidence")
        path = self.directory / name
        if must_exist and not path.is_file():
            raise EvidenceError(f"evidence {name} is no longer kept")
        return path

    def prune(
        self, keep_days: float, max_age_days: float, max_bytes: int, now: float | None = None
    ) -> Pruned:
        now = time.time() if now is None else now
        root = self.directory / "video"
        files: list[tuple[float, int, Path]] = []
        if root.is_dir():
            for path in root.rglob("*"):
                if path.is_file():
                    try:
                        stat = path.stat()
                    except FileNotFoundError:
                        continue
                    files.append((stat.st_mtime, stat.st_size, path))
        files.sort()
        total = sum(size for _, size, _ in files)
        removed = removed_bytes = 0
        keep_after = now - keep_days * 86400
        drop_before = now - max_age_days * 86400
        over_budget = False
        for mtime, size, path in files:
            too_old = mtime < drop_before
            over = total > max_bytes
            if not (too_old or over):
                break  # oldest first: the rest are younger and the budget is met
            if not too_old and mtime >= keep_after:
                over_budget = True  # only kept evidence is left to remove
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove old evidence %s: %s", path, exc.strerror)
                continue
            total -= size
            removed += 1
            removed_bytes += size
        self._remove_empty_folders(root)
        return Pruned(removed, removed_bytes, total, over_budget)

    @staticmethod
    def _remove_empty_folders(root: Path) -> None:
        if not root.is_dir():
            return
        for folder in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):  # not empty
                folder.rmdir()


class EvidencePruner:
    """Every `prune_every_s`, old evidence goes (a loop of the service's supervisor)."""

    def __init__(self, store: EvidenceStore, settings: EvidenceSettings) -> None:
        self._store = store
        self._settings = settings
        self.removed_files = 0
        self.kept_bytes = 0

    async def run(self) -> None:
        s = self._settings
        while True:
            pruned = await asyncio.to_thread(
                self._store.prune, s.keep_days, s.max_age_days, s.max_bytes
            )
            self.removed_files += pruned.files
            self.kept_bytes = pruned.kept_bytes
            if pruned.files:
                log.info("removed %d old evidence files (%d bytes)", pruned.files, pruned.bytes)
            if pruned.over_budget:
                log.warning(
                    "evidence takes %d bytes, over analytics.evidence.max_bytes (%d), all of it "
                    "younger than keep_days: raise the budget or give it more disk",
                    pruned.kept_bytes,
                    s.max_bytes,
                )
            await asyncio.sleep(s.prune_every_s)  # the prune period
