"""Our exceptions as HTTP answers with clear bodies."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ingest.influx import InfluxError, InfluxUnavailable


def install(app: FastAPI) -> None:
    @app.exception_handler(InfluxUnavailable)
    async def _unavailable(request: Request, exc: InfluxUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the time-series database is unavailable: {exc}"}, status_code=503
        )

    @app.exception_handler(InfluxError)
    async def _influx(request: Request, exc: InfluxError) -> JSONResponse:
        return JSONResponse({"detail": f"time-series query failed: {exc}"}, status_code=502)
