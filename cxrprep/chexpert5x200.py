"""A deterministic, rebuildable CheXpert 5x200 evaluation set (``cxrprep chexpert-5x200``).

Definition (GLoRIA's ``preprocess_chexpert_5x200_data``, see ../shared/FORMATS.md 2.2): from train.csv,
blank -> 0; frontal images only; for each competition task (Atelectasis, Cardiomegaly, Consolidation, Edema,
Pleural Effusion) keep images where that task is 1 and every other observation except No Finding is 0 (any
-1 excludes); draw ``--per-class`` images per task. GLoRIA's draw is unseeded; ours sorts candidates by Path
and samples with ``--seed``, so anyone can rebuild the same 1,000 images. The dataset ``chexpert-5x200``
(split ``test``, raw CheXpert labels, one image per row) gets ``patients.txt`` beside its manifest: pass it
to ``cxrprep prompts --exclude-patients`` to keep these patients out of the training shards.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .images import ImageSettings, process_study_images
from .labels import CHEXPERT_LABELS, COMPETITION_TASKS
from .prompts import _resolve_image, chexpert_frame
from .schema import empty_row
from .shards import ShardWriter

DATASET = "chexpert-5x200"


@dataclass(frozen=True)
class FiveX200Config:
    per_class: int = 200
    seed: int = 0
    image_root: str | None = None
    images: bool = True
    image_settings: ImageSettings = field(default_factory=ImageSettings)

    def __post_init__(self) -> None:
        if self.per_class < 1:
            raise ValueError(f"--per-class must be >= 1, got {self.per_class}")


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
            raise ValueError(f"{csv_path}: only {len(idx)} frontal images have {task} as the only positive finding; "
                             f"lower --per-class (now {per_class})")
        for i in sorted(random.Random(f"{seed}:{task}").sample(idx, per_class), key=lambda i: df["Path"][i]):
            path = df["Path"][i]
            appa = df["_appa"][i]
            out.append(dict(path=path, patient=path.split("/")[-3], task=task, labels=raw.row(i),
                            view=(appa or "").strip().upper() or None))
    return out


def run_5x200(csv_path: Path, out: Path, cfg: FiveX200Config) -> dict:
    rows = select_5x200(csv_path, cfg.per_class, cfg.seed)
    root = Path(cfg.image_root) if cfg.image_root else csv_path.parent
    conf = asdict(cfg)
    conf["csv"] = str(csv_path)
    with ShardWriter(out, DATASET, config=conf, label_names=CHEXPERT_LABELS, command="chexpert-5x200",
                     image_settings=cfg.image_settings.manifest() if cfg.images else None,
                     extra_manifest={"classes": list(COMPETITION_TASKS)}) as w:
        w.counts.inputs_seen = len(rows)
        for r in sorted(rows, key=lambda r: r["path"]):
            sid = "/".join(r["path"].split("/")[-3:]).rsplit(".", 1)[0]
            images = []
            if cfg.images:
                images, failed = process_study_images([(str(_resolve_image(r["path"], root)), sid, r["view"])],
                                                      cfg.image_settings)
                if not images:
                    w.reject(r["path"], sid, stage="image", kind="failed", reason=failed[0][1])
                    continue
            row = empty_row(DATASET, sid, r["patient"], "test")
            row.update(source=r["path"], labels=list(r["labels"]), images=images)
            w.write(row)
    patients = sorted({r["patient"] for r in rows})
    tmp = out / DATASET / ".tmp-patients.txt"
    tmp.write_text("".join(p + "\n" for p in patients))
    tmp.replace(out / DATASET / "patients.txt")
    return w.manifest
