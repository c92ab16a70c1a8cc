"""`runtime.pipeline.ahead`: items made by a thread ahead of the consumer, in order, errors re-raised,
and a consumer that stops early (Ctrl-C, a failure) never waits forever on the thread."""

from __future__ import annotations

import threading
import time

import pytest

from runtime.pipeline import ahead


def test_items_come_in_order_and_errors_are_re_raised():
    assert list(ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise ValueError("broken source")

    got = []
    with pytest.raises(ValueError, match="broken source"):
        for x in ahead(failing()):
            got.append(x)
    assert got == [1]


@pytest.mark.parametrize("taken", [1, 3])
def test_a_consumer_that_stops_early_does_not_hang_and_the_source_is_closed(taken):
    closed = threading.Event()

    def source():
        try:
            yield from range(4)  # short: the thread reaches its end while the queue is still full
        finally:
            closed.set()

    def consume():
        stream = ahead(source(), depth=1)
        for _ in range(taken):
            next(stream)
        time.sleep(0.5)  # the thread runs on to its end (or to a full queue) meanwhile
        stream.close()

    worker = threading.Thread(target=consume, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "closing the stream waited forever on its thread"
    assert closed.wait(timeout=5)
