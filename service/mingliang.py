"""The FastAPI application. Its lifespan runs, in one process and in this order:

    alert store -> alert engine (rules) -> ingest (MQTT -> InfluxDB) -> MQTT relay of changes
    -> camera workers and their health monitor -> SSE change feed -> the API

and stops them in reverse, so ingest hands its last records to the engine before it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from alerts.engine import AlertEngine
from alerts.feed import ChangeFeed
from alerts.relay import AlertRelay
from alerts.store import AlertStore
from analytics import camera_watch
from analytics.rules import load_rules
from api import alerts, directory, errors, health, rejections, telemetry, video
from api.state import AppState
from config.settings import Settings
from devices.registry import Registry
from devices.tokens import TokenStore
from ingest.telemetry.metrics import IngestMetrics
from ingest.telemetry.pipeline import IngestService
from ingest.video.monitor import CameraMonitor
from ingest.video.pool import CameraPool
from timeseries.influx import InfluxQueryClient


def create_app(
    settings: Settings,
    registry: Registry,
    *,
    run_ingest: bool = True,
    log_level: str = "warning",
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            store = AlertStore(settings.alert_store_url)
            stack.callback(store.close)
            await asyncio.to_thread(store.create_schema)
            tokens = TokenStore(store.engine)
            await asyncio.to_thread(tokens.create_schema)
            feed = ChangeFeed(store)
            wakers = [feed.nudge]

            def changed() -> None:
                for wake in wakers:
                    wake()

            service: IngestService | None = None
            engine: AlertEngine | None = None
            if run_ingest:
                book = load_rules(settings.rules_path, registry)
                metrics = IngestMetrics()
                engine = AlertEngine(
                    settings.alerts,
                    registry,
                    book,
                    store,
                    metrics,
                    # Late-bound: the service is made next, and needs the engine first.
                    write_lines=lambda lines: service.write_lines(lines) if service else None,
                    on_change=changed,
                )
                stack.enter_context(engine)
                service = IngestService(
                    settings,
                    registry,
                    on_records=engine.submit,
                    metrics=metrics,
                    on_connection=engine.connection,
                )
                service.__enter__()
                # Stopping flushes and acknowledges what was taken: off the event loop.
                stack.push_async_callback(asyncio.to_thread, service.close)
                relay = AlertRelay(store, service.publish)
                stack.enter_context(relay)
                wakers.append(relay.wake)

            pool: CameraPool | None = None
            monitor: CameraMonitor | None = None
            if run_ingest and settings.cameras.workers > 0:
                assert engine is not None and service is not None
                pool = await stack.enter_async_context(
                    CameraPool(
                        settings.cameras,
                        settings.inventory_path,
                        streams=list(registry.streams.values()),
                        log_level=log_level,
                    )
                )
                still_offline = await asyncio.to_thread(
                    store.devices_with_unresolved, [camera_watch.KIND], rule=camera_watch.RULE
                )
                monitor = CameraMonitor(
                    settings.cameras,
                    registry,
                    pool,
                    service.write_lines,
                    engine.submit_signals,
                    offline_at_start=still_offline,
                )
                watcher = asyncio.create_task(monitor.run())
                stack.push_async_callback(_cancel, watcher)

            feeder = asyncio.create_task(feed.run())
            stack.push_async_callback(_cancel, feeder)
            influx = InfluxQueryClient(settings.influx)
            stack.push_async_callback(influx.aclose)
            app.state.mingliang = AppState(
                settings,
                registry,
                influx,
                service,
                store,
                tokens,
                feed,
                changed,
                pool,
                monitor,
            )
            yield

    app = FastAPI(
        title="Mingliang",
        summary="Ingestion and analytics backend for sunshine kitchens and street cameras",
        version="0.2.0",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (health, directory, telemetry, alerts, rejections, video):
        app.include_router(module.router)
    return app


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
