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

Throughput: the main process lists files and writes Parquet; workers read the reports, (``--workers``) parse sections, split
sentences with one spaCy tokenizer each and process images, on chunks of studies, in order (deterministic
output); memory stays flat because at most a few chunks are in flight.
"""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from .images import ImageSettings, process_study_images
from .labels import CHEXPERT_LABELS
from .parallel import chunked, in_part, ordered_map
from .schema import empty_row
from .sections import normalize_ws, parse_report
from .shards import ShardWriter

DATASET = "mimic-cxr"
_REPORT = re.compile(r"^s(\d+)\.txt$")
_PATIENT = re.compile(r"^p(\d+)$")
_GROUP = re.compile(r"^p\d\d$")
IMAGE_EXT = (".jpg", ".jpeg", ".dcm", ".png")

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
    chunk_size: int = 256  # reports per worker task
    part: tuple[int, int] | None = None
    image_settings: ImageSettings = field(default_factory=ImageSettings)

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"--chunk-size must be >= 1, got {self.chunk_size}")


@dataclass
class Study:
    study_id: str
    subject_id: str
    source: str
    data: bytes | None = None  # report bytes (zip input; directory input is read by the worker)
    path: str | None = None  # report file (directory input)
    error: str | None = None
    image_dir: str | None = None


# -- discovery ------------------------------------------------------------------------------------
def _sorted_dirs(p: Path, pattern: re.Pattern) -> list[os.DirEntry]:
    with os.scandir(p) as it:
        return sorted((e for e in it if e.is_dir() and pattern.match(e.name)), key=lambda e: e.name)


def resolve_root(root: Path) -> tuple[Path, Path | None, Path | None]:
    """-> (folder where CSVs are looked for, files/ folder or None, zip or None)."""
    root = Path(root)
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise ValueError(f"{root}: not a folder and not a zip file; give a MIMIC-CXR root, its files/ or "
                             f"mimic-cxr-reports.zip")
        return root.parent, None, root
    if root.name == "files" or any(_GROUP.match(n) for n in os.listdir(root)):
        return root.parent if root.name == "files" else root, root, None
    if (root / "files").is_dir():
        return root, root / "files", None
    z = root / "mimic-cxr-reports.zip"
    if z.exists():
        return root, None, z
    raise ValueError(f"{root}: no files/pNN/ folders and no mimic-cxr-reports.zip; give a MIMIC-CXR(-JPG) root")


def iter_studies_dir(files: Path, part: tuple[int, int] | None) -> Iterator[Study]:
    """Reports in sorted order (group, patient, study); reads the bytes of the ones in ``part``."""
    for g in _sorted_dirs(files, _GROUP):
        for pdir in _sorted_dirs(Path(g.path), _PATIENT):
            subject = pdir.name[1:]
            if not in_part(subject, part):
                continue
            with os.scandir(pdir.path) as it:
                names = sorted(e.name for e in it if e.is_file() and _REPORT.match(e.name))
            for name in names:
                path = Path(pdir.path) / name
                # the worker reads the file: keeps the main process (listing, writing) off the critical path
                yield Study(study_id=_REPORT.match(name).group(1), subject_id=subject,
                            source=str(path.relative_to(files.parent)), path=str(path),
                            image_dir=str(path.with_suffix("")))


def count_reports(files: Path | None, zpath: Path | None, part: tuple[int, int] | None) -> int:
    """How many reports ``iter_studies_dir``/``iter_studies_zip`` will yield (names only, no reads)."""
    n = 0
    if zpath is not None:
        with zipfile.ZipFile(zpath) as z:
            for name in z.namelist():
                parts = name.split("/")
                if len(parts) >= 3 and _REPORT.match(parts[-1]) and _PATIENT.match(parts[-2]) \
                        and in_part(parts[-2][1:], part):
                    n += 1
        return n
    for g in _sorted_dirs(files, _GROUP):
        for pdir in _sorted_dirs(Path(g.path), _PATIENT):
            if in_part(pdir.name[1:], part):
                with os.scandir(pdir.path) as it:
                    n += sum(1 for e in it if _REPORT.match(e.name))
    return n


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
    with zipfile.ZipFile(zpath) as z:
        members = []
        for info in z.infolist():
            parts = info.filename.split("/")
            if info.is_dir() or len(parts) < 3 or not _REPORT.match(parts[-1]) or not _PATIENT.match(parts[-2]):
                continue
            members.append((parts[-3], parts[-2], parts[-1], info))
        members.sort(key=lambda m: m[:3])
        for _, pdir, name, info in members:
            subject = pdir[1:]
            if not in_part(subject, part):
                continue
            st = Study(_REPORT.match(name).group(1), subject, f"{zpath.name}:{info.filename}")
            try:
                st.data = z.read(info)
            except (zipfile.BadZipFile, OSError, zlib.error) as e:
                st.error = f"cannot read zip member: {e}"
            yield st


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
    except (pl.exceptions.PolarsError, OSError) as e:
        raise ValueError(f"{path}: cannot read as CSV ({e})") from None
    missing = [c for c in REQUIRED_COLUMNS[kind] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (has {df.columns}); is this the {kind} file? "
                         f"Name the right one with --{kind}")
    return df


def load_tables(base: Path, cfg: ReportsConfig) -> tuple[dict, dict, dict, dict]:
    """-> (views by dicom_id, split by study_id, labels by study_id, paths used). Raises ValueError on a
    missing column before any work starts."""
    import polars as pl

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
        df = _read_csv(p, "split").select("study_id", "split").unique(subset="study_id", keep="first")
        bad = df.filter(~pl.col("split").is_in(["train", "validate", "test"]))
        if bad.height:
            raise ValueError(f"{p}: split value {bad['split'][0]!r} for study {bad['study_id'][0]}; "
                             f"expected train, validate or test")
        splits = dict(df.iter_rows())
    labels: dict[str, list[int | None]] = {}
    p = find_csv(base, "mimic-cxr-2.0.0-chexpert", cfg.chexpert)
    used["chexpert"] = str(p) if p else None
    if p:
        df = _read_csv(p, "chexpert")
        cols = [pl.col(c).cast(pl.Float64, strict=False).alias(c) for c in CHEXPERT_LABELS]
        parsed = df.select([pl.col("study_id")] + cols)
        for name in CHEXPERT_LABELS:  # a value outside 1/0/-1/blank is an error naming row and column
            raw = df[name]
            bad = parsed[name].is_null() & raw.is_not_null() & (raw.str.strip_chars() != "")
            bad = bad | (parsed[name].is_not_null() & ~parsed[name].is_in([1.0, 0.0, -1.0]))
            if bad.any():
                i = int(bad.arg_true()[0])
                raise ValueError(f"{p}: row {i + 2}, column {name!r}: value {raw[i]!r} is not 1.0, 0.0, -1.0 or blank")
        for row in parsed.iter_rows():
            labels[row[0]] = [None if v is None else int(v) for v in row[1:]]
    return views, splits, labels, used


def hash_split(subject_id: str) -> str:
    """Deterministic patient-level split for studies without an official one."""
    h = zlib.crc32(f"split:{subject_id}".encode()) % 100
    return "validate" if h == 98 else "test" if h == 99 else "train"


# -- worker ------------------------------------------------------------------------------------------
_NLP = None


def _init_worker() -> None:
    global _NLP
    from .sentences import get_nlp

    _NLP = get_nlp()


def _process_chunk(args) -> list[tuple[Study, tuple[str, object]]]:
    """Worker: a chunk of studies -> [(study without its bytes, ("row", partial row) |
    ("reject", (stage, kind, reason))) ...], in input order."""
    studies, views, with_images, settings = args
    from .sentences import split_sections

    global _NLP
    if _NLP is None:
        _init_worker()
    parsed: list = []
    texts: list[str | None] = []
    for st in studies:
        if st.path is not None:
            try:
                with open(st.path, "rb") as f:
                    st.data = f.read()
            except OSError as e:
                st.error = f"cannot read: {e.strerror or e}"
        if st.error is not None:
            parsed.append(("reject", ("read", "failed", st.error)))
            continue
        try:
            text = st.data.decode("utf-8")
        except UnicodeDecodeError as e:
            parsed.append(("reject", ("read", "failed", f"not UTF-8 text (byte {e.start}: {st.data[e.start:e.start + 4]!r})")))
            continue
        if not text.strip():
            parsed.append(("reject", ("read", "skipped", "empty report file")))
            continue
        rep = parse_report(text)
        if rep.findings is None and rep.impression is None:
            parsed.append(("reject", ("sections", "skipped", "no findings, impression or any paragraph of text")))
            continue
        parsed.append(("ok", rep))
        texts += [rep.findings, rep.impression]
    sentences = split_sections(texts, _NLP)
    out: list[tuple[str, object]] = []
    k = 0
    for st, (status, val) in zip(studies, parsed):
        if status == "reject":
            out.append(("reject", val))
            continue
        rep = val
        fs, ims = sentences[k], sentences[k + 1]
        k += 2
        row = dict(findings=normalize_ws(rep.findings), impression=normalize_ws(rep.impression),
                   findings_sentences=fs, impression_sentences=ims, fallback=rep.fallback,
                   sections=[dict(name=n, text=normalize_ws(t)) for n, t in rep.sections
                             if n not in ("findings", "impression")],
                   images=[], image_failures=[])
        if with_images:
            items = []
            if st.image_dir and os.path.isdir(st.image_dir):
                with os.scandir(st.image_dir) as it:
                    names = sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXT))
                items = [(os.path.join(st.image_dir, n), Path(n).stem, views.get(Path(n).stem)) for n in names]
            if not items:
                out.append(("reject", ("image", "skipped", f"no images (*.jpg, *.dcm) in {st.image_dir or 'the zip'}; "
                                                           f"use --no-images for text-only shards")))
                continue
            ok, failed = process_study_images(items, settings)
            if not ok:
                out.append(("reject", ("image", "failed", f"all {len(items)} images failed; first: {failed[0][1]}")))
                continue
            row["images"], row["image_failures"] = ok, failed
        out.append(("row", row))
    for st in studies:
        st.data = None  # do not send the report bytes back to the main process
    return list(zip(studies, out))


def run_reports(root: Path, out: Path, cfg: ReportsConfig, progress=lambda it, total: it) -> dict:
    """Run the whole command; returns the manifest. Raises ValueError for bad inputs before any work."""
    base, files, zpath = resolve_root(Path(root))
    views, splits, labels, used = load_tables(base, cfg)
    if cfg.images and zpath is not None:
        raise ValueError(f"{zpath}: a reports zip has no images; add --no-images or give the MIMIC-CXR-JPG root")
    studies = iter_studies_zip(zpath, cfg.part) if zpath else iter_studies_dir(files, cfg.part)
    conf = asdict(cfg)
    conf.update(root=str(root), inputs=used)
    seen: set[str] = set()
    extra = {"fallback": 0, "split_assigned": 0, "no_labels": 0}

    with ShardWriter(out, DATASET, config=conf, label_names=CHEXPERT_LABELS,
                     image_settings=cfg.image_settings.manifest() if cfg.images else None,
                     command="reports", part=cfg.part) as w:
        def chunks():
            for chunk in chunked(studies, cfg.chunk_size):
                keep = []
                for st in chunk:
                    w.counts.inputs_seen += 1
                    if st.study_id in seen:
                        w.reject(st.source, st.study_id, stage="read", kind="skipped",
                                 reason=f"duplicate study id {st.study_id} (first seen earlier in this run)")
                        continue
                    seen.add(st.study_id)
                    keep.append(st)
                yield keep, views, cfg.images, cfg.image_settings

        results = ordered_map(_process_chunk, chunks(), workers=cfg.workers, initializer=_init_worker)
        bar = progress(results, None)
        _total_later(bar, files, zpath, cfg.part, cfg.chunk_size)
        for res in bar:
            for st, (kind, val) in res:
                if kind == "reject":
                    stage, rk, reason = val
                    w.reject(st.source, st.study_id, stage=stage, kind=rk, reason=reason)
                    continue
                split = splits.get(st.study_id)
                if split is None:
                    split = hash_split(st.subject_id)
                    extra["split_assigned"] += 1
                row = empty_row(DATASET, st.study_id, st.subject_id, split)
                fails = val.pop("image_failures")
                row.update(val)
                row["source"] = st.source
                row["labels"] = labels.get(st.study_id)
                if row["labels"] is None:
                    extra["no_labels"] += 1
                extra["fallback"] += int(row["fallback"])
                for path, reason in fails:
                    w.reject(path, st.study_id, stage="image", kind="failed", reason=reason, level="image")
                w.write(row)
        w.counts.extra.update(extra)
    return w.manifest

