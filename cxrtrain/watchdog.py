"""A watchdog for loops that wait on data: no batch within ``seconds`` is an error naming where it stalled
(issue 20: a stream that drew only rows it had to skip spun forever, and looked like slow data loading).

SIGALRM, so it fires in the waiting main thread itself (a Python loop, or a DataLoader queue wait: both
return to the interpreter, which runs the handler); off the main thread it does nothing."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Stalled(RuntimeError):
    """No batch arrived within the watchdog's time (the CLI exits 1 with the message)."""


@contextmanager
def watchdog(seconds: float | None, where: str) -> Iterator[None]:
    """Raise Stalled in the block when it runs longer than ``seconds`` (None or 0: no watchdog)."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame) -> None:
        raise Stalled(
            f"no batch for {seconds:g} s while {where}: the data stream made no progress (watchdog_s={seconds:g}; "
            f"raise it with --set watchdog_s=SECONDS if one batch really takes that long)"
        )

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
