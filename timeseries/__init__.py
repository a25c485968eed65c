"""InfluxDB, the time-series store: the HTTP client, line protocol, the schema and its queries.

Used by both sides: ingest writes points through it, the API reads them back.
"""
