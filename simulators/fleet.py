"""The MQTT side of the simulator: every kitchen gateway and street-camera link on one thread.

A kitchen is one MQTT connection, its gateway's (client id = the gateway's device id, Last
Will = retained `offline` on the gateway's status topic), publishing for all the kitchen's
devices on their own topics, as real gateways do. Street cameras share a few connections.

Hundreds of connections run from a single thread: paho's external-loop API (`loop_read`,
`loop_write`, `loop_misc`, and the `on_socket_*` callbacks that say when a socket wants
writing) driven by one `selectors` loop. A thread per client would spend more time switching
than publishing at district scale, and would make the event order (and tests) less predictable.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from config.settings import IngestSettings, SimulatorSettings
from devices.models import Device, SiteKind
from devices.pki import client_context
from devices.registry import Registry
from simulators.cadence import Cadence
from simulators.clock import SimClock
from simulators.faults import FaultPlan
from simulators.kitchen import KitchenModel
from simulators.malformed import bad_messages
from simulators.payloads import (
    WILL_PAYLOAD,
    Channel,
    PayloadForm,
    array_payloads,
    device_topic,
    event_payload,
    form_for,
    live_payload,
    status_payload,
)
from simulators.street import street_models
from simulators.values import DeviceModel, Values

log = logging.getLogger(__name__)

_MAX_BATCH = 2000  # publications per loop turn, so that acknowledgements keep being read
_MAX_WAIT_S = 0.1  # longest select(): how soon a stop request is noticed
_RECONNECT_MAX_S = 30.0
_SHUTDOWN_S = 5.0
_CONNECT_WAIT_S = 2.0


class FleetError(Exception):
    """The fleet could not run (broker unreachable, ...); the message says why."""


class MessageKind(StrEnum):
    TELEMETRY = "telemetry"  # a kitchen device's live reading
    BACKLOG = "backlog"  # readings a gateway buffered while offline, uploaded as an array
    HEARTBEAT = "heartbeat"  # a street camera's health
    STATUS = "status"  # a gateway's retained online/offline
    EVENT = "event"  # a detector's alarm
    MALFORMED = "malformed"  # a bad message of the `malformed` fault


@dataclass(frozen=True)
class FleetStats:
    clients: int
    connected: int
    published: int  # handed to paho (QoS 1)
    acked: int  # PUBACK received from the broker
    dropped: int  # not published: paho's queue full, or a street link down
    buffered: int  # readings held by offline gateways right now
    suppressed: int  # readings of devices silenced by a fault
    real_elapsed_s: float
    sim_elapsed_s: float
    by_kind: dict[str, int]
    by_type: dict[str, int]

    @property
    def unacked(self) -> int:
        return self.published - self.acked


@dataclass(eq=False)
class _Unit:
    """One simulated device and its publishing state."""

    device: Device
    model: DeviceModel
    link: _Link
    topic: str
    form: PayloadForm
    kind: MessageKind
    last_ts_ms: int = 0
    alarm: bool = False
    bad_turn: int = 0


@dataclass(eq=False)
class _Link:
    """One MQTT connection: a kitchen's gateway, or a share of the street cameras."""

    client_id: str
    site_id: str | None
    gateway: Device | None
    client: mqtt.Client = field(init=False)
    units: list[_Unit] = field(default_factory=list)
    started: bool = False
    connecting: bool = False
    connected: bool = False
    silenced: bool = False  # dropped by a `silent` fault; no reconnection until it ends
    retry_at: float = 0.0
    backoff_s: float = 1.0
    inflight: set[int] = field(default_factory=set)
    # What a gateway keeps while offline, per device, uploaded as arrays on reconnection.
    backlog: dict[str, deque[tuple[int, Values]]] = field(default_factory=dict)


@dataclass(eq=False)
class _Schedule:
    cadence: Cadence
    units: list[_Unit]
    cursor: int = 0


# The alert taxonomy's kind for a detector's own alarm (analytics/events.py).
ALARM_KINDS = {"gas_detector": "gas_leak", "smoke_detector": "smoke"}


