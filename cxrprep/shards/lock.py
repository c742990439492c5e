"""One writer per dataset folder: ``flock`` locks held for the whole run.

* A whole run (and ``cxrprep merge``) holds ``NAME/.lock`` exclusively.
* A ``--part i/N`` piece holds ``NAME/.lock`` shared (pieces run side by side; a whole run or a merge
  waits for none of them and is refused) and ``NAME/.lock-iofN`` exclusively (the same piece twice is
  refused).
* The holder of an exclusive lock writes its pid and command line into the lock file, so a refused run
  names it; the kernel drops the lock when the holder exits, however it exits (kill -9 included), so a
  stale lock file never blocks anyone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from pathlib import Path

from cxrprep.schema import LOCK
from cxrprep.shards.files import invocation


class DatasetBusy(ValueError):
    """Another run holds the dataset folder's lock (a usage error: exit code 2)."""


# a planted symbolic link (or FIFO, device) named .lock is refused, never followed: opening it for writing
# would truncate whatever file it points to, as the manifest, rejects and card writers already never do
_FLAGS = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK


def _open_lock(path: Path) -> int:
    """Open (create) a lock file without following a symbolic link; refuse anything but a regular file."""
    try:
        fd = os.open(path, _FLAGS, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DatasetBusy(
                f"{path} is a symbolic link; refusing to follow it (it could truncate the file it points to); "
                f"remove it and run again"
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DatasetBusy(f"{path} is not a regular file; remove it and run again")
    return fd


def _describe(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            info = json.loads(os.read(fd, 1 << 16).decode("utf-8", "replace") or "{}")
        finally:
            os.close(fd)
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict):
        info = {}
    if not info:
        return "pid unknown"
    return f"pid {info.get('pid')}: {info.get('command')}"


def _held(path: Path) -> bool:
    """Whether another open file holds ``path`` exclusively (probe with a shared, non-blocking lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock this probe got
    return False


class DatasetLock:
    """``with DatasetLock(folder, tag):`` -- raises DatasetBusy naming the holder when taken."""

    def __init__(self, dataset_dir: str | Path, tag: str = "", action: str = "writing") -> None:
        self.dir = Path(dataset_dir)
        self.tag = tag
        self.action = action
        self._fds: list[int] = []
        self._own: int | None = None  # fd of the file we hold exclusively (holds our pid/command)
        self._pid = os.getpid()  # a forked child shares the lock; only the process that took it lets go

    @property
    def path(self) -> Path:
        return self.dir / LOCK

    def _piece_path(self, tag: str) -> Path:
        return self.dir / f"{LOCK}-{tag}"

    def holders(self) -> list[str]:
        """Who holds the folder now: pieces (their lock files), else the exclusive holder of ``.lock``."""
        pieces = [
            f"piece {p.name[len(LOCK) + 1 :]} ({_describe(p)})" for p in sorted(self.dir.glob(f"{LOCK}-*")) if _held(p)
        ]
        return pieces or [_describe(self.path)]

    def _refuse(self, what: list[str]) -> DatasetBusy:
        return DatasetBusy(
            f"{self.dir} is locked by another cxrprep run ({'; '.join(what)}); wait for it to "
            f"finish or write elsewhere with --out (refusing to start {self.action})"
        )

    def acquire(self) -> "DatasetLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        self._pid = os.getpid()
        fd = _open_lock(self.path)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.tag else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._refuse(self.holders()) from None
        self._fds.append(fd)
        own = fd
        if self.tag:
            try:
                pfd = _open_lock(self._piece_path(self.tag))
            except BaseException:
                self.release()
                raise
            try:
                fcntl.flock(pfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(pfd)
                self.release()
                raise self._refuse([f"piece {self.tag} ({_describe(self._piece_path(self.tag))})"]) from None
            self._fds.append(pfd)
            own = pfd
        os.ftruncate(own, 0)
        os.pwrite(own, json.dumps({"pid": os.getpid(), "command": invocation()}).encode(), 0)
        self._own = own
        return self

    def release(self) -> None:
        if os.getpid() != self._pid:
            return
        if self._own is not None:
            try:
                os.ftruncate(self._own, 0)  # the next reader must not name a run that ended
            except OSError:
                pass
            self._own = None
        while self._fds:
            fd = self._fds.pop()
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __del__(self) -> None:  # a writer dropped without close/abort must not keep the folder locked
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> "DatasetLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
