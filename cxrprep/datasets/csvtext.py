"""CSV files as UTF-8 text, with a message naming the file and the line when they are not (a CSV saved as
Latin-1 or cp1252 by a spreadsheet, or not a CSV at all), instead of Python's bare "'utf-8' codec can't
decode byte 0xf2"."""

from __future__ import annotations

import codecs
from pathlib import Path


def utf8_error(path: Path | str, data: bytes, e: UnicodeDecodeError) -> ValueError:
    line = data.count(b"\n", 0, e.start) + 1
    return ValueError(
        f"{path}: line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
        f"save the CSV as UTF-8 (it may be Latin-1 or cp1252), or check that it is a CSV"
    )


def read_utf8(path: Path | str) -> str:
    """The whole file as text (a UTF-8 byte order mark dropped). Raises ValueError naming the file and line."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return codecs.decode(data, "utf-8-sig")
    except UnicodeDecodeError as e:
        raise utf8_error(path, data, e) from None


def check_utf8(path: Path | str, chunk: int = 1 << 22) -> None:
    """Raise ValueError naming the file and line when it is not UTF-8 (read in chunks: any size)."""
    dec = codecs.getincrementaldecoder("utf-8")()
    done, lines = 0, 0
    try:
        with open(path, "rb") as f:
            while True:
                data = f.read(chunk)
                try:
                    dec.decode(data, final=not data)
                except UnicodeDecodeError as e:
                    pos = max(0, e.start - len(dec.getstate()[0]))  # bytes held back from the last chunk
                    line = lines + data.count(b"\n", 0, pos) + 1
                    raise ValueError(
                        f"{path}: line {line}: not UTF-8 text (byte 0x{data[pos]:02x} at offset {done + pos}); "
                        f"save the CSV as UTF-8 (it may be Latin-1 or cp1252), or check that it is a CSV"
                    ) from None
                if not data:
                    return
                done, lines = done + len(data), lines + data.count(b"\n")
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
