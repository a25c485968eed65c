from __future__ import annotations

import threading

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
    batcher.put(item(1))
    assert len(batcher.take(timeout=5)) == 1  # returns after ~50 ms, not 5 s


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
