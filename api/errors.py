"""Our exceptions as HTTP answers with clear bodies."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from alerts.store import AlertNotFound, DatabaseUnavailable
from timeseries.influx import InfluxError, InfluxUnavailable


def _plain(error: Any) -> dict[str, Any]:
    """Where and what, without the `input` FastAPI would echo: what was sent may hold a
    token, and need not be text a JSON answer can carry (a lone surrogate made a 500)."""
    return {
        "loc": list(error.get("loc", ())),
        "msg": str(error.get("msg", "")),
        "type": str(error.get("type", "")),
    }


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_plain(e) for e in exc.errors()]}, status_code=422)

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
