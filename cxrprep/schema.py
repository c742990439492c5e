"""The shard contract between cxrprep (writer) and cxrtrain (reader).

This is the only module where either package learns column names, types and the image convention.
It imports pyarrow only. A change to a column bumps SCHEMA_VERSION and updates tests/test_contract.py
in the same commit.

One row per study, self-contained so the trainer streams without joins:

=====================  ==========================  ==============================================
column                 type                        meaning
=====================  ==========================  ==============================================
dataset                string, not null            dataset name (folder name under the shard root)
study_id               string, not null            unique within the dataset
subject_id             string, not null            patient; splits are patient-disjoint
split                  string, not null            ``train``, ``validate`` or ``test``
source                 string                      input file (or zip member) relative to the input root
findings, impression   string                      report sections, whitespace-normalised; null if absent
findings_sentences     list<string>                the same split into sentences
impression_sentences   list<string>
findings_bt            list<string>                back-translated variants of the findings section
impression_bt          list<string>                (empty until ``cxrprep augment``)
sections               list<struct<name, text>>    every other parsed section (indication, comparison...)
fallback               bool, not null              True when neither findings nor impression was found
                                                   and the text is the report's last paragraph
labels                 list<int8>                  in the manifest's ``label_names`` order: 1 positive,
                                                   0 negative, -1 uncertain, null not mentioned
prompts                list<string>                label datasets: K rendered prompt reports
images                 list<IMAGE>                 see IMAGE below
=====================  ==========================  ==============================================

Images are 8-bit grayscale MONOCHROME2 (bone is bright), shorter side resized to ``--size`` (never
upscaled), aspect kept, encoded as JPEG (quality 95 by default) or PNG. ``image_clahe`` is an offline
CLAHE copy of the same image (or null with ``--no-clahe``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
#: Key of the Parquet key-value metadata entry that carries the schema version.
VERSION_KEY = b"cxr.schema_version"

SPLITS = ("train", "validate", "test")
VIEWS = ("PA", "AP", "LATERAL", "LL", "RL", "UNKNOWN")  # views seen in MIMIC/CheXpert/NIH metadata

IMAGE = pa.struct(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("view", pa.string()),
        pa.field("image", pa.binary(), nullable=False),
        pa.field("image_clahe", pa.binary()),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
    ]
)

SECTION = pa.struct([pa.field("name", pa.string(), nullable=False), pa.field("text", pa.string())])

_FIELDS = [
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("study_id", pa.string(), nullable=False),
    pa.field("subject_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("source", pa.string()),
    pa.field("findings", pa.string()),
    pa.field("impression", pa.string()),
    pa.field("findings_sentences", pa.list_(pa.string())),
    pa.field("impression_sentences", pa.list_(pa.string())),
    pa.field("findings_bt", pa.list_(pa.string())),
    pa.field("impression_bt", pa.list_(pa.string())),
    pa.field("sections", pa.list_(SECTION)),
    pa.field("fallback", pa.bool_(), nullable=False),
    pa.field("labels", pa.list_(pa.int8())),
    pa.field("prompts", pa.list_(pa.string())),
    pa.field("images", pa.list_(IMAGE)),
]

STUDY_SCHEMA = pa.schema(_FIELDS, metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()})
COLUMNS = tuple(STUDY_SCHEMA.names)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("study_id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # read, sections, labels, image, augment ...
        pa.field("kind", pa.string(), nullable=False),  # skipped | failed
        # "study": the input did not become a row (counts in inputs = rows + rejects);
        # "image": one image of a study that still became a row (counted in images_failed).
        pa.field("level", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ],
    metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()},
)

REJECT_KINDS = ("skipped", "failed")
REJECT_LEVELS = ("study", "image")

MANIFEST = "manifest.json"
REJECTS = "rejects.parquet"


class ShardSchemaError(ValueError):
    """A shard file or manifest does not follow this contract; the message names the file."""


def empty_row(dataset: str, study_id: str, subject_id: str, split: str) -> dict:
    """A row with every column present and the optional ones empty/null."""
    row = {name: None for name in COLUMNS}
    row.update(dataset=dataset, study_id=study_id, subject_id=subject_id, split=split, fallback=False)
    for name in ("findings_sentences", "impression_sentences", "findings_bt", "impression_bt",
                 "sections", "prompts", "images"):
        row[name] = []
    return row


def _describe_diff(found: pa.Schema, expected: pa.Schema) -> str:
    diffs = []
    found_names = set(found.names)
    expected_names = set(expected.names)
    for name in expected.names:
        if name not in found_names:
            diffs.append(f"missing column {name!r} ({expected.field(name).type})")
    for name in found.names:
        if name not in expected_names:
            diffs.append(f"unexpected column {name!r} ({found.field(name).type})")
    for name in expected.names:
        if name in found_names:
            f, e = found.field(name), expected.field(name)
            if not f.type.equals(e.type):
                diffs.append(f"column {name!r} has type {f.type}, expected {e.type}")
            elif f.nullable != e.nullable:
                diffs.append(f"column {name!r} nullable={f.nullable}, expected nullable={e.nullable}")
    if not diffs and found.names != expected.names:
        diffs.append(f"column order {found.names} differs from {expected.names}")
    return "; ".join(diffs)


def check_schema(schema: pa.Schema, path: str | Path = "<table>", expected: pa.Schema = STUDY_SCHEMA) -> None:
    """Raise ShardSchemaError if ``schema`` differs from ``expected`` (columns, types, version)."""
    meta = schema.metadata or {}
    version = meta.get(VERSION_KEY)
    if version is None:
        raise ShardSchemaError(
            f"{path}: no {VERSION_KEY.decode()} metadata; not a cxrkit shard (expected schema version "
            f"{SCHEMA_VERSION}); re-create it with cxrprep"
        )
    if version.decode() != str(SCHEMA_VERSION):
        raise ShardSchemaError(
            f"{path}: schema version {version.decode()}, this cxrkit reads version {SCHEMA_VERSION}; "
            f"re-create the shards with this cxrkit's cxrprep"
        )
    diff = _describe_diff(schema, expected)
    if diff:
        raise ShardSchemaError(f"{path}: does not match shard schema v{SCHEMA_VERSION}: {diff}")


def check_shard(path: str | Path) -> pa.Schema:
    """Check one part file against the contract; returns its schema. Raises ShardSchemaError naming the
    file and the difference (missing/extra/mistyped columns, wrong or missing schema version)."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise ShardSchemaError(f"{path}: not a readable Parquet file ({e})") from e
    check_schema(schema, path)
    return schema


def read_manifest(dataset_dir: str | Path) -> dict:
    """Load and validate ``manifest.json`` of a dataset folder."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST
    if not path.exists():
        partial = sorted(dataset_dir.glob("manifest-*of*.json"))
        hint = (f"; found {len(partial)} --part manifests: run `cxrprep merge {dataset_dir}` first"
                if partial else "")
        raise ShardSchemaError(f"{path}: missing; {dataset_dir} is not a finished cxrkit dataset folder{hint}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ShardSchemaError(f"{path}: not valid JSON ({e})") from e
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ShardSchemaError(
            f"{path}: schema_version {version!r}, this cxrkit reads {SCHEMA_VERSION}; re-create the shards"
        )
    for key in ("dataset", "parts", "label_names", "counts"):
        if key not in manifest:
            raise ShardSchemaError(f"{path}: missing key {key!r}")
    return manifest
