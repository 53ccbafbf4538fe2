"""Decoding ahead in a background thread: order, errors, early close, timing."""

from __future__ import annotations

import threading
import time

import pytest

from video3d_zoo.io.prefetch import Prefetcher


def test_items_arrive_in_order_and_the_thread_ends():
    with Prefetcher(iter(range(100)), depth=4) as items:
        assert list(items) == list(range(100))
    assert not any(t.name == "video3d_zoo-decode" and t.is_alive() for t in threading.enumerate())


def test_an_error_of_the_source_is_raised_in_the_consumer_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("corrupt packet")

    items = Prefetcher(source())
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(ValueError, match="corrupt packet"):
        next(items)
    with pytest.raises(StopIteration):
        next(items)


def test_closing_early_stops_the_producer_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    items = Prefetcher(source(), depth=2)
    assert next(items) == 0
    items.close()
    assert closed.wait(5)


def test_time_spent_on_each_side_is_measured():
    def slow():
        for i in range(5):
            time.sleep(0.02)
            yield i

    items = Prefetcher(slow())
    assert list(items) == list(range(5))
    assert items.busy_s >= 0.09 and items.waited_s > 0
