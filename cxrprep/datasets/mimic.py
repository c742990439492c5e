"""``cxrprep reports``: MIMIC-CXR / MIMIC-CXR-JPG reports (+ labels, split, views, images) -> study shards.

Inputs, found beside the root (the folder holding ``files/``) unless named by options:

* reports ``files/pNN/pNNNNNNNN/sNNNNNNNN.txt`` (or the official ``mimic-cxr-reports.zip``, read directly);
* ``mimic-cxr-2.0.0-metadata.csv(.gz)``: ``dicom_id, ViewPosition`` (blank -> null view);
* ``mimic-cxr-2.0.0-split.csv(.gz)``: ``study_id, split``. A study missing from it (or every study when
  there is no split file) gets a deterministic patient-level split from a hash of subject_id (98% train,
  1% validate, 1% test), counted as ``split_assigned`` in the manifest;
* ``mimic-cxr-2.0.0-chexpert.csv(.gz)``: 14 labels per study, stored in cxrprep.labels.CHEXPERT_LABELS
  order whatever the column order (1/0/-1/null); a study without a labels row gets null labels;
* images ``sNNNNNNNN/*.jpg|*.dcm`` beside the report, unless ``--no-images``.

Every report is a row or a reject: unreadable / undecodable (``failed``), empty or text-free (``skipped``),
duplicate study id (``skipped``), images requested but none on disk (``skipped``), all images failing
(``failed``). Reports with neither findings nor impression keep their last paragraph as impression with
``fallback = true`` (counted as ``fallback``).

A report file or zip member over ``--max-report-bytes`` (1 MiB) is a reject and is never read whole (zip
members are streamed); any other exception while reading or parsing one report is a reject naming the
exception; entries the listing cannot follow (a symlink loop) are rejects too. Conflicting duplicate rows
in the split or chexpert CSV (same study, different values) are an error before any work.

Throughput: the main process only lists file names and writes Parquet; with several workers it loads
spaCy once before forking them, so they share it. Workers (``--workers``,
cxrprep.datasets.mimic_worker) get (study id, path) tuples, read the reports themselves (each opens the zip
once), parse sections, split sentences (cxrprep.text.sentences), join split and labels (the tables are sent
to each worker once) and build the Arrow columns of their chunk in bulk; the main process appends the tables
in input order (``ShardWriter.write_table``), so the bytes do not depend on ``--workers``, and memory stays
flat because at most a few chunks are in flight.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from cxrprep.arrowprobe import skip_pandas_probe
from cxrprep.datasets.bounds import check_at_least
from cxrprep.datasets.mimic_inputs import not_empty
from cxrprep.datasets.mimic_worker import DATASET, IMAGE_EXT, hash_split, init_worker, process_chunk
from cxrprep.datasets.seen import SeenIds
from cxrprep.image.settings import ImageSettings
from cxrprep.labels import CHEXPERT_LABELS
from cxrprep.parallel import chunked, fewer_collections, in_part, ordered_map

if TYPE_CHECKING:
    from cxrprep.shards import ShardWriter

__all__ = ["DATASET", "IMAGE_EXT", "ReportsConfig", "hash_split", "load_tables", "run_reports"]
_REPORT = re.compile(r"^s(\d+)\.txt$")
_PATIENT = re.compile(r"^p(\d+)$")
_GROUP = re.compile(r"^p\d\d$")
REQUIRED_COLUMNS = {
    "metadata": ("dicom_id", "ViewPosition"),
    "split": ("study_id", "split"),
    "chexpert": ("study_id",) + CHEXPERT_LABELS,
}


@dataclass(frozen=True)
class ReportsConfig:
    """Options of ``cxrprep reports`` (recorded in manifest.json)."""

    metadata: str | None = None  # path of mimic-cxr-2.0.0-metadata.csv(.gz); default: found beside the root
    split: str | None = None
    chexpert: str | None = None
    images: bool = True
    workers: int = 1
    chunk_size: int = 1024  # reports per worker task (fewer, larger results to send back: less overhead)
    part: tuple[int, int] | None = None
    max_report_bytes: int = 1 << 20  # a larger report file or zip member is a reject, never read whole
    image_settings: ImageSettings = field(default_factory=ImageSettings)
    overwrite: bool = False  # --overwrite: replace a finished dataset of the same name (never recorded)

    def __post_init__(self) -> None:
        check_at_least(self, chunk_size=1, max_report_bytes=1)


@dataclass(slots=True)
class Study:
    """One report found by the listing. Workers get (study_id, subject_id, where) tuples: a file path, or
    (zip path, member name); they read the bytes themselves."""

    study_id: str
    subject_id: str
    source: str
    path: str | None = None  # report file (directory input)
    member: str | None = None  # zip member name (zip input)
    error: str | None = None  # the listing could not reach it
    image_dir: str | None = None


# -- discovery ------------------------------------------------------------------------------------
def _sorted_names(path: str, pattern: re.Pattern, want_dir: bool, skipped: list) -> list[str]:
    """Names in ``path`` matching ``pattern`` that are folders (``want_dir``) or files, sorted. An entry
    that cannot be checked (symlink loop, permission) is recorded in ``skipped`` as (path, reason)."""
    out = []
    with os.scandir(path) as it:
        for e in it:
            if not pattern.match(e.name):
                continue
            try:
                ok = e.is_dir() if want_dir else e.is_file()
                if not ok and e.is_symlink():  # a dangling link or a loop: say so instead of ignoring it
                    os.stat(e.path)
            except OSError as err:
                skipped.append((e.path, f"cannot follow: {err.strerror or err}"))
                continue
            if ok:
                out.append(e.name)
    out.sort()
    return out


def resolve_root(root: Path) -> tuple[Path, Path | None, Path | None]:
    """-> (folder where CSVs are looked for, files/ folder or None, zip or None)."""
    root = Path(root)
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise ValueError(
                f"{root}: not a folder and not a zip file; give a MIMIC-CXR root, its files/ or mimic-cxr-reports.zip"
            )
        return root.parent, None, root
    if root.name == "files" or any(_GROUP.match(n) for n in os.listdir(root)):
        return root.parent if root.name == "files" else root, root, None
    if (root / "files").is_dir():
        return root, root / "files", None
    z = root / "mimic-cxr-reports.zip"
    if z.exists():
        return root, None, z
    raise ValueError(f"{root}: no files/pNN/ folders and no mimic-cxr-reports.zip; give a MIMIC-CXR(-JPG) root")


def iter_studies_dir(files: Path, part: tuple[int, int] | None, skipped: list | None = None) -> Iterator[Study]:
    """Reports in sorted order (group, patient, study). Lists only: workers read the files. Folders or
    files that cannot be followed (a symlink loop) are yielded as Study with ``error`` when they look like a
    report, else recorded in ``skipped``."""
    skipped = skipped if skipped is not None else []
    top = str(files)
    base = files.name
    for g in _sorted_names(top, _GROUP, True, skipped):
        gpath = f"{top}/{g}"
        try:
            patients = _sorted_names(gpath, _PATIENT, True, skipped)
        except OSError as e:
            skipped.append((gpath, f"cannot list: {e.strerror or e}"))
            continue
        for pname in patients:
            subject = pname[1:]
            if not in_part(subject, part):
                continue
            pdir = f"{gpath}/{pname}"
            try:  # report files are not type-checked: where the file system gives no entry types that
                # is a stat() per report, and a worker's open() rejects a folder or broken link all the same
                names = sorted(n for n in os.listdir(pdir) if _REPORT.match(n))
            except OSError as e:
                skipped.append((pdir, f"cannot list: {e.strerror or e}"))
                continue
            for name in names:  # "sNNNN.txt": the study id is name[1:-4]
                path = f"{pdir}/{name}"
                yield Study(name[1:-4], subject, f"{base}/{g}/{pname}/{name}", path, None, None, path[:-4])


def count_reports(files: Path | None, zpath: Path | None, part: tuple[int, int] | None) -> int:
    """How many reports the run will read (the same listing as the run's, no file is read)."""
    it = iter_studies_zip(zpath, part) if zpath is not None else iter_studies_dir(files, part)
    return sum(1 for _ in it)


def _total_later(bar, files: Path | None, zpath: Path | None, part, chunk_size: int) -> None:
    """Count the reports in a background thread and give the progress bar its total (and so an ETA) as
    soon as it is known; the run itself never waits for the count."""
    if not hasattr(bar, "refresh") or getattr(bar, "disable", True):
        return
    import threading

    def work() -> None:
        try:
            bar.total = -(-count_reports(files, zpath, part) // chunk_size)
            bar.refresh()
        except Exception:  # a progress nicety; the run reports its own errors
            pass

    threading.Thread(target=work, daemon=True, name="count-reports").start()


def iter_studies_zip(zpath: Path, part: tuple[int, int] | None) -> Iterator[Study]:
    """Members that look like reports, sorted; workers open the zip and stream their own members."""
    try:
        with zipfile.ZipFile(zpath) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{zpath}: cannot read as a zip file ({e})") from None
    members = []
    for info in infos:
        parts = info.filename.split("/")
        if info.is_dir() or len(parts) < 3 or not _REPORT.match(parts[-1]) or not _PATIENT.match(parts[-2]):
            continue
        members.append((parts[-3], parts[-2], parts[-1], info.filename))
    members.sort(key=lambda m: m[:3])
    for _, pdir, name, member in members:
        subject = pdir[1:]
        if not in_part(subject, part):
            continue
        yield Study(_REPORT.match(name).group(1), subject, f"{zpath.name}:{member}", member=member)


# -- side tables ------------------------------------------------------------------------------------
def find_csv(base: Path, stem: str, given: str | None) -> Path | None:
    if given:
        p = Path(given)
        if not p.exists():
            raise ValueError(f"{p} does not exist (--{stem.split('-')[-1]})")
        return p
    for suffix in (".csv.gz", ".csv"):
        p = base / f"{stem}{suffix}"
        if p.exists():
            return p
    return None


def _read_csv(path: Path, kind: str):
    import polars as pl

    try:
        df = pl.read_csv(path, infer_schema_length=0)  # everything as strings: ids keep leading zeros
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read as CSV ({e})") from None
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing columns {missing} (has {df.columns}); is this the {kind} file? "
            f"Name the right one with --{kind}"
        )
    return df.with_row_index("_row")


def _check_conflicts(df, cols: list[str], path: Path, what: str) -> None:
    """Rows with the same study_id must agree on ``cols`` (identical duplicates are fine). Raises
    ValueError naming the two first rows (file line numbers) that disagree."""
    import polars as pl

    u = df.select(["_row", "study_id"] + cols).unique(subset=["study_id"] + cols, keep="first", maintain_order=True)
    dup = u.filter(pl.col("study_id").is_duplicated())
    if dup.height:
        sid = dup["study_id"][0]
        a, b = dup.filter(pl.col("study_id") == sid).head(2).iter_rows()
        diff = [c for c, x, y in zip(cols, a[2:], b[2:]) if x != y]
        raise ValueError(
            f"{path}: lines {a[0] + 2} and {b[0] + 2} both describe study {sid} with different "
            f"{what} ({', '.join(f'{c}: {x!r} vs {y!r}' for c, x, y in zip(cols, a[2:], b[2:]) if c in diff)}); "
            f"keep one of them"
        )


def load_tables(base: Path, cfg: ReportsConfig) -> tuple[dict, dict, dict, dict]:
    """-> (views by dicom_id, split by study_id, labels by study_id, paths used). Raises ValueError on a
    missing column before any work starts. polars is imported only when there is a CSV to read."""
    used: dict[str, str | None] = {}
    views: dict[str, str | None] = {}
    p = find_csv(base, "mimic-cxr-2.0.0-metadata", cfg.metadata)
    used["metadata"] = str(p) if p else None
    if p:
        df = _read_csv(p, "metadata")
        for dicom_id, view in df.select("dicom_id", "ViewPosition").iter_rows():
            views[dicom_id] = (view or "").strip().upper() or None
    splits: dict[str, str] = {}
    p = find_csv(base, "mimic-cxr-2.0.0-split", cfg.split)
    used["split"] = str(p) if p else None
    if p:
        import polars as pl

        df = _read_csv(p, "split").select("_row", "study_id", "split")
        bad = df.filter(~pl.col("split").is_in(["train", "validate", "test"]) | pl.col("split").is_null())
        if bad.height:
            raise ValueError(
                f"{p}: line {bad['_row'][0] + 2}: split value {bad['split'][0]!r} for study "
                f"{bad['study_id'][0]}; expected train, validate or test"
            )
        _check_conflicts(df, ["split"], p, "splits")
        splits = dict(
            df.unique(subset="study_id", keep="first", maintain_order=True).select("study_id", "split").iter_rows()
        )
    labels: dict[str, list[int | None]] = {}
    p = find_csv(base, "mimic-cxr-2.0.0-chexpert", cfg.chexpert)
    used["chexpert"] = str(p) if p else None
    if p:
        import polars as pl

        df = _read_csv(p, "chexpert")
        cols = [pl.col(c).cast(pl.Float64, strict=False).alias(c) for c in CHEXPERT_LABELS]
        parsed = df.select([pl.col("_row"), pl.col("study_id")] + cols)
        for name in CHEXPERT_LABELS:  # a value outside 1/0/-1/blank is an error naming row and column
            raw = df[name]
            bad = parsed[name].is_null() & raw.is_not_null() & (raw.str.strip_chars() != "")
            bad = bad | (parsed[name].is_not_null() & ~parsed[name].is_in([1.0, 0.0, -1.0]))
            if bad.any():
                i = int(bad.arg_true()[0])
                raise ValueError(f"{p}: row {i + 2}, column {name!r}: value {raw[i]!r} is not 1.0, 0.0, -1.0 or blank")
        _check_conflicts(parsed, list(CHEXPERT_LABELS), p, "labels")
        for row in parsed.unique(subset="study_id", keep="first", maintain_order=True).drop("_row").iter_rows():
            labels[row[0]] = [None if v is None else int(v) for v in row[1:]]
    return views, splits, labels, used


def _warm_before_fork() -> None:
    """Load spaCy and the sentence splitter's tables (about 1 s of CPU per process) before the pool forks
    the workers, so they share them instead of each loading them. Without fork (spawn, forkserver) this is
    skipped and each worker loads them on its first report."""
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=False) != "fork":
        return
    from cxrprep.text.sentences import preload

    preload()


