"""Atomic replacement of a dataset folder by a rewritten copy (``cxrprep augment``).

The new parts go to a hidden sibling folder (same filesystem, skipped by find_datasets) and are swapped in with
one ``renameat2(RENAME_EXCHANGE)``; where that is unsupported, two renames, and a kill between them is undone by
``recover`` on the next run. So a kill at any moment leaves either the old complete dataset or the new one."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

from cxrprep.schema import MANIFEST
from cxrprep.shards.writer import WRITER_KEYS


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def staging_dir(dataset_dir: Path) -> Path:
    # hidden sibling: same filesystem (rename works) and skipped by find_datasets
    return dataset_dir.parent / f".augment-{dataset_dir.name}"


def recover(dataset_dir: Path) -> None:
    """Finish or undo what a killed run left: if the dataset folder is gone (killed between the two
    renames of the fallback swap), put the complete copy back; then drop the temporary folder."""
    tmp = staging_dir(dataset_dir)
    if not tmp.exists():
        return
    if not dataset_dir.exists():
        for cand in (tmp / dataset_dir.name, tmp / "old"):  # the new copy is complete too
            if (cand / MANIFEST).exists():
                os.replace(cand, dataset_dir)
                break
    shutil.rmtree(tmp, ignore_errors=True)


def swap_in(new: Path, dataset_dir: Path) -> None:
    """Put the complete folder ``new`` where ``dataset_dir`` is, atomically where the kernel allows."""
    if not exchange(new, dataset_dir):
        old = new.parent / "old"
        os.replace(dataset_dir, old)  # a kill right here is undone by recover on the next run
        os.replace(new, dataset_dir)


def carried_sections(manifest: dict) -> dict:
    """The manifest sections another command added (say a statistics section), carried over unchanged into a
    rewritten copy: everything except what ShardWriter fills itself, ``merged_from`` (the new parts are one
    run's parts) and ``augment`` (the rewrite writes its own)."""
    own = set(WRITER_KEYS) | {"merged_from", "augment"}
    return {k: v for k, v in manifest.items() if k not in own}
