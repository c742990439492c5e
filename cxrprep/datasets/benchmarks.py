"""Readers for the external benchmarks of CXR-CLIP (seed 003), straight from their released files.

Each reader turns the dataset's own label file(s) into "items" (one study = one image, except Open-I), and
``write_items`` writes them with the shared image pipeline (``cxrprep.image.process``) and ``ShardWriter``.
Inputs seen = rows written + rejects (a missing or unreadable image is a reject with its reason).

Splits (deterministic, no patient ids are available in these files, so the unit is the image/study id):
``--split-method gloria`` (RSNA, SIIM) reproduces GLoRIA's published split (cxrprep/datasets/splits.py);
the default ``hash``: ``hash_split(key)`` = sha256(key) mod 100 -> < 70 train, < 85 validate, else test:
the 70/15/15 ratio CXR-CLIP took from GLoRIA for RSNA and SIIM. VinDr-CXR keeps its official test set and
moves 20% of the official training images (same hash, < 20) to validate, as CXR-CLIP split validation from training.

* **RSNA Pneumonia** (``stage_2_train_labels.csv``: ``patientId,x,y,width,height,Target``, one row per box,
  several rows per patientId): label ``Pneumonia`` = Target of the patient's rows (conflicting Targets
  are an error naming the line). Images ``stage_2_train_images/{patientId}.dcm``.
* **SIIM-ACR Pneumothorax** (``train-rle.csv``, header ``ImageId, EncodedPixels`` with a leading space,
  several rows per ImageId): label ``Pneumothorax`` = 1 when any row has a mask, 0 when the rows say
  ``-1``. A mask must be an even-length list of integers (start/length pairs). Images are found under
  ``--image-root`` by name (``dicom-images-train/<UID>/<UID>/<ImageId>.dcm``).
* **VinDr-CXR** (PhysioNet ``image_labels_train.csv`` / ``image_labels_test.csv``: ``image_id, rad_id`` +
  28 0/1 columns): the rows of one image (3 radiologists in train; the test rows are a consensus) are
  combined by ``--readers``: ``majority`` (default: positive when more than half of the image's rows say
  1) or ``any`` (positive when any reader says 1). Images ``train|test/<image_id>.dicom`` (or ``.dcm``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxrprep.datasets.csvtext import read_utf8
from cxrprep.datasets.splits import check_split_method, cxr_clip_vindr_split, gloria_split
from cxrprep.image.process import ImageSettings, process_study_images
from cxrprep.parallel import in_part, ordered_map
from cxrprep.schema import empty_row
from cxrprep.shards import ShardWriter

_GS = ("hash", "gloria")  # the split methods of RSNA and SIIM


def hash_split(key: str, train: int = 70, validate: int = 15) -> str:
    """Deterministic split of an id: sha256 mod 100 -> train (< train) / validate / test."""
    b = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100
    return "train" if b < train else "validate" if b < train + validate else "test"


@dataclass(frozen=True)
class BenchConfig:
    image_root: str | None = None
    readers: str = "majority"  # VinDr: majority | any
    workers: int = 1
    part: tuple[int, int] | None = None
    images: ImageSettings = field(default_factory=ImageSettings)
    overwrite: bool = False  # --overwrite: replace a finished dataset of the same name (never recorded)

    def __post_init__(self) -> None:
        if self.readers not in ("majority", "any"):
            raise ValueError(f"--readers must be majority or any, got {self.readers!r}")


def _open_csv(path: Path) -> tuple[list[str], csv.reader]:
    reader = csv.reader(io.StringIO(read_utf8(path), newline=""))  # plain or gzip; not UTF-8: names the line
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ValueError(f"{path}: empty file (no header)") from None
    return header, reader


def _require(header: list[str], cols: tuple[str, ...], path: Path, what: str) -> dict[str, int]:
    missing = [c for c in cols if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} in header {header}; expected {what}")
    return {c: header.index(c) for c in header}


# -- RSNA ---------------------------------------------------------------------------------------------
def read_rsna(csv_path: Path, image_root: Path, split_method: str = "hash") -> tuple[list[dict], list[str]]:
    header, reader = _open_csv(csv_path)
    ix = _require(
        header, ("patientId", "Target"), csv_path, "stage_2_train_labels.csv (patientId,x,y,width,height,Target)"
    )
    target: dict[str, tuple[int, int]] = {}
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        pid, t = row[ix["patientId"]].strip(), row[ix["Target"]].strip()
        if t not in ("0", "1"):
            raise ValueError(f"{csv_path}:{line}: Target must be 0 or 1, got {t!r}")
        if pid in target and target[pid][0] != int(t):
            raise ValueError(
                f"{csv_path}:{line}: patientId {pid} has Target {t} here but {target[pid][0]} on line {target[pid][1]}"
            )
        target.setdefault(pid, (int(t), line))
    pids = sorted(target)
    split = dict(zip(pids, gloria_split(pids))) if check_split_method(split_method, _GS) == "gloria" else {}
    return _one_image_items(csv_path, target, split, lambda pid: image_root / f"{pid}.dcm"), ["Pneumonia"]


def _one_image_items(csv_path: Path, label: dict[str, tuple[int, int]], split: dict[str, str], path_of) -> list[dict]:
    """One study per image id (its own subject), labelled ``label[id] = (value, CSV line)``, in id order; the
    split is ``split[id]`` where given (GLoRIA's), else the id's hashed split."""
    return [
        dict(
            study_id=key,
            subject_id=key,
            split=split.get(key) or hash_split(key),
            labels=[v],
            paths=[path_of(key)],
            source=f"{csv_path.name}:{line}",
        )
        for key, (v, line) in sorted(label.items())
    ]


# -- SIIM ---------------------------------------------------------------------------------------------
def read_siim(csv_path: Path, image_root: Path, split_method: str = "hash") -> tuple[list[dict], list[str]]:
    header, reader = _open_csv(csv_path)  # the real header is "ImageId, EncodedPixels" (leading space)
    ix = _require(header, ("ImageId", "EncodedPixels"), csv_path, "train-rle.csv (ImageId, EncodedPixels)")
    label: dict[str, tuple[int, int]] = {}
    order: list[str] = []  # one entry per CSV row: GLoRIA splits rows, not images
    for line, row in enumerate(reader, start=2):
        if not row:
            continue
        iid, enc = row[ix["ImageId"]].strip(), row[ix["EncodedPixels"]].strip()
        order.append(iid)
        if enc == "-1":
            v = 0
        else:
            parts = enc.split()
            if not parts or len(parts) % 2 or not all(p.isdigit() for p in parts):
                raise ValueError(
                    f"{csv_path}:{line}: EncodedPixels for {iid} is neither -1 nor start/length pairs: {enc[:40]!r}"
                )
            v = 1
        prev = label.get(iid)
        if prev is not None and prev[0] != v:
            raise ValueError(f"{csv_path}:{line}: ImageId {iid} has a mask on one row and -1 on line {prev[1]}")
        label[iid] = (v, prev[1] if prev else line)
    split = _row_splits(order) if check_split_method(split_method, _GS) == "gloria" else {}
    found = {p.stem: p for p in sorted(image_root.rglob("*")) if p.suffix.lower() in (".dcm", ".dicom")}
    items = _one_image_items(csv_path, label, split, lambda iid: found.get(iid, image_root / f"{iid}.dcm"))
    return items, ["Pneumothorax"]


def _row_splits(order: list[str]) -> dict[str, str]:
    """GLoRIA's split of CSV rows -> one split per image: the split of the image's first row (GLoRIA keeps
    every row, so an image with several mask rows can sit in two of its splits; cxrkit keeps one)."""
    out: dict[str, str] = {}
    for iid, sp in zip(order, gloria_split(order)):
        out.setdefault(iid, sp)
    return out


# -- VinDr-CXR ----------------------------------------------------------------------------------------
def read_vindr(
    csv_paths: list[Path], image_root: Path, readers: str = "majority", split_method: str = "hash"
) -> tuple[list[dict], list[str]]:
    names: list[str] | None = None
    items = []
    for path in csv_paths:
        header, reader = _open_csv(path)
        _require(header, ("image_id", "rad_id"), path, "image_labels_{train,test}.csv (image_id, rad_id, 28 labels)")
        cols = [h for h in header if h not in ("image_id", "rad_id")]
        if names is None:
            names = cols
        elif cols != names:
            raise ValueError(f"{path}: label columns differ from {csv_paths[0]}")
        is_test = "test" in path.name.lower()
        votes: dict[str, list[list[int]]] = {}
        first: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: {len(row)} fields, header has {len(header)}")
            vals = []
            for c, v in zip(cols, row[2:]):
                v = v.strip()
                if v not in ("0", "1", "0.0", "1.0"):
                    raise ValueError(f"{path}:{line}: column {c!r} must be 0 or 1, got {v!r}")
                vals.append(int(float(v)))
            iid = row[0].strip()
            votes.setdefault(iid, []).append(vals)
            first.setdefault(iid, line)
        sub = "test" if is_test else "train"
        cc = check_split_method(split_method, ("hash", "cxr-clip")) == "cxr-clip" and not is_test
        valid = dict(zip(sorted(votes), cxr_clip_vindr_split(sorted(votes)))) if cc else {}
        for iid in sorted(votes):
            vs = votes[iid]
            lab = [
                int(sum(v[k] for v in vs) * 2 > len(vs)) if readers == "majority" else int(any(v[k] for v in vs))
                for k in range(len(names))
            ]
            split = (
                "test"
                if is_test
                else valid.get(iid) or ("validate" if hash_split(iid, 80, 20) == "validate" else "train")
            )
            cands = [
                image_root / sub / f"{iid}.dicom",
                image_root / sub / f"{iid}.dcm",
                image_root / f"{iid}.dicom",
                image_root / f"{iid}.dcm",
            ]
            p = next((c for c in cands if c.exists()), cands[0])
            items.append(
                dict(
                    study_id=iid,
                    subject_id=iid,
                    split=split,
                    labels=lab,
                    paths=[p],
                    source=f"{path.name}:{first[iid]}",
                    readers=len(vs),
                )
            )
    return items, names or []


# -- writing ------------------------------------------------------------------------------------------
def _work(args: tuple[dict, ImageSettings]) -> tuple[dict, list[dict], list[tuple[str, str]]]:
    item, settings = args
    ok, failed = process_study_images([(str(p), p.stem, None) for p in item["paths"]], settings)
    return item, ok, failed


def _no_images(args):
    return args[0], [], []


def write_items(
    items: list[dict],
    label_names: list[str],
    out: Path,
    dataset: str,
    cfg: BenchConfig,
    command: str,
    conf_extra: dict,
    extra_manifest: dict | None = None,
    progress=lambda it, total: it,
    pre_rejects: list[tuple] = (),
    with_images: bool = True,
) -> dict:
    """Write items ({study_id, subject_id, split, labels, paths, source, [findings, impression, ...]}); an
    item whose images all fail is a reject; a failed image of a kept study is an image-level reject.
    ``pre_rejects``: (source, study_id, stage, kind, reason) of inputs the reader already turned down."""
    mine = [it for it in items if in_part(it["subject_id"], cfg.part)]
    pre = [r for r in pre_rejects if in_part(r[1] or r[0], cfg.part)]
    conf = asdict(cfg) | conf_extra
    with ShardWriter(
        out,
        dataset,
        config=conf,
        label_names=label_names,
        image_settings=cfg.images.manifest() if with_images else None,
        command=command,
        part=cfg.part,
        extra_manifest=extra_manifest,
    ) as w:
        w.counts.inputs_seen = len(mine) + len(pre)
        for src, sid, stage, kind, reason in pre:
            w.reject(src, sid, stage=stage, kind=kind, reason=reason)
        work = _work if with_images else _no_images
        for item, ok, failed in progress(
            ordered_map(work, ((it, cfg.images) for it in mine), workers=cfg.workers), len(mine)
        ):
            if with_images and not ok:
                reason = failed[0][1] if failed else "no image listed"
                w.reject(
                    item["source"],
                    item["study_id"],
                    stage="image",
                    kind="failed" if failed else "skipped",
                    reason=reason,
                )
                continue
            for path, reason in failed:
                w.reject(path, item["study_id"], stage="image", kind="failed", reason=reason, level="image")
            row = empty_row(dataset, item["study_id"], item["subject_id"], item["split"])
            row["source"] = item["source"]
            row["labels"] = list(item["labels"]) if label_names else None
            row["images"] = ok
            for k in ("findings", "impression", "findings_sentences", "impression_sentences", "sections"):
                if k in item:
                    row[k] = item[k]
            w.write(row)
    return w.manifest


__all__ = ["BenchConfig", "hash_split", "read_rsna", "read_siim", "read_vindr", "write_items"]