def _chunks(studies: Iterator[Study], cfg: ReportsConfig, pending: list) -> Iterator[tuple]:
    """Pool tasks: chunks of (study_id, subject_id, path, member, error, image_dir) for the studies not
    seen before; each chunk's [(study, duplicate?)] in input order goes to ``pending``."""
    seen = SeenIds()  # 8 bytes per id: the run keeps every one
    for chunk in chunked(studies, cfg.chunk_size):
        entries, items = [], []
        for st, dup in zip(chunk, seen.seen_before([st.study_id for st in chunk])):
            entries.append((st, dup))
            if not dup:
                items.append(
                    (st.study_id, st.subject_id, st.path, st.member, st.error, st.image_dir if cfg.images else None)
                )
        pending.append(entries)
        yield items, cfg.images, cfg.image_settings


def _record_chunk(w: ShardWriter, entries: list, result: tuple, extra: dict) -> None:
    """Write one worker result: its rows (with their sources), its rejects and duplicates in input order."""
    import pyarrow as pa

    table, sizes, events, counts = result
    sources = []
    ev = iter(events)
    w.counts.inputs_seen += len(entries)
    for st, dup in entries:
        if dup:
            w.reject(
                st.source,
                st.study_id,
                stage="read",
                kind="skipped",
                reason=f"duplicate study id {st.study_id} (first seen earlier in this run)",
            )
            continue
        e = next(ev)
        if e[0] == "reject":
            w.reject(st.source, st.study_id, stage=e[1], kind=e[2], reason=e[3])
            continue
        for path, reason in e[1]:
            w.reject(path, st.study_id, stage="image", kind="failed", reason=reason, level="image")
        sources.append(st.source)
    for k, v in counts.items():
        extra[k] += v
    if table is not None:
        table = table.table()  # the worker's ChunkColumns
        table = table.set_column(table.schema.get_field_index("source"), "source", pa.array(sources, pa.string()))
        w.write_table(table, sizes)


