"""``cxrprep images SRC --out shards/``: a folder of DICOM/PNG/JPG files, or a CSV listing them, as
one-image studies (evaluation sets such as RSNA Pneumonia and SIIM-ACR).

CSV input columns (header required; only ``path`` is mandatory):

* ``path``: image file, absolute or relative to ``--image-root`` (default: the CSV's folder). It must
  resolve (symlinks followed) inside ``--image-root``: anything else is a reject ("outside
  --image-root") unless ``--allow-outside-root``. A folder SRC is its own root the same way: a symlink in
  it that points elsewhere is a reject; symlinked folders are not descended into (no loops).
* ``study_id`` (default: the file stem), ``subject_id`` (default: study_id), ``split`` (default: ``test``),
  ``view`` (default: DICOM ViewPosition, else null);
* every other column is a label column: values 1/0/-1/blank (also 1.0, True/False, yes/no), stored in the
  shard's ``labels`` in column order, with the column names as ``label_names``.

RSNA Pneumonia: ``path,study_id,Target`` built from stage_2_train_labels.csv (one row per patientId);
SIIM-ACR: ``path,study_id,Pneumothorax`` (EncodedPixels == "-1" -> 0, else 1).
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cxrprep.image.process import ImageSettings, process_study_images
from cxrprep.parallel import in_part, ordered_map
from cxrprep.paths import split_outside
from cxrprep.schema import SPLITS, empty_row
from cxrprep.shards import ShardWriter

IMAGE_SUFFIXES = (".dcm", ".dicom", ".png", ".jpg", ".jpeg")
_RESERVED = ("path", "study_id", "subject_id", "split", "view")
_LABEL_VALUES = {
    "1": 1,
    "1.0": 1,
    "true": 1,
    "yes": 1,
    "0": 0,
    "0.0": 0,
    "false": 0,
    "no": 0,
    "-1": -1,
    "-1.0": -1,
    "": None,
}


@dataclass(frozen=True)
class ImagesConfig:
    dataset: str = "images"
    image_root: str | None = None
    allow_outside_root: bool = False  # --allow-outside-root: read CSV paths that resolve outside the root
    workers: int = 1
    part: tuple[int, int] | None = None
    images: ImageSettings = field(default_factory=ImageSettings)
    overwrite: bool = False  # --overwrite: replace a finished dataset of the same name (never recorded)


def _label(value: str, path: Path, line: int, column: str) -> int | None:
    v = value.strip().lower()
    if v not in _LABEL_VALUES:
        raise ValueError(f"{path}:{line}: column {column!r} has value {value!r}; labels must be 1, 0, -1 or blank")
    return _LABEL_VALUES[v]


def _walk_images(src: Path) -> list[Path]:
    """Image files under ``src``, sorted; symlinked folders are not followed (a loop cannot hang the
    listing), unreadable sub-folders are skipped, symlinked files are listed (even broken ones, which
    become rejects) and checked against the root later."""
    out = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_symlink() or p.is_file()):  # a broken link: a reject
                out.append(p)
    return sorted(out)


def escaped(text: str) -> str:
    """A file name as text that can be stored: bytes that are not UTF-8 (``bad\\xff name.png``, which Python
    holds as lone surrogates) are written as ``\\xff``; any other name is unchanged."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def input_root(src: Path, image_root: Path | None) -> Path:
    """The folder every input must resolve inside: SRC itself for a folder, else --image-root or the CSV's
    folder."""
    if src.is_dir():
        return src
    return image_root or src.parent


def list_inputs(src: Path, image_root: Path | None) -> tuple[list[dict], list[str]]:
    """-> (items sorted by study_id, label_names). Raises ValueError on a bad CSV before any work."""
    if src.is_dir():
        files = _walk_images(src)
        items = [
            dict(
                path=p,
                study_id=escaped(str(p.relative_to(src).with_suffix(""))),
                subject_id=None,
                split="test",
                view=None,
                labels=[],
            )
            for p in files
        ]
        if not items:
            raise ValueError(f"{src}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder or below")
        for it in items:
            it["subject_id"] = it["study_id"]
        return items, []
    root = image_root or src.parent
    try:
        return _read_csv(src, root)
    except csv.Error as e:
        raise ValueError(f"{src}: not a readable CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{src}: not UTF-8 text (byte {e.start}: {e.reason}); is it really a CSV?") from None


def _read_csv(src: Path, root: Path) -> tuple[list[dict], list[str]]:
    with open(src, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "path" not in header:
            raise ValueError(f"{src}: no 'path' column in header {header}; see `cxrprep images --help`")
        label_names = [h for h in header if h not in _RESERVED]
        items, seen = [], set()
        for line, raw in enumerate(reader, start=2):
            row = {k.strip(): (v if isinstance(v, str) else "") for k, v in raw.items() if k is not None}
            if not row.get("path", "").strip():
                raise ValueError(f"{src}:{line}: empty 'path'")
            p = Path(row["path"])
            sid = row.get("study_id") or p.stem
            if sid in seen:
                raise ValueError(f"{src}:{line}: duplicate study_id {sid!r}")
            seen.add(sid)
            split = row.get("split") or "test"
            if split not in SPLITS:
                raise ValueError(f"{src}:{line}: split {split!r} must be one of {SPLITS}")
            items.append(
                dict(
                    path=p if p.is_absolute() else root / p,
                    study_id=sid,
                    subject_id=row.get("subject_id") or sid,
                    split=split,
                    view=(row.get("view") or None),
                    labels=[_label(row.get(n, ""), src, line, n) for n in label_names],
                )
            )
    items.sort(key=lambda it: it["study_id"])
    return items, label_names


def _work(args: tuple[dict, ImageSettings, str, bool]) -> tuple[dict, list[dict], list[tuple[str, str]], str]:
    """One input in a worker -> (item, images, [(path, reason)], reject stage)."""
    item, settings, root, allow_outside = args
    todo, outside = split_outside(
        [(str(item["path"]), escaped(Path(item["path"]).stem), item["view"])], root, allow_outside
    )
    outside = [(escaped(p), escaped(why)) for p, why in outside]
    if outside:
        return item, [], outside, "path"
    ok, failed = process_study_images(todo, settings)
    return item, ok, [(escaped(p), escaped(why)) for p, why in failed], "image"


def run_images(src: Path, out: Path, cfg: ImagesConfig, progress=lambda it, total: it) -> dict:
    given_root = Path(cfg.image_root) if cfg.image_root else None
    items, label_names = list_inputs(Path(src), given_root)
    root = str(input_root(Path(src), given_root))
    mine = [it for it in items if in_part(it["subject_id"], cfg.part)]
    conf = asdict(cfg)
    conf["src"] = str(src)
    with ShardWriter(
        out,
        cfg.dataset,
        config=conf,
        label_names=label_names,
        image_settings=cfg.images.manifest(),
        command="images",
        part=cfg.part,
    ) as w:
        w.counts.inputs_seen = len(mine)
        results = ordered_map(
            _work, ((it, cfg.images, root, cfg.allow_outside_root) for it in mine), workers=cfg.workers
        )
        for item, ok, failed, stage in progress(results, len(mine)):
            if not ok:
                w.reject(escaped(str(item["path"])), item["study_id"], stage=stage, kind="failed", reason=failed[0][1])
                continue
            row = empty_row(cfg.dataset, item["study_id"], item["subject_id"], item["split"])
            row["source"] = escaped(str(item["path"]))
            row["labels"] = item["labels"] if label_names else None
            row["images"] = ok
            w.write(row)
    return w.manifest
