"""Finding and reading dataset folders: ``find_datasets``, ``ShardDataset`` (streams row groups as
STUDY_SCHEMA batches), ``open_datasets`` and the summary printed by every cxrprep command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from cxrprep.schema import (
    COLUMNS,
    DATA_DIR,
    LOCK,
    MANIFEST,
    STUDY_SCHEMA,
    ShardSchemaError,
    check_shard,
    from_file_batch,
    read_manifest,
)
from cxrprep.shards.files import read_rejects, sha256_file


class IncompleteDataset(ShardSchemaError):
    """A dataset folder without manifest.json: a killed or running cxrprep run, or unmerged pieces."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        super().__init__(
            "incomplete dataset folder"
            + ("s " if len(folders) > 1 else " ")
            + ", ".join(map(str, folders))
            + f": no {MANIFEST} (a cxrprep run was killed or is still writing, or --part pieces were not"
            " merged with `cxrprep merge`); re-run the command that writes it"
        )


def _is_dataset_folder(d: Path) -> bool:
    """A folder a cxrprep writer made or is making (finished or not)."""
    return (
        (d / MANIFEST).exists() or (d / LOCK).exists() or (d / DATA_DIR).is_dir() or any(d.glob("manifest-*of*.json"))
    )


def scan_datasets(root: str | Path) -> tuple[list[Path], list[Path]]:
    """(finished, incomplete) dataset folders at or below ``root``, each sorted. Hidden folders hold work
    in progress (e.g. `cxrprep augment`'s .augment-NAME/) and are never datasets."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"shard root {root} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"shard root {root} is a file, not a folder")
    if _is_dataset_folder(root):
        found = [root]
    else:
        marks = {p.parent for name in (MANIFEST, LOCK, "manifest-*of*.json") for p in root.rglob(name)}
        marks |= {p.parent for p in root.rglob(DATA_DIR) if p.is_dir() and any(p.glob("*.parquet"))}
        found = sorted(d for d in marks if not any(part.startswith(".") for part in d.relative_to(root).parts))
        # a data/ folder inside a dataset folder is not a dataset of its own
        found = [d for d in found if not (d.name == DATA_DIR and d.parent in found)]
    done = [d for d in found if (d / MANIFEST).exists()]
    return done, [d for d in found if d not in done]


def find_datasets(root: str | Path, skip_incomplete: bool = False) -> list[Path]:
    """Every finished dataset folder (one holding manifest.json) at or below ``root``, sorted. Raises
    IncompleteDataset naming the folders without a manifest unless ``skip_incomplete``."""
    done, incomplete = scan_datasets(root)
    if incomplete and not skip_incomplete:
        raise IncompleteDataset(incomplete)
    if not done and not incomplete:
        raise FileNotFoundError(f"no cxrkit dataset folders (with {MANIFEST}) under {root}")
    return done


def finished_datasets(roots: Iterable[str | Path], skip_incomplete: bool = False) -> tuple[list[Path], list[Path]]:
    """(finished dataset folders, skipped incomplete ones) under every root. Raises IncompleteDataset
    naming every folder without a manifest unless ``skip_incomplete``; FileNotFoundError when a root
    holds no dataset folder at all."""
    done, incomplete = [], []
    for r in roots:
        d, i = scan_datasets(r)
        if not d and not i:
            raise FileNotFoundError(f"no cxrkit dataset folders (with {MANIFEST}) under {r}")
        done += d
        incomplete += i
    if incomplete and not skip_incomplete:
        raise IncompleteDataset(incomplete)
    return done, incomplete


@dataclass(frozen=True)
class RowGroup:
    """One streamable unit: row group ``index`` of data file ``path`` with ``rows`` rows."""

    path: Path
    index: int
    rows: int


class ShardDataset:
    """A finished dataset folder: manifest + checked data files, read row group by row group. Batches
    come in the STUDY_SCHEMA shape (``labels`` a list in ``label_names`` order, image bytes)."""

    def __init__(self, dataset_dir: str | Path, verify: bool = False) -> None:
        self.dir = Path(dataset_dir)
        self.manifest = read_manifest(self.dir)
        self.name = self.manifest["dataset"]
        self.label_names: list[str] = list(self.manifest["label_names"])
        self.paths = [self.dir / p["file"] for p in self.manifest["parts"]]
        self.split_of = {self.dir / p["file"]: p.get("split") for p in self.manifest["parts"]}
        for p, meta in zip(self.paths, self.manifest["parts"]):
            if not p.exists():
                raise ShardSchemaError(f"{p}: listed in {self.dir / MANIFEST} but missing")
            check_shard(p, self.label_names)
            if verify and sha256_file(p) != meta["sha256"]:
                raise ShardSchemaError(f"{p}: sha256 differs from {self.dir / MANIFEST}; the file changed")
        if verify:
            self._check_no_strays()

    def _check_no_strays(self) -> None:
        """Every file under data/ must be one the manifest lists: pyarrow, polars and datasets read the whole
        folder, so a stray copy (``train-00000-of-00001 (1).parquet``) would add its rows to theirs. Hidden
        names (``.tmp-*``) are skipped by those readers and here."""
        listed = {p.resolve() for p in self.paths}
        data = self.dir / DATA_DIR
        strays = sorted(
            str(p.relative_to(self.dir))
            for p in (data.rglob("*") if data.is_dir() else [])
            if not p.is_dir() and not p.name.startswith(".") and p.resolve() not in listed
        )
        if strays:
            more = f" and {len(strays) - 3} more" if len(strays) > 3 else ""
            raise ShardSchemaError(
                f"{self.dir}: {len(strays)} file(s) in {DATA_DIR}/ not listed in {MANIFEST}: "
                f"{', '.join(repr(s) for s in strays[:3])}{more}; pyarrow and polars would read their rows too: "
                f"remove them"
            )

    @property
    def num_rows(self) -> int:
        return sum(p["rows"] for p in self.manifest["parts"])

    @property
    def splits(self) -> dict[str, int]:
        """Rows per split, from the manifest."""
        return dict(self.manifest.get("splits") or {})

    def rejects(self) -> list[dict]:
        """The dataset's rejects (one dict per input or image that did not make it)."""
        return read_rejects(self.dir / self.manifest["rejects"]["file"])

    def row_groups(self, split: str | None = None) -> list[RowGroup]:
        """Row groups of every data file (of ``split``'s files only, when given)."""
        out = []
        for p in self.paths:
            if split is not None and self.split_of.get(p) not in (None, split):
                continue
            md = pq.ParquetFile(p).metadata
            out.extend(RowGroup(p, i, md.row_group(i).num_rows) for i in range(md.num_row_groups))
        return out

    def iter_batches(
        self,
        columns: Sequence[str] | None = None,
        row_groups: Sequence[RowGroup] | None = None,
        split: str | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream record batches, one row group at a time (memory bounded by the largest row group)."""
        cols = list(columns) if columns else None
        if cols and split and "split" not in cols:
            cols.append("split")
        if cols:
            unknown = [c for c in cols if c not in COLUMNS]
            if unknown:
                raise ValueError(f"unknown shard columns {unknown}; known: {list(COLUMNS)}")
        groups = row_groups if row_groups is not None else self.row_groups(split)
        files: dict[Path, pq.ParquetFile] = {}
        for g in groups:
            if split is not None and self.split_of.get(g.path) not in (None, split):
                continue
            try:
                pf = files.get(g.path) or files.setdefault(g.path, pq.ParquetFile(g.path))
                table = pf.read_row_group(g.index, columns=cols)
            except (OSError, pa.ArrowException) as e:  # a corrupt page: "ZSTD decompression failed", ...
                cause = " ".join(str(e).split())[:200]
                raise ShardSchemaError(
                    f"{g.path}: row group {g.index} cannot be read ({cause}); the file is damaged: check it with "
                    f"cxrprep inspect --verify {self.dir} and write the dataset again"
                ) from None
            if split is not None and self.split_of.get(g.path) is None:
                import pyarrow.compute as pc

                table = table.filter(pc.equal(table["split"], split))
            for b in table.to_batches():
                if b.num_rows:
                    yield from_file_batch(b)

    def iter_rows(self, columns: Sequence[str] | None = None, split: str | None = None) -> Iterator[dict]:
        for b in self.iter_batches(columns, split=split):
            yield from b.to_pylist()

    def read_table(self, columns: Sequence[str] | None = None, split: str | None = None) -> pa.Table:
        batches = list(self.iter_batches(columns, split=split))
        if not batches:
            schema = STUDY_SCHEMA if not columns else pa.schema([STUDY_SCHEMA.field(c) for c in columns])
            return schema.empty_table()
        return pa.Table.from_batches(batches)


def open_datasets(
    roots: Iterable[str | Path], verify: bool = False, skip_incomplete: bool = False
) -> list[ShardDataset]:
    """All finished dataset folders under the given shard roots, checked. A folder without a manifest
    raises IncompleteDataset naming it, unless ``skip_incomplete``."""
    out: list[ShardDataset] = []
    for r in roots:
        out.extend(ShardDataset(d, verify=verify) for d in find_datasets(r, skip_incomplete=skip_incomplete))
    return out


def summary_lines(manifest: dict, out_dir: Path | None = None) -> list[str]:
    """A short human summary of a manifest (printed at the end of every cxrprep command)."""
    c = manifest["counts"]
    rejects = c["skipped"] + c["failed"]
    ok = c["inputs_seen"] == c["rows_written"] + rejects
    splits = manifest.get("splits") or {}
    lines = [
        f"dataset {manifest['dataset']}" + (f" -> {out_dir}" if out_dir else ""),
        f"  inputs seen {c['inputs_seen']:,} = rows written {c['rows_written']:,} + rejects {rejects:,}"
        f" (skipped {c['skipped']:,}, failed {c['failed']:,})" + ("" if ok else "  MISMATCH"),
        f"  images written {c['images_written']:,}, image failures {c['images_failed']:,}",
        f"  data files {len(manifest['parts'])}"
        + (" (rows per split: " + ", ".join(f"{k} {v:,}" for k, v in splits.items()) + ")" if splits else "")
        + f", rejects in {manifest['rejects']['file']}",
    ]
    extra = {
        k: v
        for k, v in c.items()
        if k not in ("inputs_seen", "rows_written", "images_written", "skipped", "failed", "images_failed")
    }
    if extra:
        lines.append("  " + ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in extra.items()))
    return lines