def run_reports(root: Path, out: Path, cfg: ReportsConfig, progress=lambda it, total: it) -> dict:
    """Run the whole command; returns the manifest. Raises ValueError for bad inputs before any work."""
    base, files, zpath = resolve_root(Path(root))
    views, splits, labels, used = load_tables(base, cfg)
    if cfg.images and zpath is not None:
        raise ValueError(f"{zpath}: a reports zip has no images; add --no-images or give the MIMIC-CXR-JPG root")
    skipped: list = []
    studies = iter_studies_zip(zpath, cfg.part) if zpath else iter_studies_dir(files, cfg.part, skipped)
    studies = not_empty(studies, skipped, base, files, zpath, cfg.part)
    conf = asdict(cfg)
    conf.update(root=str(root), inputs=used)
    extra = {"fallback": 0, "split_assigned": 0, "no_labels": 0}
    pending: list[list[tuple[Study, bool]]] = []  # per chunk sent: (study, duplicate?) in input order
    if cfg.workers > 1:
        _warm_before_fork()
    # the workers start on the first chunks now, while this process loads pyarrow and opens the output
    # (the output folder's lock is taken before anything is written)
    results = ordered_map(
        process_chunk,
        _chunks(studies, cfg, pending),
        workers=cfg.workers,
        initializer=init_worker,
        initargs=(views if cfg.images else {}, splits, labels, str(zpath) if zpath else None, cfg.max_report_bytes),
        start_now=True,
    )
    try:
        from cxrprep.datasets.writing import command_writer

        with command_writer(out, DATASET, cfg, "reports", conf, part=cfg.part) as w, fewer_collections():
            skip_pandas_probe()
            bar = progress(results, None)
            _total_later(bar, files, zpath, cfg.part, cfg.chunk_size)
            for result in bar:
                _record_chunk(w, pending.pop(0), result, extra)
            for path, reason in skipped:  # folders or entries the listing could not follow: say so
                w.counts.inputs_seen += 1
                w.reject(os.path.relpath(path, base), None, stage="read", kind="failed", reason=reason)
            w.counts.extra.update(extra)
    finally:
        close = getattr(results, "close", None)  # stops the workers when the output cannot be opened
        if close is not None:
            close()
    return w.manifest
