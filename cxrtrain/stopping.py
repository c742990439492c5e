"""Signals in ``cxrtrain run`` (issue 20): SIGTERM (preemption) and SIGINT (Ctrl-C) finish the current step and
save last/; while the trainer waits for data or validates, they stop that wait at once; a second Ctrl-C exits
at once. Loader workers leave the signals to the trainer."""

from __future__ import annotations

import os
import signal
import sys
import traceback


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the trainer, which finishes the step and saves last/; a batch
    hand-off the trainer gives up on when it stops is not reported as an error (``quiet_abandoned_handoff``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = quiet_abandoned_handoff


def quiet_abandoned_handoff(exc_type, exc, tb, _default=sys.__excepthook__) -> None:
    """``sys.excepthook`` of a loader worker. A worker hands each batch's shared memory to the trainer as a
    file descriptor, through multiprocessing's resource-sharer thread; when a signal stops the trainer's wait
    for data in the middle of that hand-off, the thread's connection closes half-way and multiprocessing
    prints that thread's EOFError or ConnectionError as a traceback (seen in 1 of about 50 Ctrl-C tests).
    Nothing is lost: the trainer stopped and the batch was never used. Every other exception is printed."""
    if issubclass(exc_type, (EOFError, ConnectionError)) and any(
        frame.f_code.co_filename.endswith("resource_sharer.py") for frame, _ in traceback.walk_tb(tb)
    ):
        return
    _default(exc_type, exc, tb)


class StopNow(BaseException):
    """A signal while the trainer waits for data or validates (not an Exception: nothing may catch it)."""


class Stop:
    """SIGTERM (preemption) and SIGINT (Ctrl-C) both finish the current step, save last/ and stop; while the
    trainer waits for data or validates (``waiting``) they stop that at once (StopNow). A second Ctrl-C exits
    at once."""

    def __init__(self) -> None:
        self.by: str | None = None
        self.old: dict = {}
        self.waiting = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.by is not None:  # a second Ctrl-C: at once, no saving
            os.write(2, b"second Ctrl-C: stopped at once (last/ is the previous checkpoint)\n")
            os._exit(130)
        self.by = self.by or signal.Signals(signum).name
        if self.waiting:  # no step runs that could finish: stop waiting, save last/ at this step boundary
            raise StopNow()

    def restore(self) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)
        self.old = {}

    def wait(self, fn, *args):
        """``fn(*args)`` (waiting for data, validating) with a signal stopping it at once: None when one did
        (or had come before)."""
        try:
            self.waiting = True
            if self.by:
                raise StopNow()
            return fn(*args)
        except StopNow:
            return None
        finally:
            self.waiting = False
