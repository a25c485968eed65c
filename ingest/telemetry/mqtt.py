"""The MQTT edge: a paho-mqtt 2.x client with a persistent MQTT 5 session and manual acks.

Messages become frozen `MqttMessage`s at once. A message is acknowledged only when the
pipeline says it is durable; acknowledgements for a connection that has since dropped are not
sent, because the broker redelivers those messages on the new connection and a stale packet id
could acknowledge a different message.

With `mqtt.tls_ca` set the connection uses TLS, trusting that CA alone. A connection that fails
(a certificate that does not verify, a broker that is down) is logged, once per new reason,
and retried like any other: it never stops the service.
"""

from __future__ import annotations

import logging
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from config.settings import MqttSettings
from devices.pki import client_context
from ingest.telemetry.batcher import Ack

log = logging.getLogger(__name__)

SUBSCRIPTION = "v1/sites/#"


@dataclass(frozen=True, slots=True)
class MqttMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    received_ns: int
    ack: Ack | None  # None for QoS 0: nothing to acknowledge


class MqttCollector:
    """Connects, subscribes and hands every message to `handler` on paho's network thread."""

    def __init__(
        self,
        settings: MqttSettings,
        handler: Callable[[MqttMessage], None],
        on_connection: Callable[[bool], None] = lambda up: None,
        *,
        subscribe: bool = True,
        topics: Sequence[str] = (SUBSCRIPTION,),
        forget: Sequence[str] = (),
        link: int = 0,
    ) -> None:
        """`subscribe=False`: a connection that only publishes (the alert relay's own).
        `topics`: what to subscribe to (one partition's sites); `forget`: what a resumed
        session may still be subscribed to from before and must no longer get (the sites of
        other partitions, after `cluster.partitions` changed); `link` names this connection
        in the acknowledgements of its messages, when ingest has several.

        Raises `devices.pki.TlsError` if `settings.tls_ca` cannot be read."""
        self._settings = settings
        self._subscribe = subscribe
        self._topics = tuple(topics)
        self._forget = tuple(t for t in forget if t not in self._topics)
        self._link = link
        self._handler = handler
        self._on_connection = on_connection
        self._generation = 0
        self._connected = threading.Event()
        self._client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls_ca is not None:
            self._client.tls_set_context(client_context(settings.tls_ca))
        self._failure: str | None = None  # the last connection failure logged
        self._client.reconnect_delay_set(1, max(1, int(settings.reconnect_max_s)))
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # Only a subscriber has anything for the broker to keep while it is away.
        props.SessionExpiryInterval = self._settings.session_expiry_s if self._subscribe else 0
        props.ReceiveMaximum = self._settings.receive_maximum
        s = self._settings
        # connect_async: a broker that is down at start is retried by the loop, not fatal.
        self._client.connect_async(
            s.host,
            s.port,
            keepalive=s.keepalive_s,
            clean_start=not self._subscribe,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._connected.clear()  # a disconnect we asked for is not worth a warning
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, timeout: float = 10.0) -> bool:
        """Publish at QoS 1 on ingest's connection; True once the broker acknowledged it."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):  # not queued: the connection just dropped
            return False
        return bool(info.is_published())

    def ack(self, acks: Sequence[Ack]) -> int:
        """Acknowledge messages of the current connection; returns how many were sent."""
        sent = 0
        generation = self._generation
        for item in acks:
            if item.generation == generation and item.qos > 0 and item.link == self._link:
                self._client.ack(item.mid, item.qos)
                sent += 1
        return sent

    # -- paho callbacks (network thread) ---------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error(
                "broker %s:%s refused the connection: %s",
                self._settings.host,
                self._settings.port,
                reason,
            )
            return
        self._failure = None
        self._generation += 1
        if not self._subscribe or not self._topics:
            self._connected.set()
            self._on_connection(True)
            return
        group = self._settings.shared_group
        topics = [f"$share/{group}/{t}" if group else t for t in self._topics]
        # retainHandling=1: retained statuses only when the subscription is new, not on every
        # reconnect of a session that already has it.
        options = SubscribeOptions(qos=1, retainHandling=1)
        if flags.session_present and self._forget:
            # The broker keeps a session's subscriptions: those of an earlier layout would
            # bring this partition other partitions' sites too (processed twice).
            client.unsubscribe(list(self._forget))
        client.subscribe([(topic, options) for topic in topics])
        log.info(
            "connected to %s:%s as %s (session %s)",
            self._settings.host,
            self._settings.port,
            self._settings.client_id,
            "resumed" if flags.session_present else "new",
        )

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError:` and passes no exception: take it there.
        exc = sys.exc_info()[1]
        reason = str(exc) if exc is not None else "unknown reason"
        if reason == self._failure:
            return  # the same failure at every retry: one line per reason is enough
        self._failure = reason
        where = f"{self._settings.host}:{self._settings.port}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            log.error(
                "TLS with the broker at %s failed: %s; mqtt.tls_ca must name the CA that signed "
                "the broker's certificate, and that certificate must name %r",
                where,
                reason,
                self._settings.host,
            )
        elif isinstance(exc, ssl.SSLError):
            log.error("TLS with the broker at %s failed: %s (is it a TLS listener?)", where, reason)
        else:
            log.warning("cannot connect to the broker at %s: %s; retrying", where, reason)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # Connected means subscribed: only then does the broker keep messages for us.
        failed = [r for r in reasons if r.is_failure]
        if failed:
            log.error("the broker refused the subscription to %s: %s", self._topics, failed)
            return
        self._connected.set()
        self._on_connection(True)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.is_set():
            log.warning("disconnected from the broker: %s", reason)
        self._connected.clear()
        self._on_connection(False)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        ack = Ack(self._generation, msg.mid, msg.qos, self._link) if msg.qos > 0 else None
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # the broker should refuse these; be safe anyway
            topic = repr(msg._topic)
        self._handler(
            MqttMessage(
                topic=topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=msg.retain,
                dup=bool(msg.dup),
                received_ns=time.time_ns(),
                ack=ack,
            )
        )
