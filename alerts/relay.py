"""Every alert change, published on MQTT `v1/alerts/{site_id}/{kind}` for integrations.

The store's change log is the source of truth: the relay tails it and remembers (in the store)
the last change it published, so changes made by any process, including API actions, go out
at least once and in order, also across restarts. A change is counted as published when the
broker acknowledged it (QoS 1).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from alerts.store import AlertStore, Change

log = logging.getLogger(__name__)

RELAY_STATE_KEY = "relay.mqtt"
_BATCH = 500


def change_payload(change: Change) -> dict[str, Any]:
    """A change as JSON-able data: what SSE clients and MQTT integrations receive."""
    return {
        "seq": change.seq,
        "action": change.action.value,
        "actor": change.actor,
        "at_ms": change.at_ms,
        "note": change.note,
        "alert": change.alert.to_json(),
    }


def change_topic(change: Change) -> str:
    return f"v1/alerts/{change.site_id}/{change.kind}"


class AlertRelay:
    def __init__(
        self,
        store: AlertStore,
        publish: Callable[[str, bytes], bool],
        poll_s: float = 1.0,
    ) -> None:
        """`publish(topic, payload)` returns True once the broker has the message."""
        self._store = store
        self._publish = publish
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        state = store.load_rule_states().get(RELAY_STATE_KEY)
        self._last = int(state["seq"]) if isinstance(state, dict) else store.last_seq()
        self._thread = threading.Thread(target=self._run, name="alert-relay", daemon=True)

    def __enter__(self) -> AlertRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def wake(self) -> None:
        """Something changed; publish now rather than at the next poll."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            try:
                self._relay()
            except Exception:  # a database hiccup must not end the relay; it resumes
                log.exception("alert relay: will retry")

    def _relay(self) -> None:
        while not self._stop.is_set():
            changes = self._store.changes_since(self._last, limit=_BATCH)
            if not changes:
                return
            for change in changes:
                payload = json.dumps(change_payload(change), ensure_ascii=False).encode()
                if not self._publish(change_topic(change), payload):
                    return  # broker away: try again from this change later
                self._last = change.seq
            self._store.save_rule_states({RELAY_STATE_KEY: {"seq": self._last}})
