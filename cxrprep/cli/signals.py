"""Ctrl-C and SIGTERM for both command lines: never a traceback, and every phase stops within seconds.

* ``early()`` runs first thing in the entry point modules, before the heavy imports (typer, torch,
  pyarrow): a Ctrl-C there prints one line and exits 130 at once (there is nothing to clean up yet).
* ``install()`` then makes SIGINT (and, for cxrtrain, SIGTERM) raise ``Interrupted`` in the main process;
  it unwinds through the writers (which remove what the run had not finished) to ``main``, which prints one
  line and exits 130 (143 for SIGTERM). Forked workers leave it to the parent.
* A second signal while the first is being handled: cxrprep ignores it (the clean-up must not be cut short;
  it takes well under a second), cxrtrain exits at once (``second="exit"``).

Kept free of heavy imports: ``early`` must cost nothing.
"""

from __future__ import annotations

import os
import signal
import sys


class Interrupted(BaseException):
    """SIGINT or SIGTERM. Not a KeyboardInterrupt, so click does not turn it into "Aborted!" (exit 1)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


def _die_now(signum, frame) -> None:
    os.write(2, f"interrupted ({signal.Signals(signum).name}) while starting; nothing was written\n".encode())
    os._exit(128 + int(signum))


def early(sigterm: bool = False) -> None:
    """Before the imports: a signal exits at once with one line (an import has nothing to clean up)."""
    for sig in (signal.SIGINT,) + ((signal.SIGTERM,) if sigterm else ()):
        try:
            if signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
                signal.signal(sig, _die_now)
        except ValueError:  # not the main thread (an embedding program): leave its handlers alone
            pass


def is_entry_point(module_name: str) -> bool:
    """Whether this process is the ``cxrprep``/``cxrtrain`` console script or ``python -m`` (and not a test
    or a program importing the app): only then may importing the app install signal handlers."""
    return module_name == "__main__" or os.path.basename(sys.argv[0] if sys.argv else "") in ("cxrprep", "cxrtrain")


def install(sigterm: bool = False, second: str = "ignore") -> None:
    """SIGINT (and SIGTERM with ``sigterm``) raise Interrupted in the main process."""
    main_pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != main_pid:
            return  # a forked pool worker: the parent shuts the pool down
        if second == "exit":
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _exit_now)
        else:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        raise Interrupted(signum)

    for sig in (signal.SIGINT,) + ((signal.SIGTERM,) if sigterm else ()):
        signal.signal(sig, handler)


def _exit_now(signum, frame) -> None:
    os.write(2, f"second signal ({signal.Signals(signum).name}): stopped at once\n".encode())
    os._exit(128 + int(signum))
