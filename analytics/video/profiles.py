"""Each camera's effective profile, from layered files an operator edits; reloaded on change.

    <dir>/all.toml                      every camera
    <dir>/<camera type>.toml            kitchen_camera.toml, street_camera.toml
    <dir>/rooms/<room>.toml             kitchen cameras by room: hot-kitchen.toml, prep-room.toml
    <dir>/cameras/<camera id>.toml      one camera: its zones, its masks

Later layers override earlier ones key by key; a list (the zones) is replaced whole, so a
camera's file that lists zones lists all of them. A room is the camera's `location` in the
inventory, in lower case with dashes. Every file is validated when read: a problem names the
file, the key and the value. At start a bad file is refused; while running, a bad edit is
reported (`errors`) and the cameras keep their last good profile.
"""

from __future__ import annotations

import re
import threading
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from analytics.video.profile import CameraProfile
from config.settings import merge_tables
from devices.models import CAMERA_TYPES, Device
from devices.registry import Registry

KITCHEN_CAMERA = "kitchen_camera"  # the cameras that have rooms; street cameras have streets
STREET_CAMERA = "street_camera"


class ProfileError(Exception):
    """A profile file cannot be used; the message names the file, key and value."""


def room_of(device: Device) -> str:
    """The room-type name of a camera's location: 'Hot kitchen' -> 'hot-kitchen'."""
    return re.sub(r"[^a-z0-9]+", "-", device.location.lower()).strip("-")


def _describe(path: Path, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"{key}: {msg} (got {err.get('input')!r})")
    return f"{path}: " + "; ".join(parts)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from exc


Signature = dict[Path, tuple[int, int]]


class ProfileBook:
    def __init__(self, directory: Path, registry: Registry) -> None:
        self.directory = directory
        self._cameras = {
            d.device_id: d for d in registry.devices.values() if d.type in CAMERA_TYPES
        }
        self._signature: Signature = {}
        self._profiles: dict[str, CameraProfile] = {}
        self.errors: list[str] = []  # the last reload's problems; empty when all is well
        self.reloads = 0
        self._lock = threading.Lock()
        self._profiles = self._load(self._scan())

    def profile(self, camera_id: str) -> CameraProfile:
        """The camera's effective profile; KeyError for a camera the inventory lacks."""
        return self._profiles[camera_id]

    def layers(self, camera_id: str) -> list[Path]:
        """The files that make the camera's profile, in the order they apply."""
        device = self._cameras[camera_id]
        d = self.directory
        candidates = [d / "all.toml", d / f"{device.type}.toml"]
        if device.type == KITCHEN_CAMERA:
            candidates.append(d / "rooms" / f"{room_of(device)}.toml")
        candidates.append(d / "cameras" / f"{camera_id}.toml")
        return [p for p in candidates if p in self._signature]

    def refresh(self) -> set[str]:
        """Read the files again if any changed; the cameras whose profile changed. A file
        that no longer validates leaves every camera with its last good profile."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> set[str]:
        signature = self._scan()
        if signature == self._signature:
            return set()
        try:
            profiles = self._load(signature)
        except ProfileError as exc:
            self._signature = signature  # report once per edit, not on every check
            self.errors = [str(exc)]
            return set()
        self.errors = []
        self.reloads += 1
        changed = {c for c, p in profiles.items() if self._profiles.get(c) != p}
        self._profiles = profiles
        return changed

    def _scan(self) -> Signature:
        if not self.directory.is_dir():
            return {}
        found: Signature = {}
        for path in sorted(self.directory.rglob("*.toml")):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed while looking
            found[path] = (stat.st_mtime_ns, stat.st_size)
        return found

    def _load(self, signature: Signature) -> dict[str, CameraProfile]:
        self._signature = signature
        d = self.directory
        raw = {path: _read(path) for path in signature}
        rooms = {room_of(c) for c in self._cameras.values() if c.type == KITCHEN_CAMERA}
        for path in raw:
            rel = path.relative_to(d)
            parts = rel.parts
            if len(parts) == 1 and path.stem in {"all", *CAMERA_TYPES}:
                continue
            if len(parts) == 2 and parts[0] == "rooms":
                if path.stem not in rooms:
                    raise ProfileError(
                        f"{path}: no camera is in a room {path.stem!r}; rooms: "
                        + ", ".join(sorted(rooms))
                    )
                continue
            if len(parts) == 2 and parts[0] == "cameras":
                if path.stem not in self._cameras:
                    raise ProfileError(f"{path}: {path.stem!r} is not a camera of the inventory")
                continue
            raise ProfileError(
                f"{path}: not a profile file (all.toml, <camera type>.toml, rooms/<room>.toml "
                "or cameras/<camera id>.toml)"
            )
        # A layer may set one key of a table: it applies over the built-in defaults.
        defaults = CameraProfile().model_dump()
        for path, layer in raw.items():  # each file alone, so that an error names its file
            try:
                CameraProfile.model_validate(merge_tables(defaults, layer))
            except ValidationError as exc:
                raise ProfileError(_describe(path, exc)) from exc
        cache: dict[tuple[Path, ...], CameraProfile] = {}
        profiles = {}
        for camera_id in self._cameras:
            layers = tuple(self.layers(camera_id))
            profile = cache.get(layers)
            if profile is None:
                merged = defaults
                for path in layers:
                    merged = merge_tables(merged, raw[path])
                    try:
                        profile = CameraProfile.model_validate(merged)
                    except ValidationError as exc:
                        raise ProfileError(_describe(path, exc)) from exc
                profile = profile or CameraProfile()
                for model in profile.models:
                    model_path = model.path if model.path.is_absolute() else d / model.path
                    if not model_path.is_file():
                        origin = next(p for p in reversed(layers) if "models" in raw[p])
                        raise ProfileError(
                            f"{origin}: models: {model.name!r}: no model file {model_path}"
                        )
                cache[layers] = profile
            profiles[camera_id] = profile
        return profiles
