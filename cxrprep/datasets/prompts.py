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

from cxrprep.datasets.csvtext import check_utf8
from cxrprep.image.process import ImageSettings, process_study_images
from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS
from cxrprep.parallel import in_part, ordered_map
from cxrprep.paths import split_outside
from cxrprep.shards import ShardWriter
from cxrprep.text.templates import Templates, load_templates

UNCERTAIN_POLICIES = ("uncertain", "positive", "negative", "drop")
NIH_REQUIRED = ("Image Index", "Finding Labels", "Patient ID", "View Position")
CHEXPERT_REQUIRED = ("Path",) + CHEXPERT_LABELS
_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": None}


@dataclass(frozen=True)
class PromptsConfig:
    """Options of ``cxrprep prompts`` (recorded in manifest.json)."""

    templates: str = "default"  # a packaged name (cxrprep/text/promptfiles.py) or a path
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
    raise ValueError(
        f"{path}: header {header[:6]}... is neither CheXpert (Path + 14 labels) nor ChestX-ray14 "
        f"(Image Index, Finding Labels, ...); pass --dataset"
    )


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
        raise ValueError(
            f"{path}: missing columns {missing}; a CheXpert CSV has Path, Sex, Age, Frontal/Lateral, "
            f"AP/PA and the 14 observations"
        )
    for c in CHEXPERT_LABELS:
        bad = _bad_value(df, c, _VALUES)
        if bad.height:
            raise ValueError(
                f"{path}: row {bad['_row'][0] + 2}, column {c!r}: value {bad[c][0]!r} is not 1.0, 0.0, -1.0 or blank"
            )
    parts = df["Path"].str.split("/")
    df = df.with_columns(
        parts.list.get(-3, null_on_oob=True).alias("_patient"),
        parts.list.get(-2, null_on_oob=True).alias("_study"),
        parts.list.get(-4, null_on_oob=True).alias("_split"),
    )
    bad = df.filter(pl.col("_patient").is_null() | ~pl.col("_patient").str.starts_with("patient")).head(1)
    if bad.height:
        raise ValueError(
            f"{path}: row {bad['_row'][0] + 2}, column 'Path': {bad['Path'][0]!r} is not "
            f".../patientNNNNN/studyN/viewK_*.jpg"
        )
    fl = df["Frontal/Lateral"] if "Frontal/Lateral" in df.columns else pl.Series([None] * df.height)
    appa = df["AP/PA"] if "AP/PA" in df.columns else pl.Series([None] * df.height)
    df = df.with_columns(pl.Series("_fl", fl), pl.Series("_appa", appa))
    lab = [
        pl.col(c).fill_null("").str.strip_chars().replace_strict(_VALUES, return_dtype=pl.Int8).alias(c)
        for c in CHEXPERT_LABELS
    ]
    return df.with_columns(lab)


def _chexpert_view(fl, appa):
    """Polars expression of a CheXpert row's view (LATERAL/LL/RL for laterals, AP/PA for frontals)."""
    import polars as pl

    appa_s = appa.fill_null("").str.strip_chars()
    lateral = fl.fill_null("").str.strip_chars().str.to_lowercase() == "lateral"
    return (
        pl.when(lateral & appa_s.is_in(["", "LATERAL"]))
        .then(pl.lit("LATERAL"))
        .when(appa_s == "")
        .then(pl.lit(None, pl.String))
        .otherwise(appa_s.str.to_uppercase())
    )


