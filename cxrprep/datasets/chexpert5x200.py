"""A deterministic, rebuildable CheXpert 5x200 evaluation set (``cxrprep chexpert-5x200``).

Definition (GLoRIA's ``preprocess_chexpert_5x200_data``, see ../shared/FORMATS.md 2.2): from train.csv,
blank -> 0; frontal images only; for each competition task (Atelectasis, Cardiomegaly, Consolidation, Edema,
Pleural Effusion) keep images where that task is 1 and every other observation except No Finding is 0 (any
-1 excludes); draw ``--per-class`` images per task. GLoRIA's draw is unseeded; ours sorts candidates by Path
and samples with ``--seed``, so anyone can rebuild the same 1,000 images. The dataset ``chexpert-5x200``
(split ``test``, raw CheXpert labels, one image per row) gets ``patients.txt`` beside its manifest: pass it
to ``cxrprep prompts --exclude-patients`` to keep these patients out of the training shards.

``--list FILE`` uses a released list of image paths instead of the seeded draw (to compare with papers that
published theirs, e.g. MedCLIP's chexpert-5x200 CSV): a CSV with a ``Path``/``path``/``imgpath``/``image``
column, or one path per line. Each path is matched to train.csv (the ``CheXpert-v1.0(-small)/`` prefix is
optional) and must have exactly one positive competition task, which becomes its class; anything else is
an error naming the list line.

``--released`` reads the released 5x200 file itself instead of train.csv (GLoRIA's ``chexpert_5x200.csv``,
which CXR-CLIP evaluates: kakaobrain/cxr-clip configs/data_test/chexpert5x200.yaml and datasets/README.md):
train.csv's columns for the 1,000 images plus ``Report Impression``. Labels come from the file, each row
must have exactly one positive competition task, and the report text becomes the row's ``impression`` so
``cxrtrain eval`` scores CheXpert 5x200 retrieval (Table 3) as well as 5-way accuracy (Table 2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxrprep.datasets.bounds import check_at_least
from cxrprep.datasets.label_csv import chexpert_frame
from cxrprep.datasets.label_csv import resolve_image as _resolve_image
from cxrprep.datasets.writing import five_by_200_writer, write_patients
from cxrprep.image.process import ImageSettings, process_study_images
from cxrprep.labels import CHEXPERT_LABELS, COMPETITION_TASKS
from cxrprep.schema import empty_row

DATASET = "chexpert-5x200"


@dataclass(frozen=True)
class FiveX200Config:
    per_class: int = 200
    seed: int = 0
    image_root: str | None = None
    list_path: str | None = None
    released: bool = False  # csv_path is the released 5x200 file (labels + Report Impression)
    images: bool = True
    image_settings: ImageSettings = field(default_factory=ImageSettings)
    overwrite: bool = False  # --overwrite: replace a finished dataset of the same name (never recorded)

    def __post_init__(self) -> None:
        check_at_least(self, per_class=1)
        if self.released and self.list_path:
            raise ValueError("--released reads the released file's own rows; it cannot be combined with --list")


def select_5x200(csv_path: Path, per_class: int, seed: int) -> list[dict]:
    """-> [{path, patient, task, labels (raw), view}] sorted by task then path. Raises ValueError naming
    --per-class when a class has too few candidates."""
    import random

    df = chexpert_frame(csv_path)  # validated; labels parsed to 1/0/-1/null
    raw = df.select(CHEXPERT_LABELS)
    filled = raw.fill_null(0)
    frontal = (df["_fl"] == "Frontal") if "Frontal/Lateral" in df.columns else df["Path"].str.contains("frontal")
    others = [c for c in CHEXPERT_LABELS if c != "No Finding"]
    out = []
    for task in COMPETITION_TASKS:
        cond = frontal & (filled[task] == 1)
        for c in others:
            if c != task:
                cond = cond & (filled[c] == 0)
        idx = sorted(cond.arg_true().to_list(), key=lambda i: df["Path"][i])
        if len(idx) < per_class:
            raise ValueError(
                f"{csv_path}: only {len(idx)} frontal images have {task} as the only positive finding; "
                f"lower --per-class (now {per_class})"
            )
        for i in sorted(random.Random(f"{seed}:{task}").sample(idx, per_class), key=lambda i: df["Path"][i]):
            path = df["Path"][i]
            appa = df["_appa"][i]
            out.append(
                dict(
                    path=path,
                    patient=path.split("/")[-3],
                    task=task,
                    labels=raw.row(i),
                    view=(appa or "").strip().upper() or None,
                )
            )
    return out


def read_path_list(list_path: Path) -> list[tuple[int, str]]:
    """A released list of image paths -> [(line number, path)]. CSV with a path column, or one per line."""
    import csv

    lines = list_path.read_text(encoding="utf-8-sig").splitlines()
    if not lines:
        raise ValueError(f"{list_path}: empty list (--list)")
    head = next(csv.reader([lines[0]]))
    cols = [h.strip() for h in head]
    for name in ("Path", "path", "imgpath", "image", "image_path"):
        if name in cols:
            k = cols.index(name)
            return [
                (n, row[k].strip()) for n, row in enumerate(csv.reader(lines[1:]), start=2) if row and row[k].strip()
            ]
    if len(cols) > 1:
        raise ValueError(
            f"{list_path}: a CSV list needs a Path, path, imgpath or image column; header is {cols} (--list)"
        )
    return [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]


def _strip_release(p: str) -> str:
    parts = p.replace("\\", "/").split("/")
    while parts and (parts[0].startswith("CheXpert-v1.0") or parts[0] in ("", ".")):
        parts = parts[1:]
    return "/".join(parts)


def _task_row(labs: tuple, path: str, appa: str | None, where: str, context: str, option: str) -> dict:
    """A 5x200 row for an image labelled ``labs`` (CheXpert order); an image without exactly one positive
    competition task is an error naming ``where`` (file, line, path), ``context`` and ``option``."""
    pos = [t for t in COMPETITION_TASKS if labs[CHEXPERT_LABELS.index(t)] == 1]
    if len(pos) != 1:
        raise ValueError(
            f"{where} has {len(pos)} positive competition labels{context} ({pos}); a 5x200 image has exactly one "
            f"({option})"
        )
    view = (appa or "").strip().upper() or None
    return dict(path=path, patient=path.split("/")[-3], task=pos[0], labels=labs, view=view)


def select_from_list(csv_path: Path, list_path: Path) -> list[dict]:
    """The released 5x200 list, labelled from train.csv; rows as select_5x200's."""
    df = chexpert_frame(csv_path)
    raw = df.select(CHEXPERT_LABELS)
    by_path = {_strip_release(p): i for i, p in enumerate(df["Path"].to_list())}
    out, seen = [], set()
    for line, p in read_path_list(list_path):
        key = _strip_release(p)
        i = by_path.get(key)
        if i is None:
            raise ValueError(f"{list_path}:{line}: {p!r} is not in {csv_path} (--list)")
        if key in seen:
            raise ValueError(f"{list_path}:{line}: {p!r} is listed twice (--list)")
        seen.add(key)
        where = f"{list_path}:{line}: {p!r}"
        out.append(_task_row(raw.row(i), df["Path"][i], df["_appa"][i], where, f" in {csv_path}", "--list"))
    return out


