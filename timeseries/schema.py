"""The measurements Mingliang writes to InfluxDB (docs/schema.md): one place for their names."""

from __future__ import annotations

from typing import Final

TELEMETRY: Final = "telemetry"  # a device's readings
DEVICE_STATUS: Final = "device_status"  # online / offline reports and Last Wills
DEVICE_EVENT: Final = "device_event"  # events a device raised itself
CAMERA_HEALTH: Final = "camera_health"  # each camera's video figures, every health poll
CAMERA_WORKER: Final = "camera_worker"  # each camera worker process's memory, every poll
ALERTS_OPEN: Final = "alerts_open"  # open alerts per site, kind and severity
