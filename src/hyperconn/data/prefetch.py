"""``Prefetcher``: run an iterator in a background thread, a bounded number of items ahead.

The stream pipeline tokenises while the training step runs: HF tokenizers encode in Rust without
the GIL, and so do PyTorch's kernels. Items come out in the iterator's order, so prefetching
changes no value; an exception raised by the iterator is re-raised by ``next``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher:
    """``next(p)`` gives the items of ``make_iterator()`` in order, computed up to ``depth`` ahead."""

    def __init__(self, make_iterator: Callable[[], Iterator], depth: int):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth={depth!r}: must be an integer >= 1")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make_iterator,), daemon=True, name="hyperconn-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make_iterator) -> None:
        try:
            for item in make_iterator():
                if not self._put(item):
                    return
            self._put(_Failure(StopIteration()))
        except BaseException as err:  # handed to the consumer, raised there
            self._put(_Failure(err))

    def __iter__(self) -> Prefetcher:
        return self

    def __next__(self):
        item = self._queue.get()
        if isinstance(item, _Failure):
            self._queue.put(item)  # every later call fails the same way
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (it finishes the item it is computing) and drop what it computed."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join()
