"""The alert engine's two queues: records bounded in records, signals bounded in signals."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from alerts.engine import RecordQueue, _Outbox
from alerts.metrics import AlertMetrics
from analytics.events import Clear, Raise, Severity, Source
from devices.registry import load_registry
from ingest.telemetry.contract import Reading
from tests.conftest import INVENTORY

REGISTRY = load_registry(INVENTORY)
FRIDGE = REGISTRY.devices["kitchen-0001-fridge-1"]


def records(n: int) -> list[Reading]:
    return [Reading(FRIDGE, i, {"temp_c": 1.0}) for i in range(n)]


def test_the_record_queue_is_bounded_in_records_not_batches() -> None:
    registry = CollectorRegistry()
    queue = RecordQueue(100, AlertMetrics(registry))
    queue.put(records(60))
    waiting = threading.Event()
    done = threading.Event()

    def second() -> None:
        waiting.set()
        queue.put(records(60))  # 120 > 100: waits, although it is only the second batch
        done.set()

    threading.Thread(target=second, daemon=True).start()
    assert waiting.wait(5) and not done.wait(0.2)
    assert len(queue) == 60
    assert registry.get_sample_value("mingliang_alerts_engine_queue_full_total") == 1
    queue.connection(True)  # a marker never waits
    assert isinstance(queue.get(1), list)
    assert done.wait(5) and len(queue) == 60


def test_a_batch_larger_than_the_bound_is_let_in_alone() -> None:
    queue = RecordQueue(100, AlertMetrics(CollectorRegistry()))
    queue.put(records(500))
    assert len(queue) == 500


def test_the_outbox_keeps_order_and_merges_consecutive_progress() -> None:
    outbox = _Outbox(10, AlertMetrics(CollectorRegistry()))
    source = Source("kitchen-0001", "kitchen-0001-fridge-1")
    up = Raise(source, "cold_chain_temperature", "fridge.too_warm", Severity.MAJOR, 1, {}, ())
    down = Clear(source, "cold_chain_temperature", "fridge.too_warm", 2, {})
    outbox.put_signals([up])
    outbox.put_progress({"a": {"x": 1}})
    outbox.put_progress({"a": {"x": 2}, "b": None})
    outbox.put_signals([down])
    taken = []
    while (item := outbox.peek(0)) is not None:
        taken.append(item)
        outbox.pop()
    assert taken == [up, {"a": {"x": 2}, "b": None}, down]
    outbox.close()
    assert outbox.peek(60) is None  # closed and empty: no wait
