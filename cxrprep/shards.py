"""Rows -> Parquet part files + manifest.json + rejects.parquet, and the streaming reader.

Writer guarantees (the shard contract, see schema.py and DESIGN.md):

* explicit schema (never inferred), so a null in a non-null column or a wrong type fails at write time;
* parts rotate by size (``max_part_bytes``), row groups are small (``row_group_bytes``/``row_group_rows``)
  so readers stream them one at a time;
* every file is written to a temporary name and renamed into place; ``manifest.json`` comes last, so a
  folder with a manifest is complete, and a killed run leaves no half file under a final name;
* deterministic bytes: rows are written in the order given (callers feed inputs in sorted order), no
  timestamps, fixed compression; the same rows give byte-identical files;
* nothing is lost silently: every input is either a row or a study-level reject, and ``close`` refuses
  to write a manifest whose ``inputs_seen`` disagrees with ``rows_written + rejects``.

``--part i/N`` runs write ``part-iofN-00000.parquet``, ``rejects-iofN.parquet`` and
``manifest-iofN.json``; ``merge_parts`` joins them into one ``manifest.json`` + ``rejects.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import (
    COLUMNS, MANIFEST, REJECT_KINDS, REJECT_LEVELS, REJECTS, REJECTS_SCHEMA, SCHEMA_VERSION,
    STUDY_SCHEMA, ShardSchemaError, check_shard, read_manifest,
)

MiB = 1 << 20
_PARQUET_OPTS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


def _version() -> str:
    from . import __version__

    return __version__


def sha256_file(path: Path, chunk: int = 4 * MiB) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: dict) -> None:
    _atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def part_tag(part: tuple[int, int] | None) -> str:
    """'' for a whole run, '3of8' for --part 3/8."""
    return "" if part is None else f"{part[0]}of{part[1]}"


def _row_bytes(row: dict) -> int:
    """Cheap size estimate of a row (dominated by image bytes) used for row-group/part rotation."""
    n = 256
    for img in row.get("images") or ():
        n += len(img.get("image") or b"") + len(img.get("image_clahe") or b"")
    for key in ("findings", "impression"):
        n += 2 * len(row.get(key) or "")
    for p in row.get("prompts") or ():
        n += len(p)
    return n


def table_row_bytes(table: pa.Table) -> list[int]:
    """``_row_bytes`` of every row of a STUDY_SCHEMA table, computed column-wise."""
    import numpy as np
    import pyarrow.compute as pc

    n = table.num_rows
    out = np.full(n, 256, dtype=np.int64)
    for key in ("findings", "impression"):
        out += 2 * pc.fill_null(pc.utf8_length(table[key]), 0).to_numpy(zero_copy_only=False)

    def per_row(lists, lengths) -> np.ndarray:
        lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        return np.bincount(parents, weights=lengths, minlength=n).astype(np.int64) if len(parents) else 0

    prompts = table["prompts"]
    if pc.sum(pc.list_value_length(prompts)).as_py():
        flat = pc.list_flatten(prompts.combine_chunks())
        out += per_row(prompts, pc.fill_null(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False))
    images = table["images"]
    if pc.sum(pc.list_value_length(images)).as_py():
        flat = pc.list_flatten(images.combine_chunks())
        size = sum(pc.fill_null(pc.binary_length(pc.struct_field(flat, k)), 0).to_numpy(zero_copy_only=False)
                   for k in ("image", "image_clahe"))
        out += per_row(images, size)
    return out.tolist()


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
        d = {k: getattr(self, k) for k in
             ("inputs_seen", "rows_written", "images_written", "skipped", "failed", "images_failed")}
        d.update(sorted(self.extra.items()))
        return d


class ShardWriter:
    """Stream rows of one dataset into ``out_root/dataset/``.

    Use as a context manager or call ``close()``; rows must be dicts with every column of STUDY_SCHEMA
    (``schema.empty_row`` gives one). Example::

        with ShardWriter(out, "mimic-cxr", config=asdict(cfg), label_names=names) as w:
            for row in rows: w.write(row)
            w.reject("files/p10/.../s1.txt", "1", stage="read", kind="failed", reason="empty file")
            w.counts.inputs_seen = n
    """

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
        self.dir = Path(out_root) / dataset
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dataset = dataset
        self.config = config or {}
        self.label_names = list(label_names)
        self.image_settings = image_settings
        self.command = command
        self.part = part
        self.tag = part_tag(part)
        self.max_part_bytes = max_part_bytes
        self.row_group_bytes = row_group_bytes
        self.row_group_rows = row_group_rows
        self.extra_manifest = extra_manifest or {}
        self.counts = Counts()
        self._buf: list[dict] = []
        self._tables: list[pa.Table] = []  # bulk pieces (write_table), before the dict rows of _buf
        self._nbuf = 0  # rows buffered in _tables + _buf
        self._buf_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._part_bytes = 0
        self._part_rows = 0
        self._parts: list[dict] = []
        self._rejects: list[dict] = []
        self._closed = False
        self._last_key: str | None = None
        self._clear_previous()

    # -- files owned by this run ---------------------------------------------------------------
    def _part_name(self, k: int) -> str:
        return f"part-{self.tag + '-' if self.tag else ''}{k:05d}.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.dir / (f"manifest-{self.tag}.json" if self.tag else MANIFEST)

    @property
    def rejects_path(self) -> Path:
        return self.dir / (f"rejects-{self.tag}.parquet" if self.tag else REJECTS)

    def _clear_previous(self) -> None:
        """A re-run replaces what an earlier (possibly killed) run of the same part wrote."""
        pattern = re.compile(rf"^(\.tmp-)?part-{re.escape(self.tag + '-') if self.tag else ''}\d{{5}}\.parquet$")
        for p in self.dir.iterdir():
            if pattern.match(p.name) or p.name.startswith(".tmp-"):
                p.unlink()
        for p in (self.manifest_path, self.rejects_path):
            p.unlink(missing_ok=True)
        if self.tag:  # a merged manifest of an earlier merge is stale now
            (self.dir / MANIFEST).unlink(missing_ok=True)
            (self.dir / REJECTS).unlink(missing_ok=True)

    # -- writing ------------------------------------------------------------------------------
    def write(self, row: dict) -> None:
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        if row["dataset"] != self.dataset:
            raise ValueError(f"row of dataset {row['dataset']!r} written to {self.dir}")
        self._buf.append(row)
        self._nbuf += 1
        self._buf_bytes += _row_bytes(row)
        self.counts.rows_written += 1
        self.counts.images_written += len(row.get("images") or ())
        if self._nbuf >= self.row_group_rows or self._buf_bytes >= self.row_group_bytes:
            self._flush()

    def write_many(self, rows: Iterable[dict]) -> None:
        for r in rows:
            self.write(r)

    def write_table(self, table: pa.Table | pa.RecordBatch, row_bytes: Sequence[int] | None = None) -> None:
        """Bulk ``write``: the rows of ``table`` (STUDY_SCHEMA), in order, giving the same row groups, parts
        and bytes as writing them one by one. ``row_bytes``: each row's size estimate (what ``write``
        computes from a row dict; computed from the table when not given)."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        n = table.num_rows
        if n == 0:
            return
        if table.schema != STUDY_SCHEMA:
            table = table.select(STUDY_SCHEMA.names).cast(STUDY_SCHEMA)
        import pyarrow.compute as pc

        if not pc.all(pc.equal(table["dataset"], self.dataset)).as_py():
            raise ValueError(f"rows of another dataset than {self.dataset!r} written to {self.dir}")
        sizes = list(row_bytes) if row_bytes is not None else table_row_bytes(table)
        if len(sizes) != n:
            raise ValueError(f"row_bytes has {len(sizes)} values for {n} rows")
        self.counts.rows_written += n
        self.counts.images_written += int(pc.sum(pc.list_value_length(table["images"])).as_py() or 0)
        if self._buf:  # keep the order of rows written one by one before this table
            self._tables.append(pa.Table.from_pylist(self._buf, schema=STUDY_SCHEMA))
            self._buf = []
        i = 0
        while i < n:
            j = i
            while j < n:
                self._buf_bytes += sizes[j]
                self._nbuf += 1
                j += 1
                if self._nbuf >= self.row_group_rows or self._buf_bytes >= self.row_group_bytes:
                    break
            self._tables.append(table.slice(i, j - i))
            i = j
            if self._nbuf >= self.row_group_rows or self._buf_bytes >= self.row_group_bytes:
                self._flush()

    def reject(self, source: str, study_id: str | None, *, stage: str, kind: str, reason: str,
               level: str = "study") -> None:
        """Record an input (level='study') or one image of a kept study (level='image') that did not
        make it, with a readable reason."""
        if kind not in REJECT_KINDS:
            raise ValueError(f"reject kind must be one of {REJECT_KINDS}, got {kind!r}")
        if level not in REJECT_LEVELS:
            raise ValueError(f"reject level must be one of {REJECT_LEVELS}, got {level!r}")
        self._rejects.append(dict(source=str(source), study_id=study_id, stage=stage, kind=kind,
                                  level=level, reason=str(reason)))
        if level == "image":
            self.counts.images_failed += 1
        elif kind == "skipped":
            self.counts.skipped += 1
        else:
            self.counts.failed += 1

    def _flush(self) -> None:
        if not self._nbuf:
            return
        pieces = self._tables + ([pa.Table.from_pylist(self._buf, schema=STUDY_SCHEMA)] if self._buf else [])
        table = pieces[0] if len(pieces) == 1 else pa.concat_tables(pieces)
        table = table.combine_chunks()  # one chunk per column: the same bytes however rows arrived
        if self._writer is None:
            self._open_part()
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._part_bytes += self._buf_bytes
        self._part_rows += table.num_rows
        self._buf, self._tables, self._nbuf, self._buf_bytes = [], [], 0, 0
        if self._part_bytes >= self.max_part_bytes:
            self._close_part()

    def _open_part(self) -> None:
        name = self._part_name(len(self._parts))
        self._cur_name = name
        self._cur_tmp = self.dir / f".tmp-{name}"
        self._writer = pq.ParquetWriter(self._cur_tmp, STUDY_SCHEMA, **_PARQUET_OPTS)

    def _close_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        final = self.dir / self._cur_name
        os.replace(self._cur_tmp, final)
        self._parts.append(dict(file=self._cur_name, rows=self._part_rows, bytes=final.stat().st_size,
                                sha256=sha256_file(final)))
        self._writer = None
        self._part_bytes = self._part_rows = 0

    def close(self) -> dict:
        """Flush, write rejects and manifest; return the manifest. Raises ValueError if the counts do not
        add up (inputs_seen must equal rows_written + skipped + failed)."""
        if self._closed:
            return self.manifest
        self._flush()
        self._close_part()
        c = self.counts
        if c.inputs_seen == 0 and (c.rows_written or c.skipped or c.failed):
            c.inputs_seen = c.rows_written + c.skipped + c.failed
        if c.inputs_seen != c.rows_written + c.skipped + c.failed:
            raise ValueError(
                f"{self.dir}: inputs seen {c.inputs_seen} != rows written {c.rows_written} + skipped "
                f"{c.skipped} + failed {c.failed}; an input was lost (this is a cxrkit bug, please report)"
            )
        rejects = pa.Table.from_pylist(self._rejects, schema=REJECTS_SCHEMA)
        tmp = self.rejects_path.with_name(".tmp-" + self.rejects_path.name)
        pq.write_table(rejects, tmp, **_PARQUET_OPTS)
        os.replace(tmp, self.rejects_path)
        self.manifest = dict(
            schema_version=SCHEMA_VERSION,
            dataset=self.dataset,
            cxrkit_version=_version(),
            command=self.command,
            part=None if self.part is None else list(self.part),
            config=self.config,
            label_names=self.label_names,
            image_settings=self.image_settings,
            counts=c.as_dict(),
            parts=self._parts,
            rejects=dict(file=self.rejects_path.name, rows=len(self._rejects)),
            **self.extra_manifest,
        )
        atomic_write_json(self.manifest_path, self.manifest)
        self._closed = True
        return self.manifest

    def abort(self) -> None:
        """Drop the open temporary part (used when the run is interrupted)."""
        if self._writer is not None:
            self._writer.close()
            Path(self._cur_tmp).unlink(missing_ok=True)
            self._writer = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def merge_parts(dataset_dir: str | Path) -> dict:
    """Join the manifests and rejects of ``--part i/N`` runs into manifest.json + rejects.parquet.

    Checks that all N parts are present, that they ran with the same config, and that every part file
    exists with its recorded sha256. Returns the merged manifest."""
    d = Path(dataset_dir)
    found = sorted(d.glob("manifest-*of*.json"))
    if not found:
        raise ShardSchemaError(f"{d}: no manifest-iofN.json files to merge (did the --part runs finish?)")
    mans = [json.loads(p.read_text()) for p in found]
    totals = {m["part"][1] for m in mans}
    if len(totals) != 1:
        raise ShardSchemaError(f"{d}: part manifests disagree on N: {sorted(totals)}")
    n = totals.pop()
    have = sorted(m["part"][0] for m in mans)
    missing = sorted(set(range(n)) - set(have))
    if missing:
        raise ShardSchemaError(f"{d}: parts {missing} of {n} are missing; run them with --part i/{n}")
    mans.sort(key=lambda m: m["part"][0])
    ref = {k: mans[0][k] for k in ("dataset", "label_names", "image_settings", "command")}
    cfg0 = {k: v for k, v in mans[0]["config"].items() if k != "part"}
    for m in mans[1:]:
        cfg = {k: v for k, v in m["config"].items() if k != "part"}
        if cfg != cfg0 or any(m[k] != v for k, v in ref.items()):
            raise ShardSchemaError(f"{d}: part {m['part'][0]} ran with different options than part 0")
    parts, counts, rejects = [], {}, []
    for m in mans:
        for p in m["parts"]:
            f = d / p["file"]
            if not f.exists() or sha256_file(f) != p["sha256"]:
                raise ShardSchemaError(f"{f}: missing or changed since part {m['part'][0]} wrote it")
            parts.append(p)
        for k, v in m["counts"].items():
            counts[k] = counts.get(k, 0) + v
        rejects.append(pq.read_table(d / m["rejects"]["file"], schema=REJECTS_SCHEMA))
    table = pa.concat_tables(rejects) if rejects else REJECTS_SCHEMA.empty_table()
    tmp = d / f".tmp-{REJECTS}"
    pq.write_table(table, tmp, **_PARQUET_OPTS)
    os.replace(tmp, d / REJECTS)
    merged = dict(mans[0])
    merged.update(part=None, merged_from=[p.name for p in found], counts=counts, parts=parts,
                  rejects=dict(file=REJECTS, rows=table.num_rows))
    merged["config"] = dict(cfg0, part=None)
    atomic_write_json(d / MANIFEST, merged)
    return merged


