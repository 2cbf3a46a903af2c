"""Ctrl-C that cannot split an optimiser step from its step counter.

While :class:`InterruptGuard` is active, SIGINT raises ``KeyboardInterrupt`` at once, as usual
(a long forward pass stays interruptible), except inside ``with guard.atomic():``, where it is
held and raised when the block ends. The trainer runs ``optimizer.step()``, the increment of
its step counter and that step's metrics row, eval and checkpoint in one atomic block, so a
checkpoint written on interrupt always holds weights and a counter that agree: a step is never
applied twice on resume.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InterruptGuard:
    def __init__(self) -> None:
        self._depth = 0
        self._pending = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> InterruptGuard:
        # signal handlers can only be set from the main thread; elsewhere SIGINT never arrives
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            if previous is not signal.SIG_IGN:  # a parent that ignores SIGINT keeps it ignored
                self._previous = previous
                signal.signal(signal.SIGINT, self._handler)
                self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False

    def _handler(self, signum, frame) -> None:
        if self._depth:
            self._pending = True
            return
        raise KeyboardInterrupt

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A block that a SIGINT cannot cut: the interrupt is raised after it completes."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._pending:
            self._pending = False
            raise KeyboardInterrupt