def chexpert_studies(path: Path):
    """-> (polars frame with one row per study, sorted by study_id: study_id, subject_id, split, labels
    (first row's), conflict, paths, views, rows (CSV line numbers)); [(path, study_id, reason)] for rows
    that repeat an image already in their study)."""
    import polars as pl

    df = chexpert_frame(path).with_columns(
        pl.concat_list(list(CHEXPERT_LABELS)).alias("_labels"),
        _chexpert_view(pl.col("_fl"), pl.col("_appa")).alias("_view"),
        (pl.col("_patient") + "/" + pl.col("_study")).alias("study_id"),
    )
    first = df.unique(subset=["study_id", "Path"], keep="first", maintain_order=True)
    dups = []
    if first.height != df.height:
        extra = df.filter(~pl.col("_row").is_in(first["_row"].implode())).select("study_id", "Path", "_row")
        extra = extra.join(
            first.select("study_id", "Path", pl.col("_row").alias("_first")),
            on=["study_id", "Path"],
            how="left",
            maintain_order="left",
        )
        for sid, p, row, first_row in extra.iter_rows():
            dups.append(
                (
                    p,
                    sid,
                    f"duplicate image {p} in study {sid}: CSV lines {first_row + 2} and {row + 2}; the first is kept",
                )
            )
    g = (
        first.group_by("study_id", maintain_order=True)
        .agg(
            pl.col("_patient").first().alias("subject_id"),
            pl.col("_split").first().alias("_split"),
            pl.col("_labels").first().alias("labels"),
            pl.col("_labels").n_unique().alias("_n"),
            pl.col("Path").alias("paths"),
            pl.col("_view").alias("views"),
        )
        .with_columns(
            (pl.col("_n") > 1).alias("conflict"),
            pl.when(pl.col("_split") == "valid").then(pl.lit("validate")).otherwise(pl.lit("train")).alias("split"),
        )
        .drop("_n", "_split")
        .sort("study_id")
    )
    return g, dups


def read_chexpert(path: Path) -> list[dict]:
    """-> studies sorted by study_id: {study_id, subject_id, split, labels, images: [(rel path, view)]}."""
    g, _ = chexpert_studies(path)
    return [
        dict(
            study_id=r["study_id"],
            subject_id=r["subject_id"],
            split=r["split"],
            labels=list(r["labels"]),
            images=list(zip(r["paths"], r["views"])),
            conflict=r["conflict"],
        )
        for r in g.iter_rows(named=True)
    ]


def _read_list(p: Path) -> set[str]:
    return {ln.strip() for ln in p.read_text().splitlines() if ln.strip()}


