"""Every alert change, published on MQTT `v1/alerts/{site_id}/{kind}` for integrations.

The store's change log is the source of truth: the relay tails it and remembers (in the store)
the last change it published, so changes made by any process, including API actions, go out
at least once and in order, also across restarts. A change is counted as published when the
broker acknowledged it (QoS 1).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from alerts.changes import change_json
from alerts.store import AlertStore, Change
from service.supervisor import Supervisor, ThreadLoop

RELAY_STATE_KEY = "relay.mqtt"
_BATCH = 500


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

    def start(self, supervisor: Supervisor) -> ThreadLoop:
        return supervisor.thread("alert-relay", self.run, stop=self.stop)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wake(self) -> None:
        """Something changed; publish now rather than at the next poll. Any thread may call."""
        self._wake.set()

    def run(self) -> None:
        """Until stopped; a database error ends the run and the supervisor restarts it."""
        while not self._stop.is_set():
            self._relay()
            self._wake.wait(self._poll_s)
            self._wake.clear()

    def _relay(self) -> None:
        while not self._stop.is_set():
            changes = self._store.changes_since(self._last, limit=_BATCH)
            if not changes:
                return
            for change in changes:
                payload = change_json(change).encode()
                if not self._publish(change_topic(change), payload):
                    return  # broker away: try again from this change later
                self._last = change.seq
            self._store.save_rule_states({RELAY_STATE_KEY: {"seq": self._last}})
