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
        *,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        """`publish(topic, payload)` returns True once the broker has the message.

        `active()`: whether this node is the one that relays. With several nodes only one
        does (the relay's owner among the cluster's members); a node that takes over goes on
        from where the store says the last one stopped."""
        self._store = store
        self._publish = publish
        self._poll_s = poll_s
        self._active = active
        self._standby = True  # the position is read when the relay (re)starts relaying
        self._last = 0
        self._wake = threading.Event()
        self._stop = threading.Event()

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

    @property
    def relaying(self) -> bool:
        return not self._standby

    def _relay(self) -> None:
        if not self._active():
            self._standby = True
            return
        if self._standby:
            state = self._store.load_rule_states().get(RELAY_STATE_KEY)
            self._last = int(state["seq"]) if isinstance(state, dict) else self._store.last_seq()
            self._standby = False
        while not self._stop.is_set() and self._active():
            changes = self._store.changes_since(self._last, limit=_BATCH)
            if not changes:
                return
            for change in changes:
                payload = change_json(change).encode()
                if not self._publish(change_topic(change), payload):
                    return  # broker away: try again from this change later
                self._last = change.seq
            self._store.save_rule_states({RELAY_STATE_KEY: {"seq": self._last}})
