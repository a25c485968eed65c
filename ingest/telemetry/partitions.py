"""The sites split into a fixed number of partitions, each ingested by one node at a time.

A partition is a persistent MQTT session of its own (client id `<mqtt.client_id>-pNN`)
subscribed to its sites' topics. The broker keeps the session, and the messages queued for it,
whoever holds it: when the node that owned a partition dies, the node that takes it over
connects under the same client id and receives what the broker acknowledged to the devices
meanwhile. A device's messages always go to the partition of its site, so its rule state lives
in one place.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from config.settings import MqttSettings


def partition_of(site_id: str, count: int) -> int:
    digest = hashlib.blake2b(site_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def sites_of(partition: int, site_ids: Iterable[str], count: int) -> list[str]:
    return sorted(s for s in site_ids if partition_of(s, count) == partition)


def topics(site_ids: Iterable[str]) -> list[str]:
    return [f"v1/sites/{site_id}/#" for site_id in site_ids]


def partition_settings(mqtt: MqttSettings, partition: int, count: int) -> MqttSettings:
    """The connection of one partition: its own client id (the session the broker keeps), and
    a share of the Receive Maximum, so that a node holding every partition has no more
    messages in flight than one connection would."""
    suffix = f"-p{partition:02d}"
    update: dict[str, object] = {
        "client_id": f"{mqtt.client_id}{suffix}",
        "receive_maximum": max(1, math.ceil(mqtt.receive_maximum / count)),
    }
    if mqtt.username:
        # Brokers that take the user name for the client id need an account per partition.
        update["username"] = f"{mqtt.username}{suffix}"
    return mqtt.model_copy(update=update)
