"""CSV files as UTF-8 text, plain or gzip-compressed, with one message naming the file and the line when they
are not text (a CSV saved as Latin-1 or cp1252 by a spreadsheet, a zip or zstd file, not a CSV at all) instead
of Python's bare "'utf-8' codec can't decode byte 0xf2".

gzip is recognised by its magic bytes, not the name: ``train.csv.gz`` and a ``.csv`` that is gzip inside are
both read. polars reads gzip on its own; these helpers serve the csv module and the up-front checks."""

from __future__ import annotations

import codecs
import gzip
from pathlib import Path
from typing import IO

GZIP_MAGIC = b"\x1f\x8b"
_HINT = (
    "save the CSV as UTF-8 (it may be Latin-1 or cp1252), or check that it is a CSV; a compressed file other "
    "than gzip (zip, zstd, xz)? decompress it first, e.g. unzip/unzstd/unxz"
)


def is_gzip(path: Path | str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _open_bytes(path: Path | str) -> IO[bytes]:
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def _message(path, line: int, byte: int, offset: int) -> ValueError:
    return ValueError(f"{path}: line {line}: not UTF-8 text (byte 0x{byte:02x} at offset {offset}); {_HINT}")


def read_utf8(path: Path | str) -> str:
    """The whole file as text (decompressed; a UTF-8 byte order mark dropped). Raises ValueError naming the
    file and the line."""
    try:
        with _open_bytes(path) as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        return codecs.decode(data, "utf-8-sig")
    except UnicodeDecodeError as e:
        raise _message(path, data.count(b"\n", 0, e.start) + 1, data[e.start], e.start) from None


def check_utf8(path: Path | str, chunk: int = 1 << 22) -> None:
    """Raise ValueError naming the file and line when it is not UTF-8 text (read in chunks: any size)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    done, lines = 0, 0
    try:
        with _open_bytes(path) as f:
            while True:
                data = f.read(chunk)
                try:
                    dec.decode(data, final=not data)
                except UnicodeDecodeError as e:
                    pos = max(0, e.start - len(dec.getstate()[0]))  # bytes held back from the last chunk
                    raise _message(path, lines + data.count(b"\n", 0, pos) + 1, data[pos], done + pos) from None
                if not data:
                    return
                done, lines = done + len(data), lines + data.count(b"\n")
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None


def open_csv_text(path: Path | str, encoding: str = "utf-8-sig") -> IO[str]:
    """A text stream of the CSV, decompressed when it is gzip (call ``check_utf8`` first for a clear message)."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return open(path, newline="", encoding=encoding)
