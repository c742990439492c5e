"""Signals in ``cxrtrain run`` (issue 20): SIGTERM (preemption) and SIGINT (Ctrl-C) finish the current step and
save last/; while the trainer waits for data or validates, they stop that wait at once; a second Ctrl-C exits
at once. Loader workers leave the signals to the trainer."""

from __future__ import annotations

import os
import signal


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the trainer, which finishes the step and saves last/."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
