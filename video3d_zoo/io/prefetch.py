"""Decoding ahead of the model in a background thread, with the time each side spent.

PyAV releases the GIL while FFmpeg decodes and swscale converts, so a thread decodes the next
clips while the model runs on the current batch, without the start-up cost and tensor copies
of worker processes.  :class:`Prefetcher` also measures what the issue of an idle model is
about: ``waited_s``, the time the consumer (the model loop) sat waiting for decoded clips, and
``busy_s``, the time the producer spent decoding.

The consumer may also :meth:`~Prefetcher.pause` and :meth:`~Prefetcher.resume` the producer, to
decide when decoding runs (see :class:`CoreShare`): a paused producer finishes its current item
and waits; a consumer that finds the queue empty resumes it, so pausing never deadlocks.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Iterable, Iterator, Optional, TypeVar

T = TypeVar("T")
_END = object()


class Prefetcher(Iterator[T]):
    """Iterate over ``source`` in a daemon thread, at most ``depth`` items ahead.

    An exception raised by ``source`` is raised again by ``next()`` in the consumer.  ``close()``
    (also on garbage collection or ``with`` exit) stops the thread after its current item.
    """

    def __init__(self, source: Iterable[T], depth: int = 32) -> None:
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._finished = False
        self.busy_s = 0.0
        self.waited_s = 0.0
        self._thread = threading.Thread(target=self._produce, args=(iter(source),), daemon=True,
                                        name="video3d_zoo-decode")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, iterator: Iterator[T]) -> None:
        # torch's thread count is per thread: the producer's tensor work (stacking, normalising)
        # stays on this thread instead of starting a second OpenMP team that would fight the
        # model's for the same cores.
        import torch

        torch.set_num_threads(1)
        try:
            while self._wait_until_running():
                started = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                finally:
                    self.busy_s += time.perf_counter() - started
                if not self._put(("item", item)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(("error", exc))
            return
        finally:
            self._finished = True
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self._put(("end", _END))

    def _wait_until_running(self) -> bool:
        """Wait while paused; False once the consumer closed the stream."""
        while not self._running.wait(timeout=0.1):
            if self._stop.is_set():
                return False
        return not self._stop.is_set()

    def pause(self) -> None:
        """Stop decoding after the current item (until :meth:`resume`, or the queue runs empty)."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def queued(self) -> int:
        """Items decoded and waiting for the consumer."""
        return self._queue.qsize()

    @property
    def decoding(self) -> bool:
        """Whether the producer is at work now: not paused, not finished, not held by a full queue."""
        return self._running.is_set() and not self._finished and not self._queue.full()

    def __next__(self) -> T:
        if self._thread is None:
            raise StopIteration
        if self._queue.empty():
            self._running.set()  # a paused producer with nothing queued would wait forever
        started = time.perf_counter()
        kind, value = self._queue.get()
        self.waited_s += time.perf_counter() - started
        if kind == "item":
            return value
        self._thread.join()
        self._thread = None
        if kind == "error":
            raise value
        raise StopIteration

    def close(self) -> None:
        thread: Optional[threading.Thread] = self._thread
        if thread is None:
            return
        self._stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread = None

    def __enter__(self) -> "Prefetcher[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def decoding_cores(threads: int) -> int:
    """Cores a decoding thread gets beside a model using ``threads``: a quarter, at least one.

    On the benchmark mix (720p and 640x272 H.264, compiled bf16 resnet3d_50) decoding and
    resizing take about a quarter of the job's core-seconds (3.4 of 14.6).
    """
    return max(1, threads // 4)


class CoreShare:
    """Decoding and the model take turns on the cores, decided before every batch.

    A decoding thread running beside a model that uses every core leaves the model's threads
    waiting for each other at every parallel step, and both slow down.  Instead: while fewer
    than ``resume_below`` clips are queued, decoding runs on ``decode_cores`` cores (see
    :func:`decoding_cores`) and the model uses the other threads; otherwise decoding pauses
    and the model gets them all.  ``restore()`` puts the thread count back.
    """

    def __init__(self, prefetcher: Prefetcher, resume_below: int, threads: int, decode_cores: int) -> None:
        self.prefetcher, self.resume_below = prefetcher, max(1, int(resume_below))
        self.threads, self.decode_cores = int(threads), int(decode_cores)
        self.batches = self.shared_batches = 0

    def before_batch(self) -> None:
        import torch

        if self.prefetcher.queued < self.resume_below:
            self.prefetcher.resume()
        else:
            self.prefetcher.pause()
        decoding = self.prefetcher.decoding
        self.batches += 1
        self.shared_batches += decoding
        torch.set_num_threads(max(1, self.threads - self.decode_cores) if decoding else self.threads)

    def restore(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
