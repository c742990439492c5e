"""Worker pools and job splitting shared by every cxrprep command.

* ``parse_part("2/8")`` and ``in_part(subject_id, part)``: ``--part i/N`` assigns each subject (patient)
  to exactly one of N pieces by a stable hash, so a SLURM array or an indexed Job can split any command
  and ``cxrprep merge`` joins the pieces; patients never straddle pieces.
* ``ordered_map(fn, items, workers)``: a process pool that yields results in input order (so output is
  deterministic) with a bounded number of tasks in flight (so memory stays flat however long the input).
  Its workers die with their parent: on Linux each asks the kernel for SIGKILL when the parent goes
  (``prctl(PR_SET_PDEATHSIG)``); elsewhere a watchdog thread polls the parent pid. A dead pool (a worker
  killed by the OS, or crashed in native code) raises ``WorkerPoolError`` with a readable message.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import zlib
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parse_part(value: str | None) -> tuple[int, int] | None:
    """'i/N' -> (i, N) with 0 <= i < N. None or '' -> None. Raises ValueError naming --part."""
    if value is None or value == "":
        return None
    try:
        i_s, n_s = value.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ValueError(f"--part must look like i/N (e.g. 0/4), got {value!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--part {value!r}: need N >= 1 and 0 <= i < N")
    return None if n == 1 else (i, n)


def in_part(key: str, part: tuple[int, int] | None) -> bool:
    """Whether ``key`` (a subject id) belongs to piece ``part``; stable across machines and Pythons."""
    if part is None:
        return True
    return zlib.crc32(key.encode()) % part[1] == part[0]


def default_workers() -> int:
    """All cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    if workers is None or workers == 0:
        return default_workers()
    if workers < 0:
        raise ValueError(f"--workers must be >= 0 (0 = all cores), got {workers}")
    return workers


class WorkerPoolError(RuntimeError):
    """The worker pool died; every later input would fail too, so the run stops."""


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """In a worker: exit when its parent process goes, even by kill -9 (no orphan workers). ``parent``: the
    pid the parent had when it forked us (0 when the pool does not fork: with forkserver the parent is the
    server, which itself exits with the main process)."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if parent and os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(1)
    if not armed:
        first = os.getppid()

        def watch() -> None:
            while os.getppid() == first:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()


#: generation-0 threshold of the cycle collector in worker processes and during ``fewer_collections``
#: (Python's default is 700): the per-item work allocates many short-lived objects and few cycles; with the
#: default, collections took about 5% of a ``cxrprep reports`` worker's time (bench/bench_reports.py)
GC_THRESHOLD0 = 20_000


def _worker_init(parent: int, initializer: Callable | None, initargs: tuple) -> None:
    import gc

    _die_with_parent(parent)
    gc.freeze()  # what the worker inherited is never scanned again (nor copied for the scan's refcounts)
    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])
    if initializer is not None:
        initializer(*initargs)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """In the main process of a long run: what exists now is left out of cycle collections (``gc.freeze``)
    and generation-0 collections come ``GC_THRESHOLD0`` allocations apart; both are undone at the end."""
    import gc

    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD0, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


_STARTED = object()


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int = 1,
    max_in_flight: int | None = None,
    initializer: Callable | None = None,
    initargs: tuple = (),
    start_now: bool = False,
) -> Iterator[R]:
    """Map ``fn`` over ``items`` in ``workers`` processes, yielding results in input order.

    At most ``max_in_flight`` (default 4 x workers) tasks are submitted ahead of the consumer, so a slow
    writer never lets results pile up in memory. ``workers <= 1`` runs in this process (no pickling),
    calling ``initializer`` once first. ``fn`` must be a module-level function (picklable).

    ``start_now``: start the workers and queue the first ``max_in_flight`` items before returning
    (otherwise that happens on the first ``next``), so the caller's own set-up (imports, opening the
    output) runs while they work. Close the iterator (``.close()``) if it is not read to the end."""
    gen = _ordered_map(fn, items, workers, max_in_flight, initializer, initargs, start_now and workers > 1)
    if start_now and workers > 1 and next(gen, None) is not _STARTED:  # the pool is up, the first task sent
        return iter(())  # there was no item
    return gen


def _ordered_map(fn, items, workers, max_in_flight, initializer, initargs, marker: bool) -> Iterator:
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for it in items:
            yield fn(it)
        return
    limit = max_in_flight or 4 * workers
    pending: deque[Future] = deque()
    import multiprocessing

    forked = multiprocessing.get_start_method(allow_none=False) == "fork"
    ex = ProcessPoolExecutor(
        max_workers=workers, initializer=_worker_init, initargs=(os.getpid() if forked else 0, initializer, initargs)
    )
    try:
        it = iter(items)
        try:
            for item in it:
                pending.append(ex.submit(fn, item))
                if marker and len(pending) >= limit:  # the first max_in_flight tasks queued
                    marker = False
                    yield _STARTED
                if len(pending) >= limit:
                    yield pending.popleft().result()
            if marker:  # fewer items than the tasks queued before the caller goes on
                yield _STARTED
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()
    except BrokenProcessPool as e:
        raise WorkerPoolError(
            f"a worker process died ({e}); it was killed (by the out-of-memory killer, or a signal) or "
            f"crashed in native code. Try fewer --workers or a lower --max-image-pixels"
        ) from None
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    buf: list[T] = []
    for x in items:
        buf.append(x)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf
