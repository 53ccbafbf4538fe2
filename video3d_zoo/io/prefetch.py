"""Decoding ahead of the model in a background thread, with the time each side spent.

PyAV releases the GIL while FFmpeg decodes and swscale converts, so a thread decodes the next
clips while the model runs on the current batch, without the start-up cost and tensor copies
of worker processes.  :class:`Prefetcher` also measures what the issue of an idle model is
about: ``waited_s``, the time the consumer (the model loop) sat waiting for decoded clips, and
``busy_s``, the time the producer spent decoding.
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
            while not self._stop.is_set():
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
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        self._put(("end", _END))

    def __next__(self) -> T:
        if self._thread is None:
            raise StopIteration
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
