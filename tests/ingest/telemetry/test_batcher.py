from __future__ import annotations

import threading
import time

import pytest

from ingest.telemetry.batcher import Ack, Batcher, BatcherClosed, Pending


def item(points: int, mid: int = 1) -> Pending:
    return Pending(received_ns=0, ack=Ack(1, mid, 1), lines=[f"m f={i} {i}" for i in range(points)])


def test_batch_is_due_when_full() -> None:
    batcher = Batcher(max_points=10, max_delay_s=3600, max_messages=100)
    batcher.put(item(4, 1))
    assert batcher.take(timeout=0) == []
    batcher.put(item(6, 2))
    batch = batcher.take(timeout=0)
    assert [p.ack.mid for p in batch if p.ack] == [1, 2]
    assert len(batcher) == 0


def test_batch_is_due_when_old_enough() -> None:
    batcher = Batcher(max_points=1000, max_delay_s=0.05, max_messages=100)
    put_at = time.monotonic()
    batcher.put(item(1))
    assert batcher.take(timeout=0) == []  # not due yet: younger than max_delay
    batch = batcher.take(timeout=30)
    waited = time.monotonic() - put_at
    assert len(batch) == 1
    # Due by age: not before max_delay (the upper bound is the benchmark's business).
    assert waited >= 0.05


def test_the_services_own_points_never_wait_and_drop_the_oldest_beyond_their_bound() -> None:
    batcher = Batcher(max_points=1000, max_delay_s=3600, max_messages=1, max_internal_points=4)
    batcher.put(item(0, 1))
    batcher.put(item(0, 2))  # full for messages: a put would now wait
    assert batcher.offer(["a 1", "a 2"]) == 0
    assert batcher.offer(["b 1", "b 2"]) == 0
    assert batcher.offer(["c 1"]) == 2  # over 4 points: the oldest offer goes
    batch = batcher.take(timeout=0)
    assert batch[0].ack is None and batch[0].lines == ["b 1", "b 2", "c 1"]
    assert [p.ack.mid for p in batch[1:] if p.ack] == [1, 2]
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.offer(["d 1"])


def test_message_count_bounds_a_batch_of_rejections() -> None:
    batcher = Batcher(max_points=1000, max_delay_s=3600, max_messages=3)
    for mid in range(3):
        batcher.put(item(0, mid))  # rejected messages carry no points
    assert len(batcher.take(timeout=0)) == 3


def test_a_batch_never_exceeds_max_points_and_keeps_order() -> None:
    batcher = Batcher(max_points=5, max_delay_s=3600, max_messages=100)
    for mid in range(4):
        batcher.put(item(3, mid))
    batches = [batcher.take(timeout=0) for _ in range(4)]
    assert [[p.ack.mid for p in b if p.ack] for b in batches] == [[0], [1], [2], []]


def test_take_waits_for_a_due_batch_from_another_thread() -> None:
    batcher = Batcher(max_points=2, max_delay_s=3600, max_messages=100)
    got: list[list[Pending]] = []
    taker = threading.Thread(target=lambda: got.append(batcher.take(timeout=10)))
    taker.start()
    batcher.put(item(2))
    taker.join(timeout=10)
    assert not taker.is_alive() and len(got[0]) == 1


def test_put_blocks_when_full_until_taken() -> None:
    batcher = Batcher(max_points=1000, max_delay_s=3600, max_messages=1)
    batcher.put(item(0, 1))
    batcher.put(item(0, 2))  # capacity is twice max_messages
    entered = threading.Event()
    done = threading.Event()

    def third() -> None:
        entered.set()
        batcher.put(item(0, 3))
        done.set()

    threading.Thread(target=third, daemon=True).start()
    entered.wait(5)
    assert not done.wait(0.2)  # still blocked: nothing was taken
    assert batcher.take(timeout=0)
    assert done.wait(5)


def test_close_hands_out_the_rest_then_refuses() -> None:
    batcher = Batcher(max_points=1000, max_delay_s=3600, max_messages=100)
    batcher.put(item(1))
    batcher.close()
    assert len(batcher.take(timeout=10)) == 1
    assert batcher.take(timeout=10) == []
    try:
        batcher.put(item(1))
    except BatcherClosed:
        pass
    else:
        raise AssertionError("put after close must raise")


def test_a_qos0_message_is_refused_rather_than_wait_when_full() -> None:
    batcher = Batcher(max_points=1000, max_delay_s=3600, max_messages=1)
    assert batcher.put(item(0, 1)) and batcher.put(item(0, 2))
    qos0 = Pending(received_ns=0, ack=None, lines=["m f=1 1"])
    assert batcher.put(qos0, wait=False) is False  # full: refused at once
    assert len(batcher) == 2
