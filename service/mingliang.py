"""Mingliang, the service: its parts made and wired here, in one place, and supervised.

    alert store (SQLite / PostgreSQL) ----------------------------------------------.
    ingest (MQTT -> InfluxDB) --records--> alert engine (rules -> outbox -> store)  |
        ^ points (alert counts, camera health)  |  on_change                        |
        |                                       v                                   |
    camera workers <-- pool <-- camera monitor   change feed (SSE), MQTT relay <----'
                                                 the HTTP API (api/)

`Mingliang` is an async context manager: entering makes every part and starts its loops under
one `Supervisor`; leaving stops them in reverse, so ingest hands its last records to the rules
and the rules their last signals to the store before the database is closed.
`create_app` wraps it in the FastAPI application's lifespan.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from types import TracebackType

import httpx
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from alerts.engine import AlertEngine, RecordQueue
from alerts.evidence import EvidencePruner, EvidenceStore
from alerts.feed import ChangeFeed
from alerts.metrics import AlertMetrics
from alerts.relay import AlertRelay
from alerts.store import AlertStore, DatabaseUnavailable
from analytics import camera_watch
from analytics.rules import load_rules
from analytics.video.profiles import ProfileBook
from api import alerts, console, directory, errors, health, rejections, session, telemetry, video
from api import audit as audit_api
from api.state import AppState
from cluster.claims import Claim
from cluster.membership import CAMERA_CLAIM, ClusterError, Member, Membership, camera_key
from config.settings import Settings
from devices.registry import Registry
from devices.sessions import SessionStore
from devices.tokens import TokenStore
from ingest.telemetry import partitions
from ingest.telemetry.metrics import IngestMetrics
from ingest.telemetry.mqtt import MqttCollector
from ingest.telemetry.pipeline import IngestService
from ingest.video.collector import FindingCollector
from ingest.video.monitor import CameraMonitor
from ingest.video.pool import CameraPool, WorkerExited, WorkerUnavailable
from service.supervisor import Supervisor
from timeseries.influx import InfluxQueryClient, InfluxUnavailable

log = logging.getLogger(__name__)

# Failures whose message says it all: logged without a traceback.
EXPECTED_FAILURES = (
    ClusterError,
    DatabaseUnavailable,
    InfluxUnavailable,
    WorkerExited,
    WorkerUnavailable,
)
# The key whose owner among the cluster's members relays alert changes to MQTT.
RELAY_KEY = "alert-relay"
# Longest wait for a partition's messages and rule progress to be stored when handing it over.
HANDOVER_S = 30.0


class Mingliang:
    """The service's parts, made and started in order; `state` is what the API needs."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        *,
        run_ingest: bool = True,
        log_level: str = "warning",
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._run_ingest = run_ingest
        self._log_level = log_level
        self.metrics = CollectorRegistry()
        self.supervisor = Supervisor(self.metrics, expected=EXPECTED_FAILURES)
        self._stack = AsyncExitStack()
        self.state: AppState | None = None

    async def __aenter__(self) -> AppState:
        try:
            self.state = await self._start(self._stack)
        except BaseException:
            await self._stack.aclose()
            raise
        return self.state

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    async def _start(self, stack: AsyncExitStack) -> AppState:
        settings, registry, supervisor = self._settings, self._registry, self.supervisor
        store = AlertStore(
            settings.alert_store_url, busy_timeout_ms=round(settings.alerts.busy_timeout_s * 1000)
        )
        stack.callback(store.close)
        await asyncio.to_thread(store.create_schema)
        tokens = TokenStore(store.engine)
        await asyncio.to_thread(tokens.create_schema)
        sessions = SessionStore(store.engine)
        await asyncio.to_thread(sessions.create_schema)

        cluster = self._membership()
        peers = None
        if cluster.clustered:
            cluster_loop = supervisor.task("cluster", cluster.run)
            stack.push_async_callback(cluster_loop.stop)
            # Viewers' requests passed to other nodes (api/video.py): connections kept.
            peers = await stack.enter_async_context(
                httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None))
            )

        feed = ChangeFeed(store)
        feed_loop = supervisor.task("change-feed", feed.run)
        stack.push_async_callback(feed_loop.stop)
        wakers = [feed.nudge]

        def changed() -> None:
            """Alerts changed (any thread): wake the SSE feed and the relay now."""
            for wake in wakers:
                wake()

        profiles = ProfileBook(settings.profiles_dir, registry)
        influx = InfluxQueryClient(settings.influx)
        stack.push_async_callback(influx.aclose)
        ingest: IngestService | None = None
        engine: AlertEngine | None = None
        if self._run_ingest:
            book = load_rules(settings.rules_path, registry)
            alert_metrics = AlertMetrics(self.metrics)
            records = RecordQueue(settings.alerts.queue_max, alert_metrics)
            ingest = IngestService(
                settings,
                registry,
                on_records=records.put,
                metrics=IngestMetrics(self.metrics),
                on_connection=records.connection,
                supervisor=supervisor,
            )
            count = settings.cluster.partitions
            engine = AlertEngine(
                settings.alerts,
                registry,
                book,
                store,
                alert_metrics,
                records,
                points=ingest.write_points,
                on_change=changed,
                partition_of=(
                    functools.partial(partitions.partition_of, count=count)
                    if cluster.clustered
                    else None
                ),
            )
            engine.start(supervisor)
            # Stopped after ingest (callbacks run in reverse), so ingest's last records count.
            stack.push_async_callback(asyncio.to_thread, engine.stop)
            ingest.__enter__()
            # Stopping flushes and acknowledges what was taken: off the event loop.
            stack.push_async_callback(asyncio.to_thread, ingest.close)
            if cluster.clustered:
                cluster.claim(self._partition_claim(ingest, engine))
            publish: Callable[[str, bytes], bool] = ingest.publish
            if settings.mqtt.relay_username or cluster.clustered:
                publish = self._relay_connection(stack)
            # One node relays: with several, each change would go out once per node.
            relay = AlertRelay(store, publish, active=lambda: cluster.mine(RELAY_KEY))
            cluster.add_listener(lambda members: relay.wake())
            relay_loop = relay.start(supervisor)
            stack.push_async_callback(asyncio.to_thread, relay_loop.stop)
            wakers.append(relay.wake)

        pool: CameraPool | None = None
        monitor: CameraMonitor | None = None
        if ingest is not None and engine is not None and settings.cameras.workers > 0:
            pool = await stack.enter_async_context(
                CameraPool(
                    settings.cameras,
                    settings.inventory_path,
                    # Several nodes: each pulls the cameras it owns (claimed below).
                    streams=[] if cluster.clustered else list(registry.streams.values()),
                    analytics=settings.analytics if settings.analytics.enabled else None,
                    profiles_dir=settings.profiles_dir,
                    evidence_dir=settings.evidence_dir,
                    state_dir=settings.data_dir / "analytics",
                    log_level=self._log_level,
                    supervisor=supervisor,
                )
            )
            still_offline = await asyncio.to_thread(
                store.devices_with_unresolved, [camera_watch.KIND], rule=camera_watch.RULE
            )
            monitor = CameraMonitor(
                settings.cameras,
                registry,
                pool,
                ingest.write_points,
                engine.submit_signals,
                offline_at_start=still_offline,
                owns=lambda camera_id: cluster.mine(camera_key(camera_id)),
                node=settings.cluster.node_id,
            )
            if cluster.clustered and registry.streams:
                cluster.claim(self._pull_claim(pool, monitor))
            monitor_loop = supervisor.task("camera-health", monitor.run)
            stack.push_async_callback(monitor_loop.stop)
            if settings.analytics.enabled:
                pruner = EvidencePruner(
                    EvidenceStore(settings.evidence_dir), settings.analytics.evidence
                )
                prune_loop = supervisor.task("evidence-prune", pruner.run)
                stack.push_async_callback(prune_loop.stop)
                collector = FindingCollector(
                    pool, engine.submit_signals, settings.analytics.signal_poll_s
                )
                collector_loop = supervisor.task("camera-analytics", collector.run)
                stack.push_async_callback(collector_loop.stop)

        # Leaving runs this first: a node that is stopping takes nothing more over.
        stack.callback(cluster.stop_claiming)
        return AppState(
            settings=settings,
            registry=registry,
            influx=influx,
            ingest=ingest,
            alerts=store,
            tokens=tokens,
            sessions=sessions,
            feed=feed,
            changed=changed,
            supervisor=supervisor,
            metrics=self.metrics,
            profiles=profiles,
            cameras=pool,
            camera_monitor=monitor,
            cluster=cluster,
            peers=peers,
        )

    def _membership(self) -> Membership:
        settings = self._settings
        config = settings.cluster
        me = Member(config.node_id or "local", settings.node_api_url)
        return Membership(
            me,
            settings.alerts.store_url if config.node_id is not None else None,
            heartbeat_s=config.heartbeat_s,
            dead_after_s=config.dead_after_s,
            metrics=self.metrics,
        )

    def _partition_claim(self, ingest: IngestService, engine: AlertEngine) -> Claim:
        """The partitions of the sites this node ingests: the rules first take the progress
        the last owner stored, then ingest connects to the partition's session; handing over,
        ingest stops taking, drains, and the rules store their progress for the next owner."""
        count = self._settings.cluster.partitions

        def start(key: str) -> None:
            partition = int(key)
            engine.take_partition(partition)
            ingest.start_partition(partition)

        def stop(key: str) -> None:
            partition = int(key)
            ingest.stop_partition(partition, timeout=HANDOVER_S)
            if not engine.give_up_partition(partition, timeout=HANDOVER_S):
                log.error("partition %d handed over before its rule progress was stored", partition)

        return Claim("partition", [str(p) for p in range(count)], start, stop)

    def _pull_claim(self, pool: CameraPool, monitor: CameraMonitor) -> Claim:
        """The cameras pulled over RTSP that this node owns: one node pulls each, and another
        takes it over when that node dies. Its key is the camera's, so the node that pulls a
        camera is the one WHEP and snapshot requests for it go to."""
        loop = asyncio.get_running_loop()
        streams = self._registry.streams

        def start(camera_id: str) -> None:
            asyncio.run_coroutine_threadsafe(pool.pull(streams[camera_id]), loop).result(30)
            loop.call_soon_threadsafe(monitor.expect, camera_id)  # the monitor lives on the loop

        def stop(camera_id: str) -> None:
            asyncio.run_coroutine_threadsafe(pool.unpull(camera_id), loop).result(30)

        return Claim(CAMERA_CLAIM, sorted(streams), start, stop)

    def _relay_connection(self, stack: AsyncExitStack) -> Callable[[str, bytes], bool]:
        """A publishing connection of the relay's own: under the relay's account, which may
        write alerts and nothing else, while ingest's account may only read what devices send;
        and with several nodes, whose ingest connections come and go with their partitions."""
        mqtt = self._settings.mqtt
        node = self._settings.cluster.node_id
        if mqtt.relay_username:
            update = {
                "username": mqtt.relay_username,
                "password": mqtt.relay_password,
                "client_id": mqtt.relay_username,
            }
        else:
            update = {"client_id": f"{mqtt.client_id}-relay-{node}"}
        own = mqtt.model_copy(update=update)
        connection = MqttCollector(own, lambda message: None, subscribe=False)
        connection.start()
        stack.push_async_callback(asyncio.to_thread, connection.stop)
        return connection.publish


def create_app(
    settings: Settings,
    registry: Registry,
    *,
    run_ingest: bool = True,
    log_level: str = "warning",
) -> FastAPI:
    """The HTTP API with the whole service behind it (`run_ingest=False`: the API alone)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with Mingliang(
            settings, registry, run_ingest=run_ingest, log_level=log_level
        ) as state:
            app.state.mingliang = state
            yield

    app = FastAPI(
        title="Mingliang",
        summary="Ingestion and analytics backend for sunshine kitchens and street cameras",
        version="0.3.0",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (health, directory, telemetry, alerts, rejections, video, session, audit_api):
        app.include_router(module.router)
    console.install(app)
    return app
