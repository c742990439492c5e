"""``cxrprep export-hf``: a flat, one-image-per-row copy of a dataset folder for Hugging Face ``datasets``.

cxrkit's shards hold one row per study with a list of images; most image-text tools want one row per image.
This view writes ``OUT/data/SPLIT-00000-of-0000N.parquet`` (a new file every ``MAX_FILE_BYTES`` of images)
with an ``image`` column stored as ``datasets.Image`` (``struct<bytes, path>`` plus the features in the schema
metadata), the study's ids, split, text columns and named labels repeated on each of its images, and
``OUT/README.md`` (YAML ``configs`` splits,
counts, the source's licence and citation). A study without images gives no row; the card and the returned
counts say how many. Split names: ``hf`` renames MIMIC's ``validate`` (the name in MIMIC-CXR's official
split file, which cxrkit's shards keep) to ``validation``, the name Hugging Face datasets use; ``cxrkit``
keeps it. The folder is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cxrprep.schema import CARD, DATA_DIR, HF_IMAGE, HF_KEY, MANIFEST, ShardSchemaError
from cxrprep.shards.card import split_order
from cxrprep.shards.reader import ShardDataset
from cxrprep.shards.sources import card_section, hub_licence

SPLIT_NAMES = ("hf", "cxrkit")
HF_RENAME = {"validate": "validation"}
TEXT_COLUMNS = ("findings", "impression", "findings_bt", "impression_bt", "prompts")
_LIST_TEXT = ("findings_bt", "impression_bt", "prompts")


def split_name(split: str, style: str) -> str:
    if style not in SPLIT_NAMES:
        raise ValueError(f"--split-names must be hf or cxrkit, got {style!r}")
    return HF_RENAME.get(split, split) if style == "hf" else split


def flat_schema(label_names: list[str]) -> pa.Schema:
    """One row per image; ``image``/``image_clahe`` decode as PIL images in ``datasets``."""
    fields = [
        ("image", HF_IMAGE, {"_type": "Image"}),
        ("image_clahe", HF_IMAGE, {"_type": "Image"}),
        ("image_id", pa.string(), "string"),
        ("view", pa.string(), "string"),
        ("height", pa.int32(), "int32"),
        ("width", pa.int32(), "int32"),
        ("dataset", pa.string(), "string"),
        ("study_id", pa.string(), "string"),
        ("subject_id", pa.string(), "string"),
        ("split", pa.string(), "string"),
        *[(c, pa.list_(pa.string()) if c in _LIST_TEXT else pa.string(), "string") for c in TEXT_COLUMNS],
    ]
    feats = {}
    for name, t, f in fields:
        value = f if isinstance(f, dict) else {"dtype": f, "_type": "Value"}
        feats[name] = [value] if pa.types.is_list(t) else value
    arrow = [pa.field(n, t) for n, t, _ in fields]
    if label_names:
        arrow.append(pa.field("labels", pa.struct([pa.field(n, pa.int8()) for n in label_names])))
        feats["labels"] = {n: {"dtype": "int8", "_type": "Value"} for n in label_names}
    return pa.schema(arrow, metadata={HF_KEY: json.dumps({"info": {"features": feats}}).encode()})


def flat_rows(study: dict, split: str, label_names: list[str]) -> list[dict]:
    """A study row (STUDY_SCHEMA shape) -> one row per image."""
    common = {k: study.get(k) for k in ("dataset", "study_id", "subject_id", *TEXT_COLUMNS)}
    common["split"] = split
    if label_names:
        labels = study.get("labels")
        common["labels"] = dict(zip(label_names, labels)) if labels is not None else None
    out = []
    for im in study.get("images") or ():
        clahe = im.get("image_clahe")
        out.append(
            {
                **common,
                "image": {"bytes": im["image"], "path": None},
                "image_clahe": {"bytes": clahe, "path": None} if clahe is not None else None,
                **{k: im.get(k) for k in ("image_id", "view", "height", "width")},
            }
        )
    return out


#: a new data file starts once the current one holds this many bytes of images (Hugging Face's hub
#: suggests Parquet files of a few hundred MB); rows of one source row group never straddle two files
MAX_FILE_BYTES = 500 * 2**20


class _SplitFiles:
    """``NAME-00000-of-0000N.parquet`` files of one split, rolled over at ``max_bytes`` of image data."""

    def __init__(self, folder: Path, name: str, schema: pa.Schema, max_bytes: int) -> None:
        self.folder, self.name, self.schema, self.max_bytes = folder, name, schema, max_bytes
        self.parts: list[Path] = []
        self.writer: pq.ParquetWriter | None = None
        self.bytes = 0

    def write(self, rows: list[dict], nbytes: int) -> None:
        if self.writer is None or self.bytes >= self.max_bytes:
            self.close()
            self.parts.append(self.folder / f".{self.name}-{len(self.parts):05d}.partial")
            self.writer = pq.ParquetWriter(self.parts[-1], self.schema, compression="zstd")
            self.bytes = 0
        self.writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
        self.bytes += nbytes

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self) -> None:
        """Close and give the files their final names (an empty split still gets one file, with no rows)."""
        if not self.parts:
            self.write([], 0)
        self.close()
        n = len(self.parts)
        for k, p in enumerate(self.parts):
            os.replace(p, self.folder / f"{self.name}-{k:05d}-of-{n:05d}.parquet")


def _write_split(ds: ShardDataset, split: str, name: str, folder: Path, max_bytes: int) -> tuple[int, int, int]:
    """Stream ``split``'s studies into ``folder``, one row group per source row group -> (studies, images,
    studies without images)."""
    studies = images = imageless = 0
    files = _SplitFiles(folder, name, flat_schema(ds.label_names), max_bytes)
    try:
        for batch in ds.iter_batches(split=split):
            rows = []
            for study in batch.to_pylist():
                flat = flat_rows(study, name, ds.label_names)
                studies += 1
                images += len(flat)
                imageless += not flat
                rows += flat
            if rows:
                files.write(rows, sum(len(r["image"]["bytes"]) for r in rows))
        files.finish()
    finally:
        files.close()
    return studies, images, imageless


def export_flat(
    dataset_dir: str | Path, out: str | Path, split_names: str = "hf", command: str = "", max_file_bytes: int = 0
) -> dict:
    """Write the flat view of ``dataset_dir`` to ``out`` (which must not exist or be empty). Returns the counts:
    ``{split: {"studies", "images", "without_images"}}`` under the written split names."""
    out = Path(out)
    split_name("train", split_names)  # checks the style
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; choose another or remove it")
    ds = ShardDataset(dataset_dir)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: dict[str, dict] = {}
    try:
        (tmp / DATA_DIR).mkdir(parents=True)
        for s in split_order(k for k, n in ds.splits.items() if n):
            name = split_name(s, split_names)
            st, im, no = _write_split(ds, s, name, tmp / DATA_DIR, max_file_bytes or MAX_FILE_BYTES)
            if st != ds.splits[s]:  # nothing lost silently: every study the manifest lists was read
                raise ShardSchemaError(f"{ds.dir}: read {st} {s} studies, {MANIFEST} lists {ds.splits[s]}")
            counts[name] = {"studies": st, "images": im, "without_images": no}
        manifest_sha = hashlib.sha256((ds.dir / MANIFEST).read_bytes()).hexdigest()
        card = flat_card(ds.manifest, counts, split_names, manifest_sha, command)
        (tmp / CARD).write_text(card)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return counts


def flat_card(manifest: dict, counts: dict, split_names: str, manifest_sha: str, command: str = "") -> str:
    """README.md of the flat view: YAML configs (one split per file pattern), counts, names, source section."""
    name = manifest["dataset"]
    licence, link = hub_licence(name)
    q = json.dumps
    yaml = ["---", f"pretty_name: {q(name + ' (cxrkit, one image per row)')}", f"license: {licence}"]
    yaml += [f"license_link: {q(link)}"] if link else []
    yaml += ["tags:", "- medical", "- chest-x-ray", "- cxrkit", "configs:", "- config_name: default", "  data_files:"]
    for s in counts:
        yaml += [f"  - split: {s}", f"    path: {q(f'{DATA_DIR}/{s}-*.parquet')}"]
    yaml += ["---", ""]
    body = [
        f"# {name} (one image per row)",
        "",
        "A flat view of cxrkit's study shards written by `cxrprep export-hf`: one row per image (`image`, "
        "`image_clahe`, `image_id`, `view`, `height`, `width`) with its study's `study_id`, `subject_id`, `split`, "
        "text (`findings`, `impression`, `findings_bt`, `impression_bt`, `prompts`) and `labels` repeated.",
        "",
        "| split | studies | rows (images) | studies without images |",
        "|---|---:|---:|---:|",
        *[f"| {s} | {c['studies']:,} | {c['images']:,} | {c['without_images']:,} |" for s, c in counts.items()],
        "",
        "Studies without images give no row. "
        + (
            "Split names follow Hugging Face: MIMIC-CXR's official `validate` is written as `validation`."
            if split_names == "hf"
            else "Split names are cxrkit's (MIMIC-CXR's official `validate`)."
        ),
        "",
    ]
    labels = manifest.get("label_names") or []
    if labels:
        body += ["Labels (1 positive, 0 negative, -1 uncertain, null not mentioned): " + ", ".join(labels) + ".", ""]
    body += card_section(name)
    body += [f"Source dataset folder's `{MANIFEST}` sha256: `{manifest_sha}`.", ""]
    if command:
        body += ["Built by:", "", "```", command, "```", ""]
    body += ["```python", "datasets.load_dataset(FOLDER)   # splits; image decodes as a PIL image", "```", ""]
    return "\n".join(yaml + body)
