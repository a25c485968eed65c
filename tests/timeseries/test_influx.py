"""The InfluxDB edge against a real InfluxDB 1.x: writes, queries, telling failures apart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from config.settings import load_settings
from simulators.local_services import Influxd, free_port
from tests.support import unique
from timeseries.influx import (
    InfluxQueryClient,
    InfluxRejected,
    InfluxUnavailable,
    InfluxWriteClient,
    quote_string,
)
from timeseries.lineprotocol import FieldType


def client_for(url: str, **influx: object) -> InfluxWriteClient:
    return InfluxWriteClient(load_settings({}, influx={"url": url, **influx}).influx)


def test_write_then_query_round_trip(influxd: Influxd) -> None:
    db = unique("influx")
    client = client_for(influxd.url, database=db)
    client.ensure_database()
    client.write(b'm,t=a f=1.5,s="x" 1000\nm,t=b f=2.5,i=3i 2000')
    (statement,) = client.query("SELECT * FROM m ORDER BY time", epoch="ns")
    (series,) = statement
    assert [(r["time"], r["t"], r["f"]) for r in series.rows()] == [
        (1000, "a", 1.5),
        (2000, "b", 2.5),
    ]
    assert set(client.field_types()) == {
        ("m", "f", FieldType.FLOAT), ("m", "s", FieldType.STRING), ("m", "i", FieldType.INTEGER)
    }  # fmt: skip
    client.close()


def test_parse_error_and_type_conflict_are_rejections(influxd: Influxd) -> None:
    client = client_for(influxd.url, database=unique("influx"))
    client.ensure_database()
    client.write(b"m f=1 1")
    with pytest.raises(InfluxRejected, match="unable to parse"):
        client.write(b"m f=")
    with pytest.raises(InfluxRejected, match="field type conflict"):
        client.write(b'm f="text" 2')
    client.close()


def test_missing_database_is_retry_later_not_a_rejection(influxd: Influxd) -> None:
    client = client_for(influxd.url, database=unique("absent"), create_database=False)
    with pytest.raises(InfluxUnavailable, match="404"):
        client.write(b"m f=1 1")
    client.close()


def test_nothing_listening_is_unavailable() -> None:
    client = client_for(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(InfluxUnavailable):
        client.write(b"m f=1 1")
    client.close()


def test_stopped_server_is_unavailable_then_back(tmp_path: Path) -> None:
    with Influxd(tmp_path / "influxd") as server:
        client = client_for(server.url, database="d")
        client.ensure_database()
        server.stop()
        with pytest.raises(InfluxUnavailable):
            client.write(b"m f=1 1")
        server.start()
        client.write(b"m f=1 1")
        client.close()


def test_async_query_client_quotes_strings(influxd: Influxd) -> None:
    db = unique("influx")
    writer = client_for(influxd.url, database=db)
    writer.ensure_database()
    writer.write(b"m,t=it's f=1 1")
    writer.close()

    async def run() -> list[float]:
        reader = InfluxQueryClient(
            load_settings({}, influx={"url": influxd.url, "database": db}).influx
        )
        try:
            assert await reader.ping()
            tag = quote_string("it's")
            series = await reader.query(f"SELECT f FROM m WHERE t = {tag}")
            return [row["f"] for s in series for row in s.rows()]
        finally:
            await reader.aclose()

    assert asyncio.run(run()) == [1.0]


def test_v2_write_request_shape() -> None:
    """No InfluxDB 2.x here: check the request the v2 switch sends (URL, params, token)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    settings = load_settings(
        {},
        influx={"url": "http://influx2:8086", "api": "v2", "token": "s3cret", "org": "district",
                "bucket": "telemetry"},
    ).influx  # fmt: skip
    client = InfluxWriteClient(settings, transport=httpx.MockTransport(handler))
    client.write(b"m f=1 1")
    (request,) = seen
    assert request.url.path == "/api/v2/write"
    assert dict(request.url.params) == {"org": "district", "bucket": "telemetry", "precision": "ns"}
    assert request.headers["Authorization"] == "Token s3cret"
    assert request.content == b"m f=1 1"
