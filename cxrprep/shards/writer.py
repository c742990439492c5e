"""ShardWriter: rows of one dataset -> ``NAME/data/SPLIT-*.parquet`` + rejects.jsonl + README.md +
manifest.json (the layout is described in cxrprep/schema.py).

Guarantees (the shard contract):

* explicit schema (never inferred): a null in a non-null column, a wrong type or a label list of the
  wrong length fails at write time;
* one file set per split; files rotate by size (``max_part_bytes``), row groups are small
  (``row_group_bytes``/``row_group_rows``) so readers stream them one at a time;
* one writer per folder: the run holds the folder's lock (see lock.py) from start to end;
* data files are written under temporary names owned by this run (or piece) and get their final names
  only in ``close``; the previous finished output of the same run (or piece) stays in place until then,
  and ``manifest.json`` comes last, so a folder with a manifest is complete, and an interrupted or failed
  run leaves no visible data file of its own (``abort`` removes its temporary files);
* deterministic bytes: rows are written in the order given per split, no timestamps, fixed compression;
* nothing is lost silently: every input is a row or a study-level reject, and ``close`` refuses to write
  a manifest whose ``inputs_seen`` disagrees with ``rows_written + rejects``;
* a failed write (disk full, folder removed) raises ShardWriteError naming the path and the cause, after
  removing the run's temporary files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from cxrprep.schema import (
    CARD,
    DATA_DIR,
    DATA_FILE_RE,
    MANIFEST,
    REJECT_KINDS,
    REJECT_LEVELS,
    REJECTS,
    SCHEMA_VERSION,
    STUDY_SCHEMA,
    data_file_name,
    file_schema,
    to_file_rows,
    to_file_table,
)
from cxrprep.shards.card import card_text, split_order
from cxrprep.shards.files import (
    PARQUET_OPTS,
    DatasetExists,
    MiB,
    atomic_write_bytes,
    invocation,
    manifest_bytes,
    refuse_finished,
    rejects_bytes,
    sha256_file,
    stable_reason,
    write_failure,
)
from cxrprep.shards.lock import DatasetLock
from cxrprep.shards.rowsize import row_bytes, table_row_bytes

# the manifest keys ShardWriter.close fills itself (in this order)
WRITER_KEYS = ("schema_version", "dataset", "cxrkit_version", "command", "invocation", "part", "config")
WRITER_KEYS += ("label_names", "image_settings", "counts", "splits", "parts", "rejects")
_SPLIT_RE = re.compile(r"[A-Za-z0-9_]+")


def _version() -> str:
    from cxrprep import __version__

    return __version__


def part_tag(part: tuple[int, int] | None) -> str:
    """'' for a whole run, '3of8' for --part 3/8."""
    return "" if part is None else f"{part[0]}of{part[1]}"


@dataclass
class Counts:
    """Counters that end up in manifest.json."""

    inputs_seen: int = 0
    rows_written: int = 0
    images_written: int = 0
    skipped: int = 0
    failed: int = 0
    images_failed: int = 0
    extra: dict = field(default_factory=dict)  # command-specific counters (e.g. fallback sections)

    def as_dict(self) -> dict:
        d = {
            k: getattr(self, k)
            for k in ("inputs_seen", "rows_written", "images_written", "skipped", "failed", "images_failed")
        }
        d.update(sorted(self.extra.items()))
        return d


#: pieces a split holds before they are joined: a small split gets a few rows from each table, and each piece
#: keeps ~100 Arrow buffers (issue 25: memory grew ~60 bytes per report until validate filled a row group)
_MAX_PIECES = 16


@dataclass
class _Split:
    """Write state of one split: the row buffer, the open file and the files closed so far."""

    buf: list = field(default_factory=list)  # row dicts (STUDY_SCHEMA shape), after the pieces
    pieces: list = field(default_factory=list)  # on-disk-shaped tables from write_table, before buf
    nbuf: int = 0  # rows buffered in pieces + buf
    buf_bytes: int = 0
    writer: pq.ParquetWriter | None = None
    tmp: Path | None = None
    file_bytes: int = 0
    file_rows: int = 0
    files: list = field(default_factory=list)  # dict(tmp, rows, bytes, sha256)


class ShardWriter:
    """Stream rows of one dataset into ``out_root/dataset/``.

    Use as a context manager (an exception inside aborts: nothing of this run stays visible) or call
    ``close()``; rows must be dicts with every column of STUDY_SCHEMA (``schema.empty_row`` gives one)::

        with ShardWriter(out, "mimic-cxr", config=asdict(cfg), label_names=names) as w:
            for row in rows: w.write(row)
            w.reject("files/p10/.../s1.txt", "1", stage="read", kind="failed", reason="empty file")
            w.counts.inputs_seen = n

    Raises ValueError for a bad ``out_root``/name, DatasetBusy (a ValueError) when another run holds
    the folder, ShardWriteError when writing fails."""

    def __init__(
        self,
        out_root: str | Path,
        dataset: str,
        *,
        config: dict | None = None,
        label_names: Sequence[str] = (),
        image_settings: dict | None = None,
        command: str = "",
        part: tuple[int, int] | None = None,
        max_part_bytes: int = 256 * MiB,
        row_group_bytes: int = 32 * MiB,
        row_group_rows: int = 2048,
        extra_manifest: dict | None = None,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", dataset):
            raise ValueError(f"dataset name {dataset!r} must be letters, digits, '.', '_' or '-'")
        out_root = Path(out_root)
        for p, what in ((out_root, "--out"), (out_root / dataset, "the dataset folder")):
            if p.exists() and not p.is_dir():
                raise ValueError(f"{what} {p} is a file; it must be a folder (the shard root, e.g. --out shards/)")
        self.dir = out_root / dataset
        self.dataset = dataset
        self.config = dict(config or {})
        overwrite = self.config.pop("overwrite", True)  # the commands' --overwrite decides; it is not recorded
        self.label_names = list(label_names)
        self.schema = file_schema(self.label_names)
        self.image_settings = image_settings
        self.command = command
        self.part = part
        self.tag = part_tag(part)
        self.max_part_bytes = max_part_bytes
        self.row_group_bytes = row_group_bytes
        self.row_group_rows = row_group_rows
        self.extra_manifest = extra_manifest or {}
        self.counts = Counts()
        self._splits: dict[str, _Split] = {}
        self._rejects: list[dict] = []
        self._closed = False
        self._aborted = False
        self.manifest: dict | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as e:
            raise ValueError(f"cannot create the dataset folder {self.dir}: a path component is a file ({e})") from e
        except OSError as e:
            raise write_failure(self.dir, e) from e
        self._lock = DatasetLock(self.dir, self.tag).acquire()
        try:
            refuse_finished(self.dir, overwrite)
            (self.dir / DATA_DIR).mkdir(exist_ok=True)
            self._remove_stale_tmp()
        except DatasetExists:
            self._lock.release()
            raise
        except OSError as e:
            self._lock.release()
            raise write_failure(self.dir, e) from e

    # -- names ------------------------------------------------------------------------------------
    @property
    def tmp_prefix(self) -> str:
        """Temporary files of this run start with this (a piece never touches another piece's)."""
        return f".tmp-{self.tag or 'all'}-"

    @property
    def manifest_path(self) -> Path:
        return self.dir / (f"manifest-{self.tag}.json" if self.tag else MANIFEST)

    @property
    def rejects_path(self) -> Path:
        return self.dir / (f"rejects-{self.tag}.jsonl" if self.tag else REJECTS)

    def _remove_stale_tmp(self) -> None:
        """Temporary files a killed run of this same run/piece left (we hold its lock, so none is live)."""
        for folder in (self.dir, self.dir / DATA_DIR):
            for p in folder.iterdir():
                # a whole run holds the lock exclusively: every temporary file is a dead run's
                if p.name.startswith(self.tmp_prefix if self.tag else ".tmp-"):
                    p.unlink(missing_ok=True)

    # -- writing ----------------------------------------------------------------------------------
    def write(self, row: dict) -> None:
        if self._closed or self._aborted:
            raise RuntimeError("ShardWriter is closed")
        if row["dataset"] != self.dataset:
            raise ValueError(f"row of dataset {row['dataset']!r} written to {self.dir}")
        split = row.get("split")
        if not isinstance(split, str) or not _SPLIT_RE.fullmatch(split):
            raise ValueError(f"row {row.get('study_id')!r}: split {split!r} must be letters, digits or '_'")
        st = self._splits.get(split) or self._splits.setdefault(split, _Split())
        st.buf.append(row)
        st.nbuf += 1
        st.buf_bytes += row_bytes(row)
        self.counts.rows_written += 1
        self.counts.images_written += len(row.get("images") or ())
        if st.nbuf >= self.row_group_rows or st.buf_bytes >= self.row_group_bytes:
            self._guarded(self._flush, split)

    def write_table(self, table: pa.Table | pa.RecordBatch, row_bytes: Sequence[int] | None = None) -> None:
        """Bulk ``write``: the rows of ``table`` (STUDY_SCHEMA), in order, giving the same row groups, files
        and bytes as writing them one by one. ``row_bytes``: each row's size estimate (what ``write``
        computes from a row dict; computed from the table when not given)."""
        import numpy as np
        import pyarrow.compute as pc

        if self._closed or self._aborted:
            raise RuntimeError("ShardWriter is closed")
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        n = table.num_rows
        if n == 0:
            return
        if table.schema != STUDY_SCHEMA:
            table = table.select(STUDY_SCHEMA.names).cast(STUDY_SCHEMA)
        if not pc.all(pc.equal(table["dataset"], self.dataset)).as_py():
            raise ValueError(f"rows of another dataset than {self.dataset!r} written to {self.dir}")
        sizes = np.asarray(list(row_bytes) if row_bytes is not None else table_row_bytes(table), dtype=np.int64)
        if len(sizes) != n:
            raise ValueError(f"row_bytes has {len(sizes)} values for {n} rows")
        splits = table["split"].to_pylist()
        for sp in dict.fromkeys(splits):
            if not isinstance(sp, str) or not _SPLIT_RE.fullmatch(sp):
                raise ValueError(f"split {sp!r} must be letters, digits or '_'")
        self.counts.rows_written += n
        self.counts.images_written += int(pc.sum(pc.list_value_length(table["images"])).as_py() or 0)
        split_arr = np.asarray(splits, dtype=object)
        for sp in dict.fromkeys(splits):
            idx = np.flatnonzero(split_arr == sp)
            sub = table.take(pa.array(idx)) if len(idx) != n else table
            sub = to_file_table(sub, self.label_names)
            sub_sizes = sizes[idx]
            st = self._splits.get(sp) or self._splits.setdefault(sp, _Split())
            if st.buf:  # keep the order of rows written one by one before this table
                st.pieces.append(pa.Table.from_pylist(to_file_rows(st.buf, self.label_names), schema=self.schema))
                st.buf = []
            i, m = 0, sub.num_rows
            while i < m:
                j = i
                while j < m:
                    st.buf_bytes += int(sub_sizes[j])
                    st.nbuf += 1
                    j += 1
                    if st.nbuf >= self.row_group_rows or st.buf_bytes >= self.row_group_bytes:
                        break
                st.pieces.append(sub.slice(i, j - i))
                i = j
                if st.nbuf >= self.row_group_rows or st.buf_bytes >= self.row_group_bytes:
                    self._guarded(self._flush, sp)
                elif len(st.pieces) >= _MAX_PIECES:
                    st.pieces = [pa.concat_tables(st.pieces).combine_chunks()]

    def write_many(self, rows: Iterable[dict]) -> None:
        for r in rows:
            self.write(r)

    def reject(
        self, source: str, study_id: str | None, *, stage: str, kind: str, reason: str, level: str = "study"
    ) -> None:
        """Record an input (level='study') or one image of a kept study (level='image') that did not
        make it, with a readable reason."""
        if kind not in REJECT_KINDS:
            raise ValueError(f"reject kind must be one of {REJECT_KINDS}, got {kind!r}")
        if level not in REJECT_LEVELS:
            raise ValueError(f"reject level must be one of {REJECT_LEVELS}, got {level!r}")
        self._rejects.append(
            dict(
                source=str(source), study_id=study_id, stage=stage, kind=kind, level=level, reason=stable_reason(reason)
            )
        )
        if level == "image":
            self.counts.images_failed += 1
        elif kind == "skipped":
            self.counts.skipped += 1
        else:
            self.counts.failed += 1

    def _guarded(self, fn, *args):
        """Run a step that writes; an OSError aborts the run and becomes a ShardWriteError naming the cause."""
        try:
            return fn(*args)
        except OSError as e:
            path = getattr(e, "filename", None) or self.dir
            self.abort()
            raise write_failure(Path(path), e) from e

    def _flush(self, split: str) -> None:
        st = self._splits[split]
        if not st.nbuf:
            return
        pieces = st.pieces + (
            [pa.Table.from_pylist(to_file_rows(st.buf, self.label_names), schema=self.schema)] if st.buf else []
        )
        table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
        table = table.combine_chunks()  # one chunk per column: the same bytes however the rows arrived
        if st.writer is None:
            # beside data/, hidden, not *.parquet: data/ only ever holds finished files, and no reader or
            # glob takes a file in progress (or one a kill -9 left) for data
            st.tmp = self.dir / f"{self.tmp_prefix}{split}-{len(st.files):05d}.partial"
            st.writer = pq.ParquetWriter(st.tmp, self.schema, **PARQUET_OPTS)
        st.writer.write_table(table, row_group_size=table.num_rows)
        st.file_bytes += st.buf_bytes
        st.file_rows += table.num_rows
        st.buf, st.pieces, st.nbuf, st.buf_bytes = [], [], 0, 0
        if st.file_bytes >= self.max_part_bytes:
            self._close_file(st)

    def _close_file(self, st: _Split) -> None:
        if st.writer is None:
            return
        w, st.writer = st.writer, None
        w.close()
        st.files.append(dict(tmp=st.tmp, rows=st.file_rows, bytes=st.tmp.stat().st_size, sha256=sha256_file(st.tmp)))
        st.file_bytes = st.file_rows = 0

    # -- finishing --------------------------------------------------------------------------------
    def _stale_outputs(self) -> list[Path]:
        """Finished files of an earlier run that this run's output replaces (we hold the lock)."""
        data = self.dir / DATA_DIR
        stale = []
        for p in data.iterdir():
            m = re.fullmatch(DATA_FILE_RE, p.name)
            if not m:
                continue
            # a whole run replaces everything; a piece replaces its own files and a whole run's
            if not self.tag or m["tag"] in (None, self.tag):
                stale.append(p)
        if not self.tag:
            stale += sorted(self.dir.glob("manifest-*of*.json")) + sorted(self.dir.glob("rejects-*of*.jsonl"))
        stale += [self.dir / CARD, self.dir / REJECTS]  # a merged card/rejects is stale after a piece re-ran
        return stale

    def close(self) -> dict:
        """Flush, publish the data files, rejects, card and manifest; return the manifest. Raises
        ValueError if the counts do not add up (inputs_seen must equal rows_written + skipped + failed)."""
        if self._closed:
            return self.manifest
        if self._aborted:
            raise RuntimeError("ShardWriter was aborted")
        try:
            return self._guarded(self._close)
        except BaseException:
            self.abort()
            raise

    def _close(self) -> dict:
        for split in list(self._splits):
            self._flush(split)
            self._close_file(self._splits[split])
        c = self.counts
        if c.inputs_seen == 0 and (c.rows_written or c.skipped or c.failed):
            c.inputs_seen = c.rows_written + c.skipped + c.failed
        if c.inputs_seen != c.rows_written + c.skipped + c.failed:
            raise ValueError(
                f"{self.dir}: inputs seen {c.inputs_seen} != rows written {c.rows_written} + skipped "
                f"{c.skipped} + failed {c.failed}; an input was lost (this is a cxrkit bug, please report)"
            )
        parts, renames, splits = [], [], {}
        for split in split_order(self._splits):
            files = self._splits[split].files
            splits[split] = sum(f["rows"] for f in files)
            for k, f in enumerate(files):
                name = data_file_name(split, self.tag, k, len(files))
                renames.append((f["tmp"], self.dir / name))
                parts.append(dict(file=name, split=split, rows=f["rows"], bytes=f["bytes"], sha256=f["sha256"]))
        manifest = dict(
            schema_version=SCHEMA_VERSION,
            dataset=self.dataset,
            cxrkit_version=_version(),
            command=self.command,
            invocation=invocation(),
            part=None if self.part is None else list(self.part),
            config=self.config,
            label_names=self.label_names,
            image_settings=self.image_settings,
            counts=c.as_dict(),
            splits=splits,
            parts=parts,
            rejects=dict(file=self.rejects_path.name, rows=len(self._rejects)),
        )
        for k, v in self.extra_manifest.items():
            manifest.setdefault(k, v)
        mbytes = manifest_bytes(manifest)
        # publish: the old manifest goes first (the folder is incomplete from here), the new one last
        self.manifest_path.unlink(missing_ok=True)
        if self.tag:
            (self.dir / MANIFEST).unlink(missing_ok=True)
        for p in self._stale_outputs():
            p.unlink(missing_ok=True)
        for tmp, final in renames:
            os.replace(tmp, final)
        owner = self.tag or "all"
        atomic_write_bytes(self.rejects_path, rejects_bytes(self._rejects), owner)
        if not self.tag:  # pieces get their card from `cxrprep merge`
            atomic_write_bytes(self.dir / CARD, card_text(manifest, mbytes).encode(), owner)
        atomic_write_bytes(self.manifest_path, mbytes, owner)
        self.manifest = manifest
        self._closed = True
        self._lock.release()
        return manifest

    def abort(self) -> None:
        """Drop everything this run had not finished (open and closed temporary files) and release the
        folder; used when the run is interrupted or fails. Idempotent."""
        if self._closed or self._aborted:
            return
        self._aborted = True
        for st in self._splits.values():
            if st.writer is not None:
                try:
                    st.writer.close()
                except Exception:  # noqa: BLE001 - the disk may be full; the file is removed anyway
                    pass
                st.writer = None
            for p in [f["tmp"] for f in st.files] + ([st.tmp] if st.tmp else []):
                Path(p).unlink(missing_ok=True)
        try:
            self._remove_stale_tmp()
        except OSError:
            pass
        self._lock.release()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
