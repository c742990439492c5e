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
``--seed`` and the study id, so output is deterministic. ``--qualifiers none|sample`` (default: the template
file's ``qualifiers:``, else none) says whether severity and side are invented; with ``sample`` one profile
per study and class is drawn and all K variants agree with it (cxrprep/text/template_qualifiers.py).

Conflicting labels: "No Finding" positive together with a positive or uncertain finding (Support Devices
excepted, as the CheXpert labeler allows it) drops the No Finding sentence (a finding outranks "normal"); the
stored labels stay as read, and the study counts in ``label_conflicts`` (as do studies whose CSV rows
disagree).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxrprep.datasets.bounds import check_at_least
from cxrprep.datasets.csvtext import check_utf8, open_csv_text
from cxrprep.datasets.label_csv import NIH_REQUIRED, chexpert_studies, nih_studies, read_list, resolve_image
from cxrprep.datasets.prompt_bulk import raw_state_codes, render_bulk, resolve_no_finding_codes, study_keys
from cxrprep.datasets.writing import command_writer
from cxrprep.image.process import ImageSettings, process_study_images
from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS, resolve_no_finding
from cxrprep.parallel import in_part, ordered_map
from cxrprep.paths import split_outside
from cxrprep.shards import ShardWriter
from cxrprep.text.templates import Templates, load_templates

UNCERTAIN_POLICIES = ("uncertain", "positive", "negative", "drop")


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
    qualifiers: str | None = None  # none | sample (severity, side); None: the template file's (default none)
    split_lists: str | None = None
    exclude_patients: str | None = None
    workers: int = 1
    part: tuple[int, int] | None = None
    image_settings: ImageSettings = field(default_factory=ImageSettings)
    overwrite: bool = False  # --overwrite: replace a finished dataset of the same name (never recorded)

    def __post_init__(self) -> None:
        check_at_least(self, variants=1, negatives=0)
        if self.uncertain not in UNCERTAIN_POLICIES:
            raise ValueError(f"--uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, got {self.uncertain!r}")
        if self.qualifiers not in (None, "none", "sample"):
            raise ValueError(f"--qualifiers must be none or sample, got {self.qualifiers!r}")
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
    """``states`` = [(class name, positive|negative|uncertain)] -> ``variants`` prompt reports. One qualifier
    profile per class is drawn first (Templates.draw_profile), so the variants never contradict each other
    on a severity or side."""
    pools = [t.sentences(c, s, t.draw_profile(c, s, rng)) for c, s in states]
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
    return resolve_no_finding(states)


def nih_states(labels: list[int], rng: random.Random, negatives: int) -> list[tuple[str, str]]:
    pos = [n for n, v in zip(NIH_LABELS, labels) if v == 1]
    absent = [n for n, v in zip(NIH_LABELS, labels) if v == 0 and n != "No Finding"]
    neg = rng.sample(absent, min(negatives, len(absent)))
    return resolve_no_finding([(n, "positive") for n in pos] + [(n, "negative") for n in neg])


# -- worker -----------------------------------------------------------------------------------------
def _work(args):
    """Worker: the images of a chunk of studies -> [(images, failed)] per study."""
    studies, kind, settings, root, allow_outside = args
    out = []
    for paths, views in studies:
        items = [
            (
                str(resolve_image(rel, root)),
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


_NO_PROMPT = "no labelled class to write a prompt for (all blank, or dropped by --uncertain)"
_CHUNK = 512  # studies per image task


def _read_studies(csv_path: Path, cfg: PromptsConfig):
    """-> (dataset kind, one row per study, duplicate rows to reject, label names) of this run's part."""
    import csv as _csv

    import polars as pl

    check_utf8(csv_path)  # a Latin-1 CSV: one line naming the file and line, not a bare codec error
    with open_csv_text(csv_path) as f:  # plain or gzip (train.csv.gz); polars reads both below
        header = next(_csv.reader(f), [])
    kind = cfg.dataset or detect_dataset(header, csv_path)
    if kind == "chexpert":
        frame, dups = chexpert_studies(csv_path)
        label_names = list(CHEXPERT_LABELS)
    else:
        frame, dups = nih_studies(csv_path, Path(cfg.split_lists) if cfg.split_lists else None)
        label_names = list(NIH_LABELS)
    if cfg.part is not None:
        frame = frame.filter(pl.col("subject_id").map_elements(lambda s: in_part(s, cfg.part), return_dtype=pl.Boolean))
        dups = [d for d in dups if d[1] in set(frame["study_id"].to_list())]
    return kind, frame, dups, label_names


def _reject_skipped(w: ShardWriter, frame, dups, cfg: PromptsConfig, extra: dict):
    """Reject duplicate rows and the studies of --exclude-patients; return the studies kept."""
    import polars as pl

    excluded = read_list(Path(cfg.exclude_patients)) if cfg.exclude_patients else set()
    is_excluded = frame["subject_id"].is_in(sorted(excluded)) if excluded else pl.Series([False] * frame.height)
    for src, sid, reason in dups:
        w.reject(src, sid, stage="read", kind="skipped", reason=reason)
    for sid, subject in frame.filter(is_excluded).select("study_id", "subject_id").iter_rows():
        reason = f"patient {subject} is in --exclude-patients {cfg.exclude_patients}"
        w.reject(sid, sid, stage="exclude", kind="skipped", reason=reason)
        extra["excluded_patients"] += 1
    return frame.filter(~is_excluded)


def _empty_lists(n: int, value_type):
    import numpy as np
    import pyarrow as pa

    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], value_type))


