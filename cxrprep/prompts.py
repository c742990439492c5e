"""``cxrprep prompts``: CheXpert / ChestX-ray14 label CSVs -> study shards with rendered prompt reports.

CheXpert (``train.csv`` / ``valid.csv``): ``Path`` (relative to ``--image-root``; the part after
``CheXpert-v1.0[-small]/`` is also tried) = ``.../{train|valid}/patientNNNNN/studyN/viewK_{frontal|lateral}.jpg``.
Rows are grouped into one study per (patient, study); views: ``AP/PA`` for frontals (blank -> null),
``LATERAL`` for laterals, ``LL``/``RL`` kept. Labels 1.0/0.0/-1.0/blank (raw states stored); when the rows
of one study disagree, the first row's labels are used and the study is counted in ``label_conflicts``.
Split: ``train`` for train.csv rows, ``validate`` for valid.csv.

ChestX-ray14 (``Data_Entry_2017*.csv``): ``Finding Labels`` split on ``|`` with the real spellings
(``Pleural_Thickening``, ``No Finding``); stored as 1 (present) / 0 (absent) in NIH_LABELS order. One image
per study (``Image Index`` stem). Split: ``train_val_list.txt`` / ``test_list.txt`` beside the CSV (or
``--split-lists DIR``); train_val patients are divided 80/20 into train/validate by a hash of the patient,
as CXR-CLIP did; without the lists, a deterministic 70/10/20 patient-level split.

Prompts: ``--variants K`` prompt reports per study; each is one sentence per labelled class (positive,
negative or uncertain templates; uncertain labels follow ``--uncertain``), for ChestX-ray14 the positives
plus ``--negatives N`` sampled absent classes, in random order; randomness is seeded per study from
``--seed`` and the study id, so output is deterministic.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .images import ImageSettings, process_study_images
from .paths import split_outside
from .labels import CHEXPERT_LABELS, NIH_LABELS
from .parallel import chunked, in_part, ordered_map
from .schema import empty_row
from .shards import ShardWriter
from .templates import Templates, load_templates

UNCERTAIN_POLICIES = ("uncertain", "positive", "negative", "drop")
NIH_REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "View Position")
CHEXPERT_REQUIRED = ("Path",) + CHEXPERT_LABELS
_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": None}


@dataclass(frozen=True)
class PromptsConfig:
    """Options of ``cxrprep prompts`` (recorded in manifest.json)."""

    templates: str = "default"  # a packaged name (cxrprep/promptfiles.py) or a path
    dataset: str | None = None  # "chexpert" | "chestx-ray14"; None: detected from the header
    image_root: str | None = None
    allow_outside_root: bool = False  # --allow-outside-root: read image paths that resolve outside the root
    images: bool = True
    variants: int = 8
    negatives: int = 3
    uncertain: str = "uncertain"
    seed: int = 0
    split_lists: str | None = None
    exclude_patients: str | None = None
    workers: int = 1
    part: tuple[int, int] | None = None
    image_settings: ImageSettings = field(default_factory=ImageSettings)

    def __post_init__(self) -> None:
        if self.variants < 1:
            raise ValueError(f"--variants must be >= 1, got {self.variants}")
        if self.negatives < 0:
            raise ValueError(f"--negatives must be >= 0, got {self.negatives}")
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(f"--uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got {self.uncertain!r}")
        if self.dataset not in (None, "chexpert", "chestx-ray14"):
            raise ValueError(f"--dataset must be chexpert or chestx-ray14, got {self.dataset!r}")


def study_rng(seed: int, study_id: str) -> random.Random:
    """Per-study randomness: independent of processing order, workers and --part."""
    return random.Random(zlib.crc32(f"{seed}:{study_id}".encode()) * 1_000_003 + seed)


def detect_dataset(header: list[str], path: Path) -> str:
    if all(c in header for c in NIH_REQUIRED):
        return "chestx-ray14"
    if "Path" in header and any(c in header for c in CHEXPERT_LABELS):
        return "chexpert"
    raise ValueError(f"{path}: header {header[:6]}... is neither CheXpert (Path + 14 labels) nor ChestX-ray14 "
                     f"(Image Index, Finding Labels, ...); pass --dataset")


# -- rendering --------------------------------------------------------------------------------------
def render_prompts(t: Templates, states: list[tuple[str, str]], rng: random.Random, variants: int) -> list[str]:
    """``states`` = [(class name, positive|negative|uncertain)] -> ``variants`` prompt reports."""
    pools = [t.sentences(c, s) for c, s in states]
    pools = [p for p in pools if p]
    out = []
    for _ in range(variants):
        sents = [rng.choice(p) for p in pools]
        rng.shuffle(sents)
        out.append(" ".join(sents))
    return out


def chexpert_states(labels: list[int | None], policy: str) -> list[tuple[str, str]]:
    states = []
    for name, v in zip(CHEXPERT_LABELS, labels):
        if v is None:
            continue
        if v == -1:
            if policy == "drop":
                continue
            state = "uncertain" if policy == "uncertain" else policy
        else:
            state = "positive" if v == 1 else "negative"
        if name == "No Finding" and state != "positive":
            continue  # never "no No Finding"
        states.append((name, state))
    return states


def nih_states(labels: list[int], rng: random.Random, negatives: int) -> list[tuple[str, str]]:
    pos = [n for n, v in zip(NIH_LABELS, labels) if v == 1]
    absent = [n for n, v in zip(NIH_LABELS, labels) if v == 0 and n != "No Finding"]
    neg = rng.sample(absent, min(negatives, len(absent)))
    return [(n, "positive") for n in pos] + [(n, "negative") for n in neg]


# -- readers ----------------------------------------------------------------------------------------
def _bad_value(df, col: str, allowed):
    """First row whose ``col`` is not in ``allowed`` (a 0- or 1-row frame)."""
    import polars as pl

    return df.filter(~pl.col(col).fill_null("").str.strip_chars().is_in(list(allowed))).head(1)


def chexpert_frame(path: Path):
    """Read and validate a CheXpert CSV (header, label values, Path shape; errors name row and column) ->
    polars frame with the label columns parsed to Int8 (1/0/-1/null) and _patient/_study/_split/_fl/_appa
    columns. Shared by ``cxrprep prompts`` and ``cxrprep chexpert-5x200``."""
    import polars as pl

    try:
        df = pl.read_csv(path, infer_schema_length=0).with_row_index("_row")
    except (pl.exceptions.NoDataError, pl.exceptions.ComputeError) as e:  # empty, not UTF-8, not a CSV
        raise ValueError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:200]})") from None
    missing = [c for c in CHEXPERT_REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; a CheXpert CSV has Path, Sex, Age, Frontal/Lateral, "
                         f"AP/PA and the 14 observations")
    for c in CHEXPERT_LABELS:
        bad = _bad_value(df, c, _VALUES)
        if bad.height:
            raise ValueError(f"{path}: row {bad['_row'][0] + 2}, column {c!r}: value {bad[c][0]!r} is not "
                             f"1.0, 0.0, -1.0 or blank")
    parts = df["Path"].str.split("/")
    df = df.with_columns(
        parts.list.get(-3, null_on_oob=True).alias("_patient"),
        parts.list.get(-2, null_on_oob=True).alias("_study"),
        parts.list.get(-4, null_on_oob=True).alias("_split"),
    )
    bad = df.filter(pl.col("_patient").is_null() | ~pl.col("_patient").str.starts_with("patient")).head(1)
    if bad.height:
        raise ValueError(f"{path}: row {bad['_row'][0] + 2}, column 'Path': {bad['Path'][0]!r} is not "
                         f".../patientNNNNN/studyN/viewK_*.jpg")
    fl = df["Frontal/Lateral"] if "Frontal/Lateral" in df.columns else pl.Series([None] * df.height)
    appa = df["AP/PA"] if "AP/PA" in df.columns else pl.Series([None] * df.height)
    df = df.with_columns(pl.Series("_fl", fl), pl.Series("_appa", appa))
    lab = [pl.col(c).fill_null("").str.strip_chars().replace_strict(_VALUES, return_dtype=pl.Int8).alias(c)
           for c in CHEXPERT_LABELS]
    return df.with_columns(lab)


def read_chexpert(path: Path) -> list[dict]:
    """-> studies sorted by study_id: {study_id, subject_id, split, labels, images: [(rel path, view)]}."""
    import polars as pl

    df = chexpert_frame(path).with_columns(pl.concat_list(list(CHEXPERT_LABELS)).alias("_labels"))
    studies: dict[str, dict] = {}
    for row in df.select("Path", "_patient", "_study", "_split", "_fl", "_appa", "_labels").iter_rows():
        p, patient, study, split, fl_v, appa_v, labels = row
        sid = f"{patient}/{study}"
        if (fl_v or "").strip().lower() == "lateral":
            view = "LATERAL" if (appa_v or "").strip() in ("", "LATERAL") else appa_v.strip().upper()
        else:
            view = (appa_v or "").strip().upper() or None
        st = studies.get(sid)
        if st is None:
            studies[sid] = dict(study_id=sid, subject_id=patient,
                                split="validate" if split == "valid" else "train",
                                labels=list(labels), images=[(p, view)], conflict=False)
        else:
            st["images"].append((p, view))
            if list(labels) != st["labels"]:
                st["conflict"] = True
    return [studies[k] for k in sorted(studies)]


def _read_list(p: Path) -> set[str]:
    return {ln.strip() for ln in p.read_text().splitlines() if ln.strip()}


def read_nih(path: Path, split_lists: Path | None) -> list[dict]:
    import polars as pl

    try:
        df = pl.read_csv(path, infer_schema_length=0).with_row_index("_row")
    except (pl.exceptions.NoDataError, pl.exceptions.ComputeError) as e:  # empty, not UTF-8, not a CSV
        raise ValueError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:200]})") from None
    missing = [c for c in NIH_REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; a ChestX-ray14 Data_Entry CSV has Image Index, "
                         f"Finding Labels, Follow-up #, Patient ID, ...")
    index = {n: i for i, n in enumerate(NIH_LABELS)}
    lists_dir = split_lists or path.parent
    tv, te = lists_dir / "train_val_list.txt", lists_dir / "test_list.txt"
    have_lists = tv.exists() and te.exists()
    if split_lists and not have_lists:
        raise ValueError(f"--split-lists {split_lists}: train_val_list.txt and test_list.txt not found there")
    test = _read_list(te) if have_lists else set()
    out = []
    for row_i, img, labels_s, pid, view in df.select("_row", "Image Index", "Finding Labels", "Patient ID",
                                                     "View Position").iter_rows():
        labels = [0] * len(NIH_LABELS)
        for name in (labels_s or "").split("|"):
            name = name.strip()
            if name not in index:
                raise ValueError(f"{path}: row {row_i + 2}, column 'Finding Labels': {name!r} is not one of "
                                 f"{', '.join(NIH_LABELS)}")
            labels[index[name]] = 1
        subject = f"{int(pid):08d}" if (pid or "").strip().isdigit() else (pid or "").strip()
        h = zlib.crc32(f"split:{subject}".encode()) % 100
        if have_lists:
            split = "test" if img in test else ("validate" if h < 20 else "train")
        else:
            split = "test" if h < 20 else "validate" if h < 30 else "train"
        out.append(dict(study_id=Path(img).stem, subject_id=subject, split=split, labels=labels,
                        images=[(img, (view or "").strip().upper() or None)], conflict=False))
    out.sort(key=lambda s: s["study_id"])
    return out


def _resolve_image(rel: str, root: Path) -> Path:
    p = root / rel
    if p.exists():
        return p
    parts = Path(rel).parts
    if parts and parts[0].startswith("CheXpert-v1.0"):
        alt = root.joinpath(*parts[1:])
        if alt.exists():
            return alt
    return p


# -- worker -----------------------------------------------------------------------------------------
_T: Templates | None = None


def _init(template_path: str) -> None:
    global _T
    _T = load_templates(template_path)


def _work(args):
    studies, kind, cfg, root = args
    out = []
    for st in studies:
        rng = study_rng(cfg.seed, st["study_id"])
        if kind == "chexpert":
            states = chexpert_states(st["labels"], cfg.uncertain)
        else:
            states = nih_states(st["labels"], rng, cfg.negatives)
        prompts = render_prompts(_T, states, rng, cfg.variants) if states else []
        images, failed = [], []
        if cfg.images:
            items = [(str(_resolve_image(rel, root)), Path(rel).with_suffix("").as_posix().split("/", 1)[-1]
                      if kind == "chexpert" else Path(rel).stem, view) for rel, view in st["images"]]
            items, failed = split_outside(items, root, cfg.allow_outside_root)  # paths stay inside --image-root
            images, more = process_study_images(items, cfg.image_settings)
            failed += more
        out.append((prompts, images, failed))
    return out


def run_prompts(csv_path: Path, out: Path, cfg: PromptsConfig, progress=lambda it, total: it) -> dict:
    """Run ``cxrprep prompts``; returns the manifest. Raises ValueError (bad CSV/template) before work."""
    import csv as _csv

    load_templates(cfg.templates)  # template errors surface before any work (TemplateError is a ValueError)
    with open(csv_path, newline="") as f:
        header = next(_csv.reader(f), [])
    kind = cfg.dataset or detect_dataset(header, csv_path)
    if kind == "chexpert":
        studies, label_names = read_chexpert(csv_path), list(CHEXPERT_LABELS)
    else:
        studies, label_names = read_nih(csv_path, Path(cfg.split_lists) if cfg.split_lists else None), list(NIH_LABELS)
    excluded: set[str] = set()
    if cfg.exclude_patients:
        excluded = _read_list(Path(cfg.exclude_patients))
    root = Path(cfg.image_root) if cfg.image_root else csv_path.parent
    mine = [s for s in studies if in_part(s["subject_id"], cfg.part)]
    conf = asdict(cfg)
    conf["csv"] = str(csv_path)
    extra = {"label_conflicts": 0, "excluded_patients": 0, "prompts_written": 0}
    with ShardWriter(out, kind, config=conf, label_names=label_names,
                     image_settings=cfg.image_settings.manifest() if cfg.images else None,
                     command="prompts", part=cfg.part) as w:
        w.counts.inputs_seen = len(mine)
        keep = []
        for st in mine:
            if st["subject_id"] in excluded:
                w.reject(st["study_id"], st["study_id"], stage="exclude", kind="skipped",
                         reason=f"patient {st['subject_id']} is in --exclude-patients {cfg.exclude_patients}")
                extra["excluded_patients"] += 1
            else:
                keep.append(st)
        tasks = ((chunk, kind, cfg, root) for chunk in chunked(keep, 512))
        chunks = chunked(keep, 512)
        results = ordered_map(_work, tasks, workers=cfg.workers, initializer=_init, initargs=(cfg.templates,))
        for chunk, res in progress(zip(chunks, results), (len(keep) + 511) // 512):
            for st, (prompts, images, failed) in zip(chunk, res):
                src = st["images"][0][0]
                if cfg.images and not images:
                    w.reject(src, st["study_id"], stage="image", kind="failed",
                             reason=f"all {len(failed)} images failed; first: {failed[0][1]}")
                    continue
                if not prompts:
                    w.reject(src, st["study_id"], stage="prompts", kind="skipped",
                             reason="no labelled class to write a prompt for (all blank, or dropped by --uncertain)")
                    continue
                row = empty_row(kind, st["study_id"], st["subject_id"], st["split"])
                row.update(source=src, labels=st["labels"], prompts=prompts, images=images)
                extra["label_conflicts"] += int(st["conflict"])
                extra["prompts_written"] += len(prompts)
                for path, reason in failed:
                    w.reject(path, st["study_id"], stage="image", kind="failed", reason=reason, level="image")
                w.write(row)
        w.counts.extra.update(extra)
    return w.manifest
