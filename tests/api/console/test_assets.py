"""The console's files: every vendored library pinned, hashed and licensed; nothing loaded
from anywhere but the service itself."""

from __future__ import annotations

import hashlib
import json
import re

from api.console import ASSETS

VENDOR = ASSETS / "vendor"


def test_every_vendored_file_is_the_pinned_one_with_its_licence() -> None:
    manifest = json.loads((VENDOR / "vendor.json").read_text())
    listed = set()
    for package in manifest["packages"]:
        folder = VENDOR / package["folder"]
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"]), package
        assert package["source"].endswith(f"-{package['version']}.tgz")
        assert "LICENSE" in package["files"] and package["licence"]
        for name, digest in package["files"].items():
            path = folder / name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path
            listed.add(path)
    on_disk = {p for p in VENDOR.rglob("*") if p.is_file() and p.name != "vendor.json"}
    assert on_disk == listed, "a vendored file that vendor.json does not pin"


def test_the_console_loads_nothing_from_elsewhere() -> None:
    own = [p for p in ASSETS.rglob("*") if p.is_file() and VENDOR not in p.parents]
    assert any(p.suffix == ".js" for p in own)
    for path in own:
        text = path.read_text()
        assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), path
    page = (ASSETS / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="([^"#]+)"', page):
        assert reference.startswith("/console/assets/") or reference == "data:,", reference
        if reference.startswith("/console/assets/"):
            assert (ASSETS / reference.removeprefix("/console/assets/")).is_file(), reference
