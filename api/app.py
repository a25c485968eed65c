"""The FastAPI application; its lifespan runs ingest beside the API in one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from api import directory, errors, health, rejections, telemetry
from api.state import AppState
from config.settings import Settings
from devices.registry import Registry
from ingest.influx import InfluxQueryClient
from ingest.service import IngestService


def create_app(settings: Settings, registry: Registry, *, run_ingest: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            service = None
            if run_ingest:
                service = IngestService(settings, registry)
                service.__enter__()
                # Stopping flushes and acknowledges what was taken: off the event loop.
                stack.push_async_callback(asyncio.to_thread, service.close)
            influx = InfluxQueryClient(settings.influx)
            stack.push_async_callback(influx.aclose)
            app.state.mingliang = AppState(settings, registry, influx, service)
            yield

    app = FastAPI(
        title="Mingliang",
        summary="Ingestion and analytics backend for sunshine kitchens and street cameras",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (health, directory, telemetry, rejections):
        app.include_router(module.router)
    return app