def nih_studies(path: Path, split_lists: Path | None):
    """-> (polars frame, one row per image = study, sorted by study_id: study_id, subject_id, split,
    labels (1/0 in NIH_LABELS order), paths, views, conflict); [(source, study_id, reason)] for rows that
    repeat an ``Image Index``)."""
    import polars as pl

    try:
        df = pl.read_csv(path, infer_schema_length=0).with_row_index("_row")
    except (pl.exceptions.NoDataError, pl.exceptions.ComputeError) as e:  # empty, not UTF-8, not a CSV
        raise ValueError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:200]})") from None
    missing = [c for c in NIH_REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: missing columns {missing}; a ChestX-ray14 Data_Entry CSV has Image Index, "
            f"Finding Labels, Follow-up #, Patient ID, ..."
        )
    lists_dir = split_lists or path.parent
    tv, te = lists_dir / "train_val_list.txt", lists_dir / "test_list.txt"
    have_lists = tv.exists() and te.exists()
    if split_lists and not have_lists:
        raise ValueError(f"--split-lists {split_lists}: train_val_list.txt and test_list.txt not found there")
    test = sorted(_read_list(te)) if have_lists else []
    names = pl.col("Finding Labels").fill_null("").str.split("|").list.eval(pl.element().str.strip_chars())
    df = df.with_columns(names.alias("_names"))
    bad = df.select("_row", "_names").explode("_names").filter(~pl.col("_names").is_in(list(NIH_LABELS))).head(1)
    if bad.height:
        raise ValueError(
            f"{path}: row {bad['_row'][0] + 2}, column 'Finding Labels': {bad['_names'][0]!r} is not "
            f"one of {', '.join(NIH_LABELS)}"
        )
    pid = pl.col("Patient ID").fill_null("").str.strip_chars()
    subject = pl.when(pid.str.contains(r"^[0-9]+$")).then(pid.str.strip_chars_start("0").str.zfill(8)).otherwise(pid)
    df = df.with_columns(
        pl.col("Image Index").str.replace(r"\.[^./]*$", "").alias("study_id"),
        subject.alias("subject_id"),
        pl.concat_list([pl.col("_names").list.contains(n).cast(pl.Int8) for n in NIH_LABELS]).alias("labels"),
        pl.col("View Position").fill_null("").str.strip_chars().str.to_uppercase().alias("_view"),
    )
    subjects = df["subject_id"].unique().to_list()
    h = pl.DataFrame(
        {"subject_id": subjects, "_h": [zlib.crc32(f"split:{s}".encode()) % 100 for s in subjects]},
        schema={"subject_id": pl.String, "_h": pl.Int64},
    )
    df = df.join(h, on="subject_id", how="left", maintain_order="left")
    if have_lists:
        split = (
            pl.when(pl.col("Image Index").is_in(test))
            .then(pl.lit("test"))
            .when(pl.col("_h") < 20)
            .then(pl.lit("validate"))
            .otherwise(pl.lit("train"))
        )
    else:
        split = (
            pl.when(pl.col("_h") < 20)
            .then(pl.lit("test"))
            .when(pl.col("_h") < 30)
            .then(pl.lit("validate"))
            .otherwise(pl.lit("train"))
        )
    df = df.with_columns(
        split.alias("split"),
        pl.concat_list([pl.col("Image Index")]).alias("paths"),
        pl.concat_list([pl.when(pl.col("_view") == "").then(pl.lit(None, pl.String)).otherwise(pl.col("_view"))]).alias(
            "views"
        ),
        pl.lit(False).alias("conflict"),
    )
    first = df.unique(subset="study_id", keep="first", maintain_order=True)
    dups = []
    if first.height != df.height:
        extra = df.filter(~pl.col("_row").is_in(first["_row"].implode())).select("study_id", "Image Index", "_row")
        extra = extra.join(
            first.select("study_id", pl.col("_row").alias("_first")), on="study_id", how="left", maintain_order="left"
        )
        for sid, img, row, first_row in extra.iter_rows():
            dups.append(
                (img, sid, f"duplicate Image Index {img}: CSV lines {first_row + 2} and {row + 2} (the first is kept)")
            )
    out = first.select("study_id", "subject_id", "split", "labels", "paths", "views", "conflict").sort("study_id")
    return out, dups


def read_nih(path: Path, split_lists: Path | None) -> list[dict]:
    g, _ = nih_studies(path, split_lists)
    return [
        dict(
            study_id=r["study_id"],
            subject_id=r["subject_id"],
            split=r["split"],
            labels=list(r["labels"]),
            images=list(zip(r["paths"], r["views"])),
            conflict=False,
        )
        for r in g.iter_rows(named=True)
    ]


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


# -- bulk rendering ---------------------------------------------------------------------------------
_M64 = (1 << 64) - 1


