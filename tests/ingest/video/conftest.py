from __future__ import annotations

import pytest

from devices.registry import Registry


@pytest.fixture
def pushed_only(registry: Registry) -> Registry:
    """The inventory without its RTSP cameras: these tests push everything."""
    return registry.with_streams([])
