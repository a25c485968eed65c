"""The edges that take data in: `telemetry/` (MQTT to InfluxDB) and `video/` (cameras)."""
