"""InfluxDB over HTTP: line-protocol writes (v1 /write or v2 /api/v2/write), InfluxQL reads.

    InfluxError
     ├── InfluxUnavailable   retry later, keep the data: refused, timed out, 5xx, 429, and also
     │                       401/403/404 (credentials or database wrong: an operator fixes the
     │                       configuration, the points must not be thrown away meanwhile)
     └── InfluxRejected      the data itself was refused (parse error, field type conflict);
                             sending it again cannot help

httpx serves both write APIs with one client and one error path; influxdb-client only speaks
the v2 API, which InfluxDB 1.6 (what Debian ships) lacks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from config.settings import InfluxSettings
from timeseries.lineprotocol import FieldType


class InfluxError(Exception):
    """Base of every InfluxDB failure."""


class InfluxUnavailable(InfluxError):
    """InfluxDB cannot take the request now; try again later."""


class InfluxRejected(InfluxError):
    """InfluxDB refused the data or query itself (HTTP 4xx about the content)."""


_RETRY_LATER = {401, 403, 404, 408, 429}


@dataclass(frozen=True, slots=True)
class Series:
    """One InfluxQL result series: its tags and rows (column name -> value)."""

    name: str
    tags: Mapping[str, str]
    columns: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    def rows(self) -> Iterator[dict[str, Any]]:
        for row in self.values:
            yield dict(zip(self.columns, row, strict=True))


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_string(text: str) -> str:
    """An InfluxQL string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Endpoint:
    """URLs, parameters and credentials for one InfluxDB, shared by the sync and async clients."""

    def __init__(self, settings: InfluxSettings) -> None:
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.headers: dict[str, str] = {}
        if settings.token:
            self.headers["Authorization"] = f"Token {settings.token}"
        self.auth: tuple[str, str] | None = (
            (settings.username, settings.password or "") if settings.username else None
        )

    def write_request(self) -> tuple[str, dict[str, str]]:
        s = self.settings
        if s.api == "v2":
            assert s.org and s.bucket  # checked by InfluxSettings
            return f"{self.base}/api/v2/write", {
                "org": s.org,
                "bucket": s.bucket,
                "precision": "ns",
            }
        params = {"db": s.database, "precision": "ns"}
        if s.retention_policy:
            params["rp"] = s.retention_policy
        return f"{self.base}/write", params

    def query_params(self, query: str, epoch: str | None) -> dict[str, str]:
        params = {"db": self.settings.database, "q": query}
        if epoch:
            params["epoch"] = epoch
        return params

    def check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if status < 300:
            return
        message = _error_text(response)
        if status >= 500 or status in _RETRY_LATER:
            hint = ""
            if status in (401, 403):
                hint = " (check influx.username/password or influx.token)"
            elif status == 404:
                hint = f" (does database/bucket exist at {self.base}?)"
            raise InfluxUnavailable(f"{what}: HTTP {status}: {message}{hint}")
        raise InfluxRejected(f"{what}: HTTP {status}: {message}")

    def results(self, response: httpx.Response, query: str) -> list[list[Series]]:
        self.check(response, "query")
        try:
            body = response.json()
        except ValueError as exc:
            raise InfluxError(f"query: InfluxDB answered with non-JSON: {exc}") from exc
        out: list[list[Series]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise InfluxRejected(f"query {query[:200]!r}: {result['error']}")
            out.append(
                [
                    Series(
                        name=s.get("name", ""),
                        tags=s.get("tags") or {},
                        columns=tuple(s["columns"]),
                        values=tuple(tuple(v) for v in s.get("values", [])),
                    )
                    for s in result.get("series", [])
                ]
            )
        return out


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, dict):
            return str(body.get("error") or body.get("message") or body)
    except ValueError:
        pass
    return response.text[:500] or response.reason_phrase


class InfluxWriteClient:
    """Blocking client for the writer thread: writes, plus the few queries ingest needs."""

    def __init__(
        self, settings: InfluxSettings, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._endpoint = _Endpoint(settings)
        self._client = httpx.Client(
            timeout=settings.timeout_s,
            headers=self._endpoint.headers,
            auth=self._endpoint.auth,
            transport=transport,
        )

    def write(self, body: bytes) -> None:
        url, params = self._endpoint.write_request()
        try:
            response = self._client.post(url, params=params, content=body)
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"write to {url}: {exc!r}") from exc
        self._endpoint.check(response, "write")

    def query(self, query: str, *, epoch: str | None = "ms") -> list[list[Series]]:
        url = f"{self._endpoint.base}/query"
        try:
            response = self._client.post(url, params=self._endpoint.query_params(query, epoch))
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"query at {url}: {exc!r}") from exc
        return self._endpoint.results(response, query)

    def ensure_database(self) -> None:
        settings = self._endpoint.settings
        if settings.api == "v1" and settings.create_database:
            self.query(f"CREATE DATABASE {quote_ident(settings.database)}", epoch=None)

    def field_types(self) -> list[tuple[str, str, FieldType]]:
        """(measurement, field, type) for every field already stored in the database."""
        known = []
        for statement in self.query("SHOW FIELD KEYS", epoch=None):
            for series in statement:
                for row in series.rows():
                    known.append((series.name, row["fieldKey"], FieldType(row["fieldType"])))
        return known

    def close(self) -> None:
        self._client.close()


class InfluxQueryClient:
    """Async InfluxQL client for the API."""

    def __init__(self, settings: InfluxSettings) -> None:
        self._endpoint = _Endpoint(settings)
        self._client = httpx.AsyncClient(
            timeout=settings.timeout_s, headers=self._endpoint.headers, auth=self._endpoint.auth
        )

    async def query(self, query: str, *, epoch: str | None = "ms") -> list[Series]:
        """The series of a single-statement query."""
        url = f"{self._endpoint.base}/query"
        try:
            response = await self._client.get(url, params=self._endpoint.query_params(query, epoch))
        except httpx.TransportError as exc:
            raise InfluxUnavailable(f"query at {url}: {exc!r}") from exc
        statements = self._endpoint.results(response, query)
        return statements[0] if statements else []

    async def ping(self) -> bool:
        try:
            response = await self._client.get(f"{self._endpoint.base}/ping")
        except httpx.TransportError:
            return False
        return response.status_code == 204

    async def aclose(self) -> None:
        await self._client.aclose()


def split_lines(body: bytes) -> Sequence[bytes]:
    """The lines of a line-protocol body; a newline inside a quoted string is not a break."""
    if b'"' not in body:
        return body.split(b"\n")
    lines: list[bytes] = []
    start = 0
    quoted = False
    escaped = False
    fields_part = 0  # spaces seen outside quotes: strings only occur in the field set
    for i, byte in enumerate(body):
        if escaped:
            escaped = False
        elif byte == 0x5C:  # backslash
            escaped = True
        elif byte == 0x22 and fields_part >= 1:  # double quote
            quoted = not quoted
        elif byte == 0x20 and not quoted:
            fields_part += 1
        elif byte == 0x0A and not quoted:
            lines.append(body[start:i])
            start = i + 1
            fields_part = 0
    lines.append(body[start:])
    return lines
