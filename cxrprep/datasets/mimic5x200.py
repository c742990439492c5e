"""MIMIC 5x200 (``cxrprep mimic-5x200``): 200 frontal images per CheXpert competition class whose study has
that class as its only positive finding, with the study's report, for 5-way zero-shot accuracy and
retrieval.

Definition (the CheXpert 5x200 rule of GLoRIA applied to MIMIC-CXR-JPG; see ../shared/FORMATS.md 1.3-1.5
and 2.2): labels from mimic-cxr-2.0.0-chexpert.csv with blank -> 0; a study qualifies for task T when T is
1 and every other observation except No Finding is 0 (any -1 excludes it); its image is the first
frontal one (ViewPosition PA, then AP, by dicom_id) in mimic-cxr-2.0.0-metadata.csv; only studies of
``--from-split`` (default ``test``, so the set never overlaps training rows of the official split; ``any``
ignores the split file). Candidates are sorted by study id and ``--per-class`` are drawn with ``--seed``.
``--list FILE`` uses a released list of image paths (``files/pXX/pSUBJECT/sSTUDY/DICOM.jpg``; CSV with a
path column, or one per line) instead: each must be a study with exactly one positive competition task.
Rows: split ``test``, the 14 CheXpert labels, findings/impression from the study's report (for retrieval),
one image. ``patients.txt`` lists the subjects.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxrprep.datasets.bounds import check_at_least
from cxrprep.datasets.writing import five_by_200_writer, write_patients
from cxrprep.image.process import ImageSettings, process_study_images
from cxrprep.labels import CHEXPERT_LABELS, COMPETITION_TASKS
from cxrprep.schema import empty_row

DATASET = "mimic-5x200"
_PATH = re.compile(r"p(\d{8})/s(\d{8})/([0-9a-f-]+)\.(?:jpg|dcm)$")


@dataclass(frozen=True)
class Mimic5x200Config:
    per_class: int = 200
    seed: int = 0
    from_split: str = "test"  # train | validate | test | any
    list_path: str | None = None
    metadata: str | None = None
    split: str | None = None
    chexpert: str | None = None
    images: bool = True
    image_settings: ImageSettings = field(default_factory=ImageSettings)
    overwrite: bool = False  # --overwrite: replace a finished dataset of the same name (never recorded)

    def __post_init__(self) -> None:
        check_at_least(self, per_class=1)
        if self.from_split not in ("train", "validate", "test", "any"):
            raise ValueError(f"--from-split must be train, validate, test or any, got {self.from_split!r}")


def _frontal_images(meta_path: Path) -> dict[str, tuple[str, str, str]]:
    """study_id -> (subject_id, dicom_id, view) of its first PA (else AP) image."""
    import polars as pl

    from cxrprep.datasets.mimic import _read_csv

    df = _read_csv(meta_path, "metadata")
    for c in ("subject_id", "study_id"):
        if c not in df.columns:
            raise ValueError(
                f"{meta_path}: missing column {c!r} (a mimic-cxr-2.0.0-metadata.csv has dicom_id, "
                f"subject_id, study_id, ..., ViewPosition)"
            )
    df = df.with_columns(pl.col("ViewPosition").fill_null("").str.strip_chars().str.to_uppercase().alias("_v"))
    out: dict[str, tuple[str, str, str]] = {}
    for view in ("PA", "AP"):
        for dicom, subject, study in (
            df.filter(pl.col("_v") == view).sort("dicom_id").select("dicom_id", "subject_id", "study_id").iter_rows()
        ):
            out.setdefault(study, (subject, dicom, view))
    return out


def select_mimic_5x200(root: Path, cfg: Mimic5x200Config) -> list[dict]:
    """-> [{subject, study, dicom, view, task, labels}] sorted by task then study."""
    from cxrprep.datasets.mimic import ReportsConfig, find_csv, load_tables

    base = root.parent if root.name == "files" else root
    rc = ReportsConfig(metadata=cfg.metadata, split=cfg.split, chexpert=cfg.chexpert, images=False)
    _, splits, labels, used = load_tables(base, rc)
    if not labels:
        raise ValueError(f"no mimic-cxr-2.0.0-chexpert.csv(.gz) beside {root}; name it with --chexpert")
    meta = find_csv(base, "mimic-cxr-2.0.0-metadata", cfg.metadata)
    if meta is None:
        raise ValueError(f"no mimic-cxr-2.0.0-metadata.csv(.gz) beside {root}; name it with --metadata")
    frontal = _frontal_images(meta)
    if cfg.list_path:
        return _from_list(Path(cfg.list_path), labels, frontal)
    if cfg.from_split != "any" and not splits:
        raise ValueError(
            f"--from-split {cfg.from_split} needs mimic-cxr-2.0.0-split.csv(.gz) beside {root} (or --split); "
            f"use --from-split any to ignore the official split"
        )
    idx = {t: CHEXPERT_LABELS.index(t) for t in CHEXPERT_LABELS}
    out = []
    for task in COMPETITION_TASKS:
        cands = []
        for study, labs in sorted(labels.items()):
            if study not in frontal or (cfg.from_split != "any" and splits.get(study) != cfg.from_split):
                continue
            filled = [0 if v is None else v for v in labs]
            if filled[idx[task]] == 1 and all(
                filled[idx[c]] == 0 for c in CHEXPERT_LABELS if c not in (task, "No Finding")
            ):
                cands.append(study)
        if len(cands) < cfg.per_class:
            raise ValueError(
                f"only {len(cands)} studies of split {cfg.from_split!r} with a frontal image have {task} as "
                f"the only positive finding; lower --per-class (now {cfg.per_class}) or widen --from-split"
            )
        for study in sorted(random.Random(f"{cfg.seed}:{task}").sample(cands, cfg.per_class)):
            subject, dicom, view = frontal[study]
            out.append(dict(subject=subject, study=study, dicom=dicom, view=view, task=task, labels=labels[study]))
    return out


def _from_list(list_path: Path, labels: dict, frontal: dict) -> list[dict]:
    from cxrprep.datasets.chexpert5x200 import read_path_list

    out, seen = [], set()
    for line, p in read_path_list(list_path):
        m = _PATH.search(p.replace("\\", "/"))
        if not m:
            raise ValueError(f"{list_path}:{line}: {p!r} is not files/pXX/pSUBJECT/sSTUDY/DICOM.jpg (--list)")
        subject, study, dicom = m.groups()
        if study not in labels:
            raise ValueError(f"{list_path}:{line}: study {study} has no row in mimic-cxr-2.0.0-chexpert.csv (--list)")
        if study in seen:
            raise ValueError(f"{list_path}:{line}: study {study} is listed twice (--list)")
        seen.add(study)
        labs = labels[study]
        pos = [t for t in COMPETITION_TASKS if labs[CHEXPERT_LABELS.index(t)] == 1]
        if len(pos) != 1:
            raise ValueError(
                f"{list_path}:{line}: study {study} has {len(pos)} positive competition labels ({pos}); "
                f"a 5x200 image has exactly one (--list)"
            )
        view = frontal.get(study, (None, None, None))[2]
        out.append(dict(subject=subject, study=study, dicom=dicom, view=view, task=pos[0], labels=labs))
    return out


def _image_path(files: Path, subject: str, study: str, dicom: str) -> Path:
    d = files / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
    for ext in (".jpg", ".dcm"):
        if (d / f"{dicom}{ext}").exists():
            return d / f"{dicom}{ext}"
    return d / f"{dicom}.jpg"


def run_mimic_5x200(root: Path, out: Path, cfg: Mimic5x200Config) -> dict:
    from cxrprep.text.sections import normalize_ws, parse_report
    from cxrprep.text.sentences import split_sections

    rows = select_mimic_5x200(root, cfg)
    files = root if root.name == "files" else root / "files"
    conf = asdict(cfg) | {"root": str(root)}
    selection = (
        f"list {cfg.list_path}" if cfg.list_path else f"seeded draw (seed {cfg.seed}, from split {cfg.from_split})"
    )
    with five_by_200_writer(out, DATASET, cfg, "mimic-5x200", conf, selection) as w:
        w.counts.inputs_seen = len(rows)
        for r in sorted(rows, key=lambda r: r["study"]):
            sid, subject = f"s{r['study']}", r["subject"]
            rel = f"files/p{subject[:2]}/p{subject}/s{r['study']}.txt"
            report = files / f"p{subject[:2]}" / f"p{subject}" / f"s{r['study']}.txt"
            try:
                rep = parse_report(report.read_text(errors="replace"))
            except OSError as e:
                w.reject(
                    rel, sid, stage="read", kind="failed", reason=f"{report}: cannot read report ({e.strerror or e})"
                )
                continue
            images = []
            if cfg.images:
                images, failed = process_study_images(
                    [(str(_image_path(files, subject, r["study"], r["dicom"])), r["dicom"], r["view"])],
                    cfg.image_settings,
                )
                if not images:
                    w.reject(rel, sid, stage="image", kind="failed", reason=failed[0][1])
                    continue
            fs, is_ = split_sections([rep.findings, rep.impression])
            row = empty_row(DATASET, sid, subject, "test")
            row.update(
                source=rel,
                labels=list(r["labels"]),
                images=images,
                findings=normalize_ws(rep.findings),
                impression=normalize_ws(rep.impression),
                findings_sentences=fs,
                impression_sentences=is_,
                fallback=rep.fallback,
            )
            w.write(row)
    write_patients(out / DATASET, (r["subject"] for r in rows))
    return w.manifest