# -- reading ------------------------------------------------------------------------------------
def find_datasets(root: str | Path) -> list[Path]:
    """Every dataset folder (one holding manifest.json or part manifests) at or below ``root``, sorted."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"shard root {root} does not exist")
    if (root / MANIFEST).exists() or any(root.glob("manifest-*of*.json")):
        return [root]
    found = sorted({p.parent for p in root.rglob(MANIFEST)} | {p.parent for p in root.rglob("manifest-*of*.json")})
    # hidden folders hold work in progress (e.g. `cxrprep augment`'s .augment-NAME/), never a dataset
    found = [d for d in found if not any(part.startswith(".") for part in d.relative_to(root).parts)]
    if not found:
        raise FileNotFoundError(f"no cxrkit dataset folders (with {MANIFEST}) under {root}")
    return found


@dataclass(frozen=True)
class RowGroup:
    """One streamable unit: row group ``index`` of part ``path`` with ``rows`` rows."""

    path: Path
    index: int
    rows: int


class ShardDataset:
    """A finished dataset folder: manifest + checked part files, read row group by row group."""

    def __init__(self, dataset_dir: str | Path, verify: bool = False) -> None:
        self.dir = Path(dataset_dir)
        self.manifest = read_manifest(self.dir)
        self.name = self.manifest["dataset"]
        self.label_names: list[str] = list(self.manifest["label_names"])
        self.paths = [self.dir / p["file"] for p in self.manifest["parts"]]
        for p, meta in zip(self.paths, self.manifest["parts"]):
            if not p.exists():
                raise ShardSchemaError(f"{p}: listed in {self.dir / MANIFEST} but missing")
            check_shard(p)
            if verify and sha256_file(p) != meta["sha256"]:
                raise ShardSchemaError(f"{p}: sha256 differs from {self.dir / MANIFEST}; the file changed")

    @property
    def num_rows(self) -> int:
        return sum(p["rows"] for p in self.manifest["parts"])

    def row_groups(self) -> list[RowGroup]:
        out = []
        for p in self.paths:
            md = pq.ParquetFile(p).metadata
            out.extend(RowGroup(p, i, md.row_group(i).num_rows) for i in range(md.num_row_groups))
        return out

    def iter_batches(self, columns: Sequence[str] | None = None, row_groups: Sequence[RowGroup] | None = None,
                     split: str | None = None) -> Iterator[pa.RecordBatch]:
        """Stream record batches, one row group at a time (memory bounded by the largest row group)."""
        cols = list(columns) if columns else None
        if cols and split and "split" not in cols:
            cols.append("split")
        if cols:
            unknown = [c for c in cols if c not in COLUMNS]
            if unknown:
                raise ValueError(f"unknown shard columns {unknown}; known: {list(COLUMNS)}")
        groups = row_groups if row_groups is not None else self.row_groups()
        files: dict[Path, pq.ParquetFile] = {}
        for g in groups:
            pf = files.get(g.path) or files.setdefault(g.path, pq.ParquetFile(g.path))
            table = pf.read_row_group(g.index, columns=cols)
            if split is not None:
                import pyarrow.compute as pc

                table = table.filter(pc.equal(table["split"], split))
            for b in table.to_batches():
                if b.num_rows:
                    yield b

    def iter_rows(self, columns: Sequence[str] | None = None, split: str | None = None) -> Iterator[dict]:
        for b in self.iter_batches(columns, split=split):
            yield from b.to_pylist()

    def read_table(self, columns: Sequence[str] | None = None, split: str | None = None) -> pa.Table:
        batches = list(self.iter_batches(columns, split=split))
        if not batches:
            schema = STUDY_SCHEMA if not columns else pa.schema([STUDY_SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        return pa.Table.from_batches(batches)


def open_datasets(roots: Iterable[str | Path], verify: bool = False) -> list[ShardDataset]:
    """All dataset folders under the given shard roots, checked."""
    out: list[ShardDataset] = []
    for r in roots:
        out.extend(ShardDataset(d, verify=verify) for d in find_datasets(r))
    return out


def summary_lines(manifest: dict, out_dir: Path | None = None) -> list[str]:
    """A short human summary of a manifest (printed at the end of every cxrprep command)."""
    c = manifest["counts"]
    rejects = c["skipped"] + c["failed"]
    ok = c["inputs_seen"] == c["rows_written"] + rejects
    lines = [
        f"dataset {manifest['dataset']}" + (f" -> {out_dir}" if out_dir else ""),
        f"  inputs seen {c['inputs_seen']:,} = rows written {c['rows_written']:,} + rejects {rejects:,}"
        f" (skipped {c['skipped']:,}, failed {c['failed']:,})" + ("" if ok else "  MISMATCH"),
        f"  images written {c['images_written']:,}, image failures {c['images_failed']:,}",
        f"  parts {len(manifest['parts'])}, rejects in {manifest['rejects']['file']}",
    ]
    extra = {k: v for k, v in c.items() if k not in
             ("inputs_seen", "rows_written", "images_written", "skipped", "failed", "images_failed")}
    if extra:
        lines.append("  " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in extra.items()))
    return lines
