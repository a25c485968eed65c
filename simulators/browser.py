"""The browser the console's tests and benchmark drive: Debian's Chromium, headless.

Playwright's own browser download does not work on a closed network; Debian's package does,
with the flags below (no sandbox when run as root, and no calls home).
"""

from __future__ import annotations

import shutil

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


class BrowserMissing(Exception):
    """Debian's chromium is not installed; the message says how to get it."""


def chromium() -> str:
    """The path of Debian's Chromium."""
    path = shutil.which("chromium")
    if path is None:
        raise BrowserMissing(
            "Debian's chromium is not installed: apt-get install chromium "
            "(./mingliang test installs it)"
        )
    return path
