"""Small file helpers shared by the shard writer, reader and merge: hashes, atomic writes, rejects I/O."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Iterable

MiB = 1 << 20
PARQUET_OPTS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


class ShardWriteError(RuntimeError):
    """Writing a dataset folder failed for a reason no later input can avoid (disk full, folder gone,
    permission); what the run had not finished was removed. The message names the path and the cause."""


def write_failure(path: Path, e: OSError) -> ShardWriteError:
    """A ShardWriteError naming ``path`` and the cause of ``e`` (in words for a full disk)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = "no space left on the device (disk full); free space or write elsewhere with --out"
    elif e.errno == errno.ENOENT:
        cause = "the output folder disappeared while writing"
    elif e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = f"no permission to write there ({e.strerror})"
    else:
        cause = e.strerror or str(e)
    return ShardWriteError(f"writing {path} failed: {cause}; the unfinished files were removed")


def invocation() -> str:
    """The command line of this process, e.g. ``cxrprep reports mimic/ --out shards/``."""
    argv = list(sys.argv) or ["python"]
    prog = Path(argv[0])
    if prog.name in ("app.py", "__main__.py") and prog.parent.name == "cli":  # python -m cxrprep.cli.app
        name = prog.parent.parent.name
    else:
        name = prog.parent.name if prog.name == "__main__.py" else prog.name
    return shlex.join([name] + argv[1:])


def sha256_file(path: Path, chunk: int = 4 * MiB) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tmp_name(path: Path, owner: str = "") -> Path:
    """The temporary name ``path`` is written under before the rename (``owner``: a piece tag, so
    concurrent pieces never share or delete each other's temporary files)."""
    return path.with_name(f".tmp-{owner + '-' if owner else ''}{path.name}")


def atomic_write_bytes(path: Path, data: bytes, owner: str = "") -> None:
    path = Path(path)
    tmp = tmp_name(path, owner)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a write error, or Ctrl-C (Interrupted) while writing: no .tmp-* is left behind
        tmp.unlink(missing_ok=True)
        raise


def _write_tmp(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def commit_files(files: list[tuple[Path, bytes]], remove_first: Path | None = None) -> None:
    """Write several files as one step: each goes to its temporary name first (a failure or Ctrl-C there
    removes them all and leaves the folder as it was), then ``remove_first`` is removed and they are renamed
    in order, with SIGINT/SIGTERM held back for those few renames (a signal then arrives once they are done),
    so an interrupted ``cxrprep merge`` never leaves half of its outputs."""
    import signal
    import threading

    tmps = [(tmp_name(Path(p)), Path(p), data) for p, data in files]
    try:
        for tmp, _, data in tmps:
            _write_tmp(tmp, data)
    except BaseException:
        for tmp, _, _ in tmps:
            tmp.unlink(missing_ok=True)
        raise
    block = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
    held = {signal.SIGINT, signal.SIGTERM}
    if block:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        if remove_first is not None:
            remove_first.unlink(missing_ok=True)
        for tmp, path, _ in tmps:
            os.replace(tmp, path)
    finally:
        for tmp, _, _ in tmps:
            tmp.unlink(missing_ok=True)
        if block:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def manifest_bytes(obj: dict) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode()


def atomic_write_json(path: Path, obj: dict, owner: str = "") -> None:
    atomic_write_bytes(Path(path), manifest_bytes(obj), owner)


def rejects_bytes(rejects: Iterable[dict]) -> bytes:
    """JSON Lines, one reject per line, keys in a fixed order (deterministic bytes)."""
    keys = ("source", "study_id", "stage", "kind", "level", "reason")
    return b"".join((json.dumps({k: r.get(k) for k in keys}, ensure_ascii=False) + "\n").encode() for r in rejects)


def read_rejects(path: str | Path) -> list[dict]:
    """The rejects of a dataset folder's ``rejects.jsonl`` (or a piece's ``rejects-iofN.jsonl``)."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    from cxrprep.schema import ShardSchemaError

                    raise ShardSchemaError(f"{path}:{i}: not a JSON line ({e})") from e
    return out


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def stable_reason(reason) -> str:
    """A reject reason without memory addresses (PIL's ``<_io.BytesIO object at 0x7f...>``): same rejects file."""
    return _ADDRESS.sub("", str(reason))


class DatasetExists(ValueError):
    """The dataset folder already holds a finished dataset and the command was not given --overwrite."""


def refuse_finished(folder: Path, overwrite: bool) -> None:
    """Raise DatasetExists when ``folder`` holds a finished dataset (its manifest.json) and ``overwrite`` is
    off. A killed run's leftovers (no manifest) are always replaced."""
    if not overwrite and (Path(folder) / "manifest.json").exists():
        raise DatasetExists(
            f"{folder} already holds a finished dataset (manifest.json); pass --overwrite to replace it, or choose "
            "another --out (a killed run's leftovers, without a manifest, are replaced without it)"
        )