def _mix(x):
    """splitmix64 finaliser on a uint64 numpy array: a counter-based random stream."""
    import numpy as np

    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def study_keys(seed: int, study_ids):  # -> numpy.ndarray of uint64
    """64-bit key per study: FNV-1a of the study id's UTF-8 bytes, mixed with ``--seed``; computed
    column-wise with numpy. The study's random stream depends on nothing else (not on order, workers or
    --part)."""
    import numpy as np
    import pyarrow as pa

    n = len(study_ids)
    arr = pa.array(study_ids, pa.large_string())
    offs = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if n and offs[-1] > offs[0] else np.zeros(1, np.uint8)
    lens = np.diff(offs)
    h = np.full(n, 0xCBF29CE484222325, np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for j in range(int(lens.max()) if n else 0):
            live = lens > j
            b = data[np.minimum(offs[:-1] + j, len(data) - 1)].astype(np.uint64)
            h = np.where(live, (h ^ b) * prime, h)
        return _mix(h ^ _mix(np.full(n, seed & _M64, np.uint64)))


def _uniform(keys, tag: int, variant, cls):
    """uint64 random value per (study key, purpose tag, variant, class), all broadcast numpy arrays."""
    import numpy as np

    with np.errstate(over="ignore"):
        c = (
            (np.uint64(tag) << np.uint64(40))
            + (np.asarray(variant, np.uint64) << np.uint64(8))
            + np.asarray(cls, np.uint64)
        )
        return _mix(keys ^ _mix(c))


def state_codes(kind: str, labels, policy: str, keys, negatives: int):
    """(n, C) int8 matrix of sentence states per study and class: 0 none, 1 positive, 2 negative,
    3 uncertain; the same rules as chexpert_states / nih_states (NIH negatives: ``negatives`` absent
    classes drawn per study without replacement)."""
    import numpy as np

    lab = labels  # (n, C) float with nan for null
    st = np.zeros(lab.shape, np.int8)
    if kind == "chexpert":
        st[lab == 1] = 1
        st[lab == 0] = 2
        unc = {"uncertain": 3, "positive": 1, "negative": 2, "drop": 0}[policy]
        st[lab == -1] = unc
        nf = CHEXPERT_LABELS.index("No Finding")
        st[:, nf] = np.where(st[:, nf] == 1, 1, 0)  # never "no No Finding"
        return st
    st[lab == 1] = 1
    absent = lab == 0
    absent[:, NIH_LABELS.index("No Finding")] = False
    if negatives:
        n, c = lab.shape
        r = _uniform(keys[:, None], 1, 0, np.arange(c)[None, :])
        r = np.where(absent, r, np.uint64(_M64))
        order = np.argsort(r, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(c)[None, :].repeat(n, 0), axis=1)
        st[absent & (rank < negatives)] = 2
    return st


def render_bulk(t: Templates, class_names, states, keys, variants: int):
    """Prompt reports for many studies at once -> (pyarrow list<string> array, one list of ``variants``
    prompts per study (empty when the study has no sentence to say), prompts per study).

    Each variant of a study is one sentence per (class, state) that has sentences, drawn from the
    pre-expanded pools of ``Templates.sentences``, in a random order; the draws come from the study's
    key (a counter-based generator), so they do not depend on which other studies are rendered."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    pool_text: list[str] = []
    offs = np.zeros((len(class_names), 4), np.int64)
    sizes = np.zeros((len(class_names), 4), np.int64)
    for c, name in enumerate(class_names):
        for code, state in ((1, "positive"), (2, "negative"), (3, "uncertain")):
            try:
                pool = t.sentences(name, state)
            except KeyError:
                raise ValueError(f"{t.path}: no templates for class {name!r}; add it under classes:") from None
            offs[c, code], sizes[c, code] = len(pool_text), len(pool)
            pool_text.extend(pool)
    n, ncls = states.shape
    size = sizes[np.arange(ncls)[None, :], states]  # (n, C): pool size, 0 where nothing to say
    k = (size > 0).sum(axis=1)  # sentences per prompt
    has = k > 0
    v = np.arange(variants, dtype=np.uint64)[None, :, None]
    cls = np.arange(ncls, dtype=np.uint64)[None, None, :]
    pieces = []
    for lo in range(0, n, 8192):  # bounded memory: (studies, variants, classes) arrays per block
        hi = min(n, lo + 8192)
        sz = size[lo:hi][:, None, :].astype(np.uint64)
        kk = keys[lo:hi][:, None, None]
        pick = _uniform(kk, 2, v, cls) % np.maximum(sz, np.uint64(1))
        sent = offs[np.arange(ncls)[None, :], states[lo:hi]][:, None, :] + pick.astype(np.int64)
        # shuffle each prompt's sentences: sort by a random key, classes with nothing to say last
        order = np.argsort(np.where(sz > 0, _uniform(kk, 3, v, cls) >> np.uint64(1), np.uint64(_M64)), axis=2)
        sent = np.take_along_axis(sent, order, axis=2)
        valid = np.take_along_axis(np.broadcast_to(sz > 0, sent.shape), order, axis=2)
        pieces.append(sent[valid])
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    group_len = np.repeat(k[has], variants)
    inner = np.zeros(len(group_len) + 1, np.int64)
    np.cumsum(group_len, out=inner[1:])
    texts = pa.array(pool_text, pa.string()).take(pa.array(flat, pa.int64()))
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(inner, pa.int32()), texts), " ")
    outer = np.zeros(n + 1, np.int64)
    np.cumsum(np.where(has, variants, 0), out=outer[1:])
    prompts = pa.ListArray.from_arrays(pa.array(outer, pa.int32()), joined)
    chars = np.zeros(n, np.int64)  # characters of a study's prompts (for the writer's size estimate)
    if len(joined):
        chars[has] = pc.utf8_length(joined).to_numpy(zero_copy_only=False).reshape(-1, variants).sum(axis=1)
    return prompts, np.where(has, variants, 0), chars


# -- worker -----------------------------------------------------------------------------------------
def _work(args):
    """Worker: the images of a chunk of studies -> [(images, failed)] per study."""
    studies, kind, settings, root, allow_outside = args
    out = []
    for paths, views in studies:
        items = [
            (
                str(_resolve_image(rel, root)),
                Path(rel).with_suffix("").as_posix().split("/", 1)[-1] if kind == "chexpert" else Path(rel).stem,
                view,
            )
            for rel, view in zip(paths, views)
        ]
        items, failed = split_outside(items, root, allow_outside)  # paths stay inside --image-root
        images, more = process_study_images(items, settings)
        out.append((images, failed + more))
    return out


def _labels_matrix(frame, ncls: int):
    import numpy as np

    flat = frame["labels"].explode().cast(float).fill_null(float("nan")).to_numpy()
    return flat.reshape(-1, ncls) if frame.height else np.zeros((0, ncls))


def run_prompts(csv_path: Path, out: Path, cfg: PromptsConfig, progress=lambda it, total: it) -> dict:
    """Run ``cxrprep prompts``; returns the manifest. Raises ValueError (bad CSV/template) before work.

    Labels are read and grouped with polars, every study's prompts are rendered in bulk (numpy + Arrow),
    and text-only runs write the whole table at once; with images, worker processes decode the images of
    chunks of studies and the rows are written chunk by chunk, in study order."""
    import csv as _csv

    import numpy as np
    import polars as pl
    import pyarrow as pa

    from cxrprep.schema import STUDY_SCHEMA

    t = load_templates(cfg.templates)  # template errors surface before any work (TemplateError is a ValueError)
    check_utf8(csv_path)  # a Latin-1 CSV: one line naming the file and line, not a bare codec error
    with open(csv_path, newline="", encoding="utf-8") as f:
        header = next(_csv.reader(f), [])
    kind = cfg.dataset or detect_dataset(header, csv_path)
    if kind == "chexpert":
        frame, dups = chexpert_studies(csv_path)
        label_names = list(CHEXPERT_LABELS)
    else:
        frame, dups = nih_studies(csv_path, Path(cfg.split_lists) if cfg.split_lists else None)
        label_names = list(NIH_LABELS)
    excluded: set[str] = set()
    if cfg.exclude_patients:
        excluded = _read_list(Path(cfg.exclude_patients))
    root = Path(cfg.image_root) if cfg.image_root else csv_path.parent
    if cfg.part is not None:
        frame = frame.filter(pl.col("subject_id").map_elements(lambda s: in_part(s, cfg.part), return_dtype=pl.Boolean))
        dups = [d for d in dups if d[1] in set(frame["study_id"].to_list())]
    is_excluded = frame["subject_id"].is_in(sorted(excluded)) if excluded else pl.Series([False] * frame.height)
    conf = asdict(cfg)
    conf["csv"] = str(csv_path)
    extra = {"label_conflicts": 0, "excluded_patients": 0, "prompts_written": 0}
    with ShardWriter(
        out,
        kind,
        config=conf,
        label_names=label_names,
        image_settings=cfg.image_settings.manifest() if cfg.images else None,
        command="prompts",
        part=cfg.part,
    ) as w:
        w.counts.inputs_seen = frame.height + len(dups)
        for src, sid, reason in dups:
            w.reject(src, sid, stage="read", kind="skipped", reason=reason)
        for sid, subject in frame.filter(is_excluded).select("study_id", "subject_id").iter_rows():
            w.reject(
                sid,
                sid,
                stage="exclude",
                kind="skipped",
                reason=f"patient {subject} is in --exclude-patients {cfg.exclude_patients}",
            )
            extra["excluded_patients"] += 1
        keep = frame.filter(~is_excluded)
        n = keep.height
        sids = keep["study_id"].to_list()
        keys = study_keys(cfg.seed, sids)
        states = state_codes(kind, _labels_matrix(keep, len(label_names)), cfg.uncertain, keys, cfg.negatives)
        prompts, counts, chars = render_bulk(t, label_names, states, keys, cfg.variants)
        sources = keep["paths"].list.first()
        string = pa.string()
        empty = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], string))
        base = {
            "dataset": pa.array([kind] * n, string),
            "study_id": pa.array(sids, string),
            "subject_id": keep["subject_id"].to_arrow().cast(string),
            "split": keep["split"].to_arrow().cast(string),
            "source": sources.to_arrow().cast(string),
            "findings": pa.nulls(n, string),
            "impression": pa.nulls(n, string),
            "findings_sentences": empty,
            "impression_sentences": empty,
            "findings_bt": empty,
            "impression_bt": empty,
            "sections": pa.ListArray.from_arrays(
                pa.array(np.zeros(n + 1, np.int32)), pa.array([], STUDY_SCHEMA.field("sections").type.value_type)
            ),
            "fallback": pa.array(np.zeros(n, bool)),
            "labels": keep["labels"].to_arrow().cast(STUDY_SCHEMA.field("labels").type),
            "prompts": prompts,
            "images": pa.ListArray.from_arrays(
                pa.array(np.zeros(n + 1, np.int32)), pa.array([], STUDY_SCHEMA.field("images").type.value_type)
            ),
        }
        table = pa.Table.from_arrays([base[f.name] for f in STUDY_SCHEMA], schema=STUDY_SCHEMA)
        conflict = keep["conflict"].to_numpy()
        has_prompts = counts > 0
        no_prompt = "no labelled class to write a prompt for (all blank, or dropped by --uncertain)"
        src_list = sources.to_list()
        if not cfg.images:
            for i in np.nonzero(~has_prompts)[0]:
                w.reject(src_list[i], sids[i], stage="prompts", kind="skipped", reason=no_prompt)
            extra["label_conflicts"] += int(conflict[has_prompts].sum())
            extra["prompts_written"] += int(counts.sum())
            w.write_table(table.filter(pa.array(has_prompts)), (256 + chars[has_prompts]).tolist())
        else:
            size = 512
            items = list(zip(keep["paths"].to_list(), keep["views"].to_list()))
            tasks = (
                (items[i : i + size], kind, cfg.image_settings, root, cfg.allow_outside_root) for i in range(0, n, size)
            )
            results = ordered_map(_work, tasks, workers=cfg.workers)
            img_type = STUDY_SCHEMA.field("images").type
            for c, res in enumerate(progress(results, (n + size - 1) // size)):
                lo = c * size
                mask, imgs = [], []
                for i, (images, failed) in enumerate(res, start=lo):
                    if not images:
                        w.reject(
                            src_list[i],
                            sids[i],
                            stage="image",
                            kind="failed",
                            reason=f"all {len(failed)} images failed; first: {failed[0][1]}",
                        )
                        mask.append(False)
                        continue
                    if not has_prompts[i]:
                        w.reject(src_list[i], sids[i], stage="prompts", kind="skipped", reason=no_prompt)
                        mask.append(False)
                        continue
                    extra["label_conflicts"] += int(conflict[i])
                    extra["prompts_written"] += int(counts[i])
                    for path, reason in failed:
                        w.reject(path, sids[i], stage="image", kind="failed", reason=reason, level="image")
                    mask.append(True)
                    imgs.append(images)
                part = table.slice(lo, len(res)).filter(pa.array(mask, pa.bool_()))
                part = part.set_column(part.schema.get_field_index("images"), "images", pa.array(imgs, img_type))
                w.write_table(part)
        w.counts.extra.update(extra)
    return w.manifest
