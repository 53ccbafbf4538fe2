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


def _counting_source(produced):
    for i in range(1000):
        produced.append(i)
        yield i


def test_a_paused_producer_stops_after_its_current_item_and_resumes_on_request():
    produced = []
    items = Prefetcher(_counting_source(produced), depth=500)
    assert next(items) == 0
    items.pause()
    time.sleep(0.2)  # whatever was in flight finishes
    stalled = len(produced)
    time.sleep(0.2)
    assert len(produced) == stalled and not items.decoding
    items.resume()
    assert list(items) == list(range(1, 1000))
    assert not items.decoding  # finished


def test_a_consumer_finding_the_queue_empty_resumes_a_paused_producer():
    def slow():
        for i in range(3):
            time.sleep(0.01)
            yield i

    items = Prefetcher(slow(), depth=8)
    items.pause()
    assert list(items) == [0, 1, 2]  # no deadlock: an empty queue resumes decoding


class _FakeStream:
    def __init__(self, queued):
        self.queued, self.running = queued, True

    def pause(self):
        self.running = False

    def resume(self):
        self.running = True

    @property
    def decoding(self):
        return self.running


def test_the_model_gets_every_thread_only_while_decoding_is_paused():
    import torch

    from video3d_zoo.io.prefetch import CoreShare, decoding_cores

    assert [decoding_cores(n) for n in (1, 2, 4, 8, 16)] == [1, 1, 1, 2, 4]
    before = torch.get_num_threads()
    stream = _FakeStream(queued=3)
    share = CoreShare(stream, resume_below=16, threads=2, decode_cores=1)
    try:
        share.before_batch()  # few clips queued: decode on one core, the model on the other
        assert stream.running and torch.get_num_threads() == 1
        stream.queued = 40
        share.before_batch()  # enough queued: decoding pauses, the model takes both threads
        assert not stream.running and torch.get_num_threads() == 2
        assert (share.batches, share.shared_batches) == (2, 1)
    finally:
        share.restore()
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)
