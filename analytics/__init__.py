"""Pure analytics: telemetry rules, video detectors and the event model (no I/O here)."""