def raise_nofile_limit(needed: int) -> int:
    """Raise the soft limit on open files to the hard limit if `needed` exceeds it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    target = hard if hard != resource.RLIM_INFINITY else needed
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log.warning(
            "open files limited to %d, %d connections need about %d", target, needed, needed
        )
    return target


class Fleet:
    """Simulated kitchens and street cameras publishing to an MQTT broker.

    `sites` selects kitchens (and street grids) by id; None means every kitchen. `street`
    adds every street camera. Use `run(stop)` on a thread of your own, or `start()`/`stop()`
    (or `with Fleet(...) as fleet:`) to run it on a background thread. With `tls_ca`, every
    connection uses TLS, trusting that CA alone (`devices.pki.TlsError` if it cannot be read).
    """

    def __init__(
        self,
        registry: Registry,
        settings: SimulatorSettings,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        sites: Collection[str] | None = None,
        street: bool = True,
        username: str | None = None,
        password: str | None = None,
        credentials: Mapping[str, str] | None = None,
        tls_ca: Path | None = None,
        keepalive_s: int = 30,
        limits: IngestSettings | None = None,
        sim_start: float | None = None,
        client_prefix: str = "sim",
        backlog_max: int = 20_000,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.host, self.port = host, port
        self.plan = FaultPlan.build(settings.faults, registry, settings.seed)
        self._username, self._password = username, password
        # Each device its own broker account (user name = device id = client id): a kitchen
        # connects as its gateway, every street camera on a connection of its own.
        self._credentials = credentials
        # One context for every link: the CA is read once, not once per connection.
        self._tls = client_context(tls_ca) if tls_ca is not None else None
        self._keepalive_s = keepalive_s
        self._max_payload_bytes = limits.max_payload_bytes if limits else 65536
        self._max_readings = limits.max_readings_per_message if limits else 1000
        self._max_past_s = limits.max_past_s if limits else 2_592_000
        self._max_future_s = limits.max_future_s if limits else 300
        self._sim_start = sim_start
        self._backlog_max = backlog_max

        kitchens, grids = self._select(sites, street)
        self._links: list[_Link] = []
        kitchen_units = self._kitchen_links(kitchens)
        street_units = self._street_links(grids, client_prefix)
        self._units = {u.device.device_id: u for u in (*kitchen_units, *street_units)}
        speed = settings.speed
        self._schedules = [
            _Schedule(Cadence(len(units), interval / speed), units)
            for units, interval in (
                (kitchen_units, settings.interval_s),
                (street_units, settings.street_heartbeat_s),
            )
            if units
        ]
        self._fault_links = [
            link for link in self._links if link.site_id in self.plan.offline_sites
        ]
        for fault in self.plan.faults:
            if not any(d in self._units for d in fault.devices):
                log.warning("fault %s: none of its devices is simulated", fault.spec)

        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._ran = False
        self._closing = False
        self._sel: selectors.BaseSelector | None = None
        self._down: set[_Link] = set(self._links)
        self._t0 = 0.0
        self._t_end: float | None = None
        self._wall0_ms = 0.0
        self._clock = SimClock(0.0, speed)
        self._published = self._acked = self._dropped = self._suppressed = self._buffered = 0
        self._by_kind: Counter[str] = Counter()
        self._by_type: Counter[str] = Counter()
        self._last_notify = 0.0

    # -- what to simulate ----------------------------------------------------------------------

    def _select(self, sites: Collection[str] | None, street: bool) -> tuple[list[str], list[str]]:
        all_kitchens = sorted(s.site_id for s in self.registry.sites_of_kind(SiteKind.KITCHEN))
        all_grids = sorted(s.site_id for s in self.registry.sites_of_kind(SiteKind.STREET_GRID))
        if sites is None:
            kitchens, grids = all_kitchens, []
        else:
            unknown = sorted(set(sites) - set(self.registry.sites))
            if unknown:
                raise ValueError(f"unknown site(s): {', '.join(unknown[:10])}")
            kitchens = [s for s in all_kitchens if s in sites]
            grids = [s for s in all_grids if s in sites]
        return kitchens, (all_grids if street else grids)

    def _kitchen_links(self, kitchens: Sequence[str]) -> list[_Unit]:
        per_kitchen: list[list[_Unit]] = []
        for site_id in kitchens:
            model = KitchenModel.from_registry(self.registry, site_id, self.settings.seed)
            for device in model.unmodelled:
                log.warning("%s: no model for device type %r", device.device_id, device.type)
            gateway = next(
                (d for d in self.registry.devices_at(site_id) if d.type == "gateway"), None
            )
            link = _Link(gateway.device_id if gateway else f"sim-{site_id}", site_id, gateway)
            for device_id, device_model in model.models.items():
                device = self.registry.devices[device_id]
                unit = _Unit(
                    device,
                    device_model,
                    link,
                    device_topic(device),
                    form_for(device),
                    MessageKind.TELEMETRY,
                )
                link.units.append(unit)
                link.backlog[device_id] = deque(maxlen=self._backlog_max)
            self._add_link(link)
            per_kitchen.append(link.units)
        # Interleave the kitchens so that the first round reaches every kitchen early on.
        width = max((len(u) for u in per_kitchen), default=0)
        return [units[i] for i in range(width) for units in per_kitchen if i < len(units)]

    def _street_links(self, grids: Sequence[str], prefix: str) -> list[_Unit]:
        models = street_models(self.registry, self.settings.seed, grids)
        if not models:
            return []
        if self._credentials is not None:
            links = [_Link(device_id, None, None) for device_id in models]
        else:
            count = min(self.settings.street_connections, len(models))
            links = [_Link(f"{prefix}-street-{i}", None, None) for i in range(count)]
        count = len(links)
        units = []
        for i, model in enumerate(models.values()):
            link = links[i % count]
            unit = _Unit(
                model.device,
                model,
                link,
                device_topic(model.device),
                PayloadForm.OBJECT,
                MessageKind.HEARTBEAT,
            )
            link.units.append(unit)
            units.append(unit)
        for link in links:
            self._add_link(link)
        return units

    def _add_link(self, link: _Link) -> None:
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=link.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
            userdata=link,
        )
        if link.gateway is not None:
            client.will_set(
                device_topic(link.gateway, Channel.STATUS), WILL_PAYLOAD, qos=1, retain=True
            )
        if self._credentials is not None:
            password = self._credentials.get(link.client_id)
            if password is None:
                log.error("%s has no broker credential: the broker will refuse it", link.client_id)
            client.username_pw_set(link.client_id, password)
        elif self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.max_inflight_messages_set(100)
        client.max_queued_messages_set(50_000)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        link.client = client
        self._links.append(link)

    # -- public API ----------------------------------------------------------------------------

    @property
    def device_ids(self) -> list[str]:
        """The simulated devices, in publishing order."""
        return list(self._units)

    @property
    def site_ids(self) -> list[str]:
        """The kitchens simulated (one connection each)."""
        return [link.site_id for link in self._links if link.site_id is not None]

    def stats(self) -> FleetStats:
        end = self._t_end if self._t_end is not None else time.monotonic()
        elapsed = end - self._t0 if self._ran else 0.0
        with self._lock:
            return FleetStats(
                clients=len(self._links),
                connected=sum(1 for link in self._links if link.connected),
                published=self._published,
                acked=self._acked,
                dropped=self._dropped,
                buffered=self._buffered,
                suppressed=self._suppressed,
                real_elapsed_s=elapsed,
                sim_elapsed_s=self._clock.sim_elapsed(elapsed),
                by_kind=dict(self._by_kind),
                by_type=dict(self._by_type),
            )

    def wait_for(self, predicate: Callable[[FleetStats], bool], timeout: float) -> bool:
        """Wait until `predicate(stats())` holds; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self.stats()):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._thread is not None and not self._thread.is_alive()):
                    return predicate(self.stats())
                self._changed.wait(min(remaining, 0.5))
        return True

    def start(self, duration_s: float | None = None) -> Fleet:
        """Run on a background thread until `stop()` (or for `duration_s` real seconds)."""
        if self._thread is not None:
            raise RuntimeError("this fleet was started already")
        self._thread = threading.Thread(
            target=self._run_thread, args=(duration_s,), name="simulator-fleet", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 20.0) -> FleetStats:
        """Stop cleanly (status `offline`, DISCONNECT); raise FleetError if the run failed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise FleetError(f"the fleet did not stop within {timeout} s")
        if self._error is not None:
            raise FleetError(f"the fleet failed: {self._error}") from self._error
        return self.stats()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        return self._error

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run_thread(self, duration_s: float | None) -> None:
        try:
            self.run(self._stop, duration_s)
        except BaseException as exc:  # reported by stop(); a thread has nowhere else to raise
            log.exception("fleet failed")
            self._error = exc
        finally:
            self._notify(force=True)

    # -- the event loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, duration_s: float | None = None) -> None:
        """Publish until `stop` is set (or for `duration_s` real seconds), then shut down."""
        stop = stop if stop is not None else self._stop
        if self._ran:
            raise RuntimeError("a Fleet runs once; make a new one")
        raise_nofile_limit(len(self._links) + 64)
        self._sel = selectors.DefaultSelector()
        self._ran = True
        try:
            self._connect_all()
            # The simulation starts once the links are up: readings taken before would only
            # be buffered (kitchens) or lost (street cameras).
            self._t0 = time.monotonic()
            self._wall0_ms = time.time() * 1000.0
            self._clock = SimClock(
                self._sim_start if self._sim_start is not None else time.time(),
                self.settings.speed,
            )
            next_misc = self._t0 + 1.0
            while not stop.is_set():
                now = time.monotonic()
                elapsed = now - self._t0
                if duration_s is not None and elapsed >= duration_s:
                    break
                self._step_links(now, elapsed)
                more = self._publish_due(elapsed)
                wait = 0.0 if more else min(_MAX_WAIT_S, max(0.0, self._next_due() - elapsed))
                self._poll(wait)
                if now >= next_misc:
                    next_misc = now + 1.0
                    for link in self._links:
                        if link.client.socket() is not None:
                            link.client.loop_misc()  # keepalive pings
                self._notify()
            self._shutdown()
        finally:
            self._t_end = time.monotonic()
            for link in self._links:
                sock = link.client.socket()
                if sock is not None:
                    with contextlib.suppress(KeyError, ValueError):
                        self._sel.unregister(sock)
                    sock.close()
            self._sel.close()

    def _connect_all(self) -> None:
        self._t0 = time.monotonic()
        self._wall0_ms = time.time() * 1000.0
        if not self._links:
            return
        problem = self._open(self._links[0], self._t0)
        if problem is not None:
            raise FleetError(
                f"cannot connect to the MQTT broker at {self.host}:{self.port}: {problem}"
            )
        for link in self._links[1:]:
            self._open(link, self._t0)
        deadline = self._t0 + _CONNECT_WAIT_S
        while time.monotonic() < deadline and any(link.connecting for link in self._links):
            self._poll(0.05)

    def _notify(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_notify >= 0.05:
            self._last_notify = now
            with self._changed:
                self._changed.notify_all()

    def _poll(self, timeout: float) -> None:
        assert self._sel is not None
        for key, mask in self._sel.select(timeout):
            client: mqtt.Client = key.data.client
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE and client.want_write():
                client.loop_write()

    def _step_links(self, now: float, elapsed: float) -> None:
        sim_elapsed = self._clock.sim_elapsed(elapsed)
        for link in self._fault_links:
            assert link.site_id is not None
            down = self.plan.offline(link.site_id, sim_elapsed)
            if down and not link.silenced and link.started and not link.connecting:
                link.silenced = True
                if link.connected:
                    self._abort(link)
            elif not down and link.silenced:
                link.silenced = False
                link.retry_at = now
        if self._down:
            for link in list(self._down):
                if not (link.silenced or link.connecting or now < link.retry_at):
                    self._open(link, now)

    def _open(self, link: _Link, now: float) -> str | None:
        """Start connecting `link`; the reason it failed, or None."""
        try:
            if link.started:
                link.client.reconnect()
            else:
                link.started = True
                link.client.connect(self.host, self.port, self._keepalive_s)
        except OSError as exc:
            link.retry_at = now + link.backoff_s
            if link.backoff_s == 1.0:
                log.warning(
                    "%s: cannot connect to %s:%d: %s", link.client_id, self.host, self.port, exc
                )
            link.backoff_s = min(_RECONNECT_MAX_S, link.backoff_s * 2)
            return str(exc)
        link.connecting = True
        return None

    def _abort(self, link: _Link) -> None:
        """Drop the connection without DISCONNECT, like a power cut: the broker sends the Will."""
        link.connected = link.connecting = False
        self._down.add(link)
        sock = link.client.socket()
        if not isinstance(sock, socket.socket):  # ssl.SSLSocket is one too
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        # paho reads the end of the stream (after anything still buffered), closes the socket
        # and reports the loss through on_disconnect.
        for _ in range(10_000):
            if link.client.socket() is None:
                break
            link.client.loop_read()

    def _shutdown(self) -> None:
        self._closing = True
        for link in self._links:
            if link.connected and link.gateway is not None:
                # A clean DISCONNECT does not fire the Will: say so, or the retained status
                # would claim a stopped simulator's gateways are online.
                self._publish(
                    link,
                    device_topic(link.gateway, Channel.STATUS),
                    status_payload(False, self._wall_ms(time.monotonic() - self._t0)),
                    MessageKind.STATUS,
                    retain=True,
                )
        deadline = time.monotonic() + _SHUTDOWN_S
        while time.monotonic() < deadline and any(
            link.connected and link.inflight for link in self._links
        ):
            self._poll(0.05)
        for link in self._links:
            if link.client.socket() is not None:
                link.client.disconnect()
        while time.monotonic() < deadline and any(
            link.client.socket() is not None for link in self._links
        ):
            self._poll(0.05)

    # -- publishing ----------------------------------------------------------------------------

    def _wall_ms(self, elapsed: float) -> int:
        return int(self._wall0_ms + elapsed * 1000.0)

    def _next_due(self) -> float:
        return min((s.cadence.slot_time(s.cursor) for s in self._schedules), default=_MAX_WAIT_S)

    def _publish_due(self, elapsed: float) -> bool:
        """Publish the readings due by `elapsed`; True if some are left for the next turn."""
        more = False
        for schedule in self._schedules:
            cadence, done = schedule.cadence, 0
            while cadence.slot_time(schedule.cursor) <= elapsed:
                if done >= _MAX_BATCH:
                    more = True
                    break
                unit = schedule.units[cadence.item(schedule.cursor)]
                schedule.cursor += 1
                done += 1
                self._sample(unit, elapsed)
        return more

    def _sample(self, unit: _Unit, elapsed: float) -> None:
        device = unit.device
        sim_elapsed = self._clock.sim_elapsed(elapsed)
        if self.plan.silent(device.device_id, sim_elapsed):
            with self._lock:
                self._suppressed += 1
            return
        values = self.plan.overlay(
            device, unit.model.values(self._clock.sim_time(elapsed)), sim_elapsed
        )
        # Strictly increasing per device: two readings never share a time stamp (and so a
        # point in InfluxDB), even at speeds where a device publishes every millisecond.
        ts_ms = max(self._wall_ms(elapsed), unit.last_ts_ms + 1)
        unit.last_ts_ms = ts_ms
        link = unit.link
        if not link.connected:
            if link.gateway is not None:
                backlog = link.backlog[device.device_id]
                with self._lock:
                    if len(backlog) == backlog.maxlen:
                        self._dropped += 1
                    else:
                        self._buffered += 1
                backlog.append((ts_ms, values))
            else:
                with self._lock:
                    self._dropped += 1
            return
        if self.plan.malformed(device.device_id, sim_elapsed):
            bad = bad_messages(
                self.registry,
                device,
                ts_ms,
                values=values,
                max_payload_bytes=self._max_payload_bytes,
                max_past_s=self._max_past_s,
                max_future_s=self._max_future_s,
            )
            message = bad[unit.bad_turn % len(bad)]
            unit.bad_turn += 1
            self._publish(link, message.topic, message.payload, MessageKind.MALFORMED, device.type)
            return
        payload = live_payload(device, unit.form, ts_ms, values)
        self._publish(link, unit.topic, payload, unit.kind, device.type)
        alarm = values.get("alarm")
        if isinstance(alarm, bool):
            if alarm and not unit.alarm:
                details = {k: v for k, v in values.items() if k != "alarm"}
                kind = ALARM_KINDS.get(device.type, "device_fault")
                self._publish(
                    link,
                    device_topic(device, Channel.EVENTS),
                    event_payload(ts_ms, kind, "critical", details),
                    MessageKind.EVENT,
                    device.type,
                )
            unit.alarm = alarm

    def _publish(
        self,
        link: _Link,
        topic: str,
        payload: bytes,
        kind: MessageKind,
        device_type: str | None = None,
        retain: bool = False,
    ) -> None:
        info = link.client.publish(topic, payload, qos=1, retain=retain)
        # NO_CONN: paho keeps a QoS 1 message and sends it after reconnecting.
        accepted = info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)
        if accepted:
            link.inflight.add(info.mid)
        with self._lock:
            if not accepted:
                self._dropped += 1
                return
            self._published += 1
            self._by_kind[kind.value] += 1
            if device_type is not None:
                self._by_type[device_type] += 1

    def _flush_backlog(self, link: _Link) -> None:
        for device_id, backlog in link.backlog.items():
            if not backlog:
                continue
            unit = self._units[device_id]
            readings = list(backlog)
            backlog.clear()
            with self._lock:
                self._buffered -= len(readings)
            for payload in array_payloads(readings, self._max_readings, self._max_payload_bytes):
                self._publish(link, unit.topic, payload, MessageKind.BACKLOG, unit.device.type)

    # -- paho callbacks (all on the loop's thread) ---------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        link: _Link,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        link.connecting = False
        if reason.is_failure:
            log.warning("%s: broker refused the connection: %s", link.client_id, reason)
            link.retry_at = time.monotonic() + link.backoff_s
            link.backoff_s = min(_RECONNECT_MAX_S, link.backoff_s * 2)
            return
        link.connected = True
        link.backoff_s = 1.0
        self._down.discard(link)
        if link.gateway is not None:
            self._publish(
                link,
                device_topic(link.gateway, Channel.STATUS),
                status_payload(True, self._wall_ms(time.monotonic() - self._t0)),
                MessageKind.STATUS,
                retain=True,
            )
        self._flush_backlog(link)
        self._notify(force=True)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        link: _Link,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Any,
    ) -> None:
        link.connected = link.connecting = False
        if not self._closing:
            self._down.add(link)
            if not link.silenced:
                log.warning("%s: connection lost (%s)", link.client_id, reason)
                link.retry_at = time.monotonic() + link.backoff_s
                link.backoff_s = min(_RECONNECT_MAX_S, link.backoff_s * 2)
        self._notify(force=True)

    def _on_publish(
        self, client: mqtt.Client, link: _Link, mid: int, reason: ReasonCode, properties: Any
    ) -> None:
        if mid in link.inflight:
            link.inflight.discard(mid)
            with self._lock:
                self._acked += 1

    def _on_socket_open(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        assert self._sel is not None
        self._sel.register(sock, selectors.EVENT_READ, link)

    def _on_socket_close(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        assert self._sel is not None
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _on_socket_register_write(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        assert self._sel is not None
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, link)

    def _on_socket_unregister_write(self, client: mqtt.Client, link: _Link, sock: Any) -> None:
        assert self._sel is not None
        with contextlib.suppress(KeyError, ValueError):
            self._sel.modify(sock, selectors.EVENT_READ, link)