REPORT_COLUMN = "Report Impression"


def select_released(path: Path) -> list[dict]:
    """The released 5x200 file's rows (train.csv columns + Report Impression); rows as select_5x200's plus
    ``report``. A row without exactly one positive competition task is an error naming its line."""
    df = chexpert_frame(path)
    if REPORT_COLUMN not in df.columns:
        raise ValueError(f"{path}: no {REPORT_COLUMN!r} column; --released expects GLoRIA's chexpert_5x200.csv")
    raw = df.select(CHEXPERT_LABELS)
    out = []
    for i, p in enumerate(df["Path"].to_list()):
        row = _task_row(raw.row(i), p, df["_appa"][i], f"{path}: line {i + 2}: {p!r}", "", "--released")
        out.append(row | {"report": " ".join((df[REPORT_COLUMN][i] or "").split())})
    return out


def _select(csv_path: Path, cfg: FiveX200Config) -> list[dict]:
    if cfg.released:
        return select_released(csv_path)
    if cfg.list_path:
        return select_from_list(csv_path, Path(cfg.list_path))
    return select_5x200(csv_path, cfg.per_class, cfg.seed)


def run_5x200(csv_path: Path, out: Path, cfg: FiveX200Config) -> dict:
    import re

    rows = _select(csv_path, cfg)
    root = Path(cfg.image_root) if cfg.image_root else csv_path.parent
    conf = asdict(cfg)
    conf["csv"] = str(csv_path)
    selection = (
        "released file (with Report Impression)"
        if cfg.released
        else f"list {cfg.list_path}"
        if cfg.list_path
        else f"seeded draw (seed {cfg.seed})"
    )
    with five_by_200_writer(out, DATASET, cfg, "chexpert-5x200", conf, selection) as w:
        w.counts.inputs_seen = len(rows)
        for r in sorted(rows, key=lambda r: r["path"]):
            sid = "/".join(r["path"].split("/")[-3:]).rsplit(".", 1)[0]
            images = []
            if cfg.images:
                images, failed = process_study_images(
                    [(str(_resolve_image(r["path"], root)), sid, r["view"])], cfg.image_settings
                )
                if not images:
                    w.reject(r["path"], sid, stage="image", kind="failed", reason=failed[0][1])
                    continue
            row = empty_row(DATASET, sid, r["patient"], "test")
            row.update(source=r["path"], labels=list(r["labels"]), images=images)
            if r.get("report"):
                row.update(impression=r["report"], impression_sentences=re.split(r"(?<=\.)\s+", r["report"]))
            w.write(row)
    write_patients(out / DATASET, (r["patient"] for r in rows))
    return w.manifest