def _study_table(keep, kind: str, prompts):
    """The rows of the kept studies as a STUDY_SCHEMA table (no images yet)."""
    import numpy as np
    import pyarrow as pa

    from cxrprep.schema import STUDY_SCHEMA

    n, string = keep.height, pa.string()
    empty = _empty_lists(n, string)
    base = {
        "dataset": pa.array([kind] * n, string),
        "study_id": pa.array(keep["study_id"].to_list(), string),
        "subject_id": keep["subject_id"].to_arrow().cast(string),
        "split": keep["split"].to_arrow().cast(string),
        "source": keep["paths"].list.first().to_arrow().cast(string),
        "findings": pa.nulls(n, string),
        "impression": pa.nulls(n, string),
        "findings_sentences": empty,
        "impression_sentences": empty,
        "findings_bt": empty,
        "impression_bt": empty,
        "sections": _empty_lists(n, STUDY_SCHEMA.field("sections").type.value_type),
        "fallback": pa.array(np.zeros(n, bool)),
        "labels": keep["labels"].to_arrow().cast(STUDY_SCHEMA.field("labels").type),
        "prompts": prompts,
        "images": _empty_lists(n, STUDY_SCHEMA.field("images").type.value_type),
    }
    return pa.Table.from_arrays([base[f.name] for f in STUDY_SCHEMA], schema=STUDY_SCHEMA)


def _write_text_only(w: ShardWriter, table, keep, counts, chars, extra: dict) -> None:
    import numpy as np
    import pyarrow as pa

    sids, src_list = keep["study_id"].to_list(), keep["paths"].list.first().to_list()
    has_prompts = counts > 0
    for i in np.nonzero(~has_prompts)[0]:
        w.reject(src_list[i], sids[i], stage="prompts", kind="skipped", reason=_NO_PROMPT)
    extra["label_conflicts"] += int(keep["conflict"].to_numpy()[has_prompts].sum())
    extra["prompts_written"] += int(counts.sum())
    w.write_table(table.filter(pa.array(has_prompts)), (256 + chars[has_prompts]).tolist())


