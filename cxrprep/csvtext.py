"""Open a CSV as text whether it is plain or gzip-compressed (``train.csv.gz``, or a ``.csv`` that is gzip
inside: the magic bytes decide, not the name). polars reads both on its own; this is for the csv module."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: str | Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_csv_text(path: str | Path, encoding: str = "utf-8-sig") -> IO[str]:
    """A text stream of the CSV (decompressed when it is gzip). A file that is neither UTF-8 text nor gzip
    fails on reading with a ValueError naming the file (see :func:`decode_error`)."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, newline="", encoding=encoding)


def decode_error(path: str | Path, e: Exception) -> ValueError:
    """One line for a CSV that is not UTF-8 text: names the file and hints at what it may be."""
    return ValueError(
        f"{path}: not a UTF-8 CSV ({e.__class__.__name__} at byte {getattr(e, 'start', '?')}); a compressed "
        f"file other than gzip (zip, zstd, xz)? decompress it first, e.g. unzip/unzstd/unxz"
    )
