"""The persistent SQLite cache of back-translated sentences."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence


class CacheError(RuntimeError):
    """The translation cache cannot be used (a file where the folder should be, a corrupt database)."""


class TranslationCache:
    """SQLite table (setting, sentence, variant) -> (output, flags). ``setting`` is the sha256 of the
    models' keys and the decoding settings, described in the ``settings`` table. Problems with the
    database raise CacheError naming the file and what to do."""

    def __init__(self, path: Path) -> None:
        path = Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise CacheError(
                f"--cache-dir {path.parent}: a file is in the way; the cache needs a folder (pass another --cache-dir)"
            ) from None
        except OSError as e:
            raise CacheError(f"--cache-dir {path.parent}: cannot create it ({e.strerror or e})") from None
        if path.is_dir():
            raise CacheError(
                f"{path}: is a folder; the translation cache is a SQLite file (remove the folder "
                "or pass another --cache-dir)"
            )
        self.path = path
        try:
            self.db = sqlite3.connect(str(path))
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS settings (id TEXT PRIMARY KEY, description TEXT)")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS bt (setting TEXT, sentence TEXT, variant INTEGER, "
                "output TEXT NOT NULL, flags INTEGER NOT NULL, PRIMARY KEY (setting, sentence, "
                "variant)) WITHOUT ROWID"
            )
            self.db.commit()
        except sqlite3.Error as e:
            raise self._error(e) from None

    def _error(self, e: sqlite3.Error) -> CacheError:
        return CacheError(
            f"{self.path}: the translation cache is not a usable SQLite database ({e}); it is "
            "only a cache: delete it (and its -wal/-shm files) or pass another --cache-dir"
        )

    def setting(self, description: dict) -> str:
        text = json.dumps(description, sort_keys=True)
        sid = hashlib.sha256(text.encode()).hexdigest()[:32]
        try:
            self.db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (sid, text))
            self.db.commit()
        except sqlite3.Error as e:
            raise self._error(e) from None
        return sid

    def get(self, setting: str, sentences: Sequence[str], variant: int) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for i in range(0, len(sentences), 500):
            chunk = list(sentences[i : i + 500])
            q = (
                "SELECT sentence, output, flags FROM bt WHERE setting=? AND variant=? AND sentence IN "
                f"({','.join('?' * len(chunk))})"
            )
            try:
                for s, o, f in self.db.execute(q, [setting, variant, *chunk]):
                    out[s] = (o, f)
            except sqlite3.Error as e:
                raise self._error(e) from None
        return out

    def put(self, setting: str, variant: int, items: Iterable[tuple[str, str, int]]) -> None:
        """Store (sentence, output, flags) rows in one transaction."""
        try:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO bt VALUES (?, ?, ?, ?, ?)",
                    [(setting, s, variant, o, f) for s, o, f in items],
                )
        except sqlite3.Error as e:
            raise self._error(e) from None

    def close(self) -> None:
        self.db.close()