def _write_with_images(
    w: ShardWriter, table, keep, kind: str, counts, cfg: PromptsConfig, root: Path, extra: dict, progress
) -> None:
    """Decode the images of chunks of studies in worker processes; write the rows chunk by chunk in order."""
    import pyarrow as pa

    from cxrprep.schema import STUDY_SCHEMA

    n, sids, src_list = keep.height, keep["study_id"].to_list(), keep["paths"].list.first().to_list()
    conflict, has_prompts = keep["conflict"].to_numpy(), counts > 0
    items = list(zip(keep["paths"].to_list(), keep["views"].to_list()))
    tasks = (
        (items[i : i + _CHUNK], kind, cfg.image_settings, root, cfg.allow_outside_root) for i in range(0, n, _CHUNK)
    )
    results = ordered_map(_work, tasks, workers=cfg.workers)
    img_type = STUDY_SCHEMA.field("images").type
    for c, res in enumerate(progress(results, (n + _CHUNK - 1) // _CHUNK)):
        lo = c * _CHUNK
        mask, imgs = [], []
        for i, (images, failed) in enumerate(res, start=lo):
            if not images:
                reason = f"all {len(failed)} images failed; first: {failed[0][1]}"
                w.reject(src_list[i], sids[i], stage="image", kind="failed", reason=reason)
                mask.append(False)
                continue
            if not has_prompts[i]:
                w.reject(src_list[i], sids[i], stage="prompts", kind="skipped", reason=_NO_PROMPT)
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


def _check_coverage(t: Templates, label_names: list[str], kind: str) -> None:
    """Refuse a template file that leaves classes of the dataset without sentences, naming them all."""
    from cxrprep.text.template_coverage import describe, missing_sentences

    missing = missing_sentences(t, label_names)
    if missing:
        raise ValueError(
            f"{t.path}: {len(missing)} of {len(label_names)} {kind} classes lack sentences (with qualifiers "
            f"{t.qualifiers}): {describe(missing)}; add them under classes: (cxrprep templates check --dataset {kind})"
        )


def run_prompts(csv_path: Path, out: Path, cfg: PromptsConfig, progress=lambda it, total: it) -> dict:
    """Run ``cxrprep prompts``; returns the manifest. Raises ValueError (bad CSV/template) before work.

    Labels are read and grouped with polars, every study's prompts are rendered in bulk (numpy + Arrow),
    and text-only runs write the whole table at once; with images, worker processes decode the images of
    chunks of studies and the rows are written chunk by chunk, in study order."""
    t = load_templates(cfg.templates, cfg.qualifiers)  # errors surface before any work (TemplateError: ValueError)
    kind, frame, dups, label_names = _read_studies(csv_path, cfg)
    _check_coverage(t, label_names, kind)
    root = Path(cfg.image_root) if cfg.image_root else csv_path.parent
    conf = asdict(cfg)
    conf["csv"] = str(csv_path)
    conf["qualifiers"] = t.qualifiers  # the mode in effect (the option, else the file's key)
    extra = {"label_conflicts": 0, "excluded_patients": 0, "prompts_written": 0}
    with command_writer(out, kind, cfg, "prompts", conf, label_names, part=cfg.part) as w:
        w.counts.inputs_seen = frame.height + len(dups)
        keep = _reject_skipped(w, frame, dups, cfg, extra)
        keys = study_keys(cfg.seed, keep["study_id"].to_list())
        states = raw_state_codes(kind, _labels_matrix(keep, len(label_names)), cfg.uncertain, keys, cfg.negatives)
        nf_conflict = resolve_no_finding_codes(kind, states)  # a finding outranks No Finding
        keep = keep.with_columns(conflict=keep["conflict"].to_numpy() | nf_conflict)  # both count in label_conflicts
        prompts, counts, chars = render_bulk(t, label_names, states, keys, cfg.variants)
        table = _study_table(keep, kind, prompts)
        if not cfg.images:
            _write_text_only(w, table, keep, counts, chars, extra)
        else:
            _write_with_images(w, table, keep, kind, counts, cfg, root, extra, progress)
        w.counts.extra.update(extra)
    return w.manifest
