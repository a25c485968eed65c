"""Our exceptions as HTTP answers with clear bodies."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from alerts.store import AlertNotFound, DatabaseUnavailable
from timeseries.influx import InfluxError, InfluxUnavailable


def install(app: FastAPI) -> None:
    @app.exception_handler(InfluxUnavailable)
    async def _unavailable(request: Request, exc: InfluxUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the time-series database is unavailable: {exc}"}, status_code=503
        )

    @app.exception_handler(AlertNotFound)
    async def _not_found(request: Request, exc: AlertNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(DatabaseUnavailable)
    async def _database(request: Request, exc: DatabaseUnavailable) -> JSONResponse:
        return JSONResponse(
            {"detail": f"the alert database is unavailable: {exc}"}, status_code=503
        )

    @app.exception_handler(InfluxError)
    async def _influx(request: Request, exc: InfluxError) -> JSONResponse:
        return JSONResponse({"detail": f"time-series query failed: {exc}"}, status_code=502)
