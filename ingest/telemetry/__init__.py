"""Telemetry ingest: MQTT in, the contract, batching, the InfluxDB writer, spool and rejects.

    paho thread:   message -> contract (Decoder) -> line protocol -> Batcher
    writer thread: Batcher -> InfluxDB (or the spool) -> rejects file -> MQTT acks -> alert rules

`pipeline.IngestService` puts the parts together.
"""
