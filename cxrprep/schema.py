"""The shard contract between cxrprep (writer) and cxrtrain (reader).

This is the only module where either package learns column names, types, the image convention and the
folder layout. It imports pyarrow only. A change to a column or to the layout bumps SCHEMA_VERSION and
updates tests/test_contract.py in the same commit.

One row per study, self-contained so the trainer streams without joins:

=====================  ==========================  ==============================================
column                 type (rows in memory)       meaning
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

Rows in memory (what ``ShardWriter.write`` takes and ``ShardDataset`` yields) follow ``STUDY_SCHEMA``.
On disk (``file_schema(label_names)``) the same columns are self-describing, so pyarrow, polars, duckdb
and Hugging Face ``datasets`` need nothing but the file:

* ``labels`` is a struct with one int8 field per label name (``labels.Atelectasis``); a dataset without
  label names keeps ``list<int8>``;
* ``image`` and ``image_clahe`` are ``struct<bytes: binary, path: string>`` (``path`` null), the storage
  of ``datasets.Image``, and the schema metadata carries the Hugging Face features under
  ``b"huggingface"`` (so ``load_dataset`` decodes them to PIL images), the schema version under
  ``b"cxr.schema_version"`` and the label names under ``b"cxr.label_names"``;
* every field is nullable on disk (Hugging Face features are); the writer enforces the non-null columns.

``to_file_rows`` / ``from_file_batch`` convert between the two.

Layout of a dataset folder (``SHARD_ROOT/NAME/``)::

    README.md                               dataset card: YAML ``configs`` (one split per data file
                                            pattern); counts, command, manifest hash
    data/train-00000-of-00002.parquet       study rows, one file set per split (split in the name)
    data/validate-00000-of-00001.parquet
    data/test-00000-of-00001.parquet
    manifest.json                           written last: a folder with a manifest is complete
    rejects.jsonl                           one JSON object per reject (not Parquet, so no
                                            ``**/*.parquet`` glob ever picks it up as data)
    .lock                                   held (flock) by the writer for the whole run
    .tmp-*.partial                          data files in progress (moved into data/ when the run ends)

``--part i/N`` pieces write ``data/SPLIT-iofN-00000-of-00001.parquet``, ``manifest-iofN.json`` and
``rejects-iofN.jsonl`` (each piece holds ``.lock`` shared and ``.lock-iofN`` exclusively);
``cxrprep merge`` writes ``manifest.json``, ``rejects.jsonl`` and ``README.md`` for them.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 2
#: Key of the Parquet key-value metadata entry that carries the schema version.
VERSION_KEY = b"cxr.schema_version"
#: Key of the metadata entry with the label names (JSON list), in the order of the ``labels`` fields.
LABELS_KEY = b"cxr.label_names"
#: Key under which Hugging Face ``datasets`` looks for features in Parquet schema metadata.
HF_KEY = b"huggingface"

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

# -- folder layout -------------------------------------------------------------------------------------
DATA_DIR = "data"
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
CARD = "README.md"
LOCK = ".lock"
#: file names of the data files: ``data/train-00000-of-00002.parquet`` (a whole run) and
#: ``data/train-1of4-00000-of-00001.parquet`` (piece 1 of ``--part 1/4``)
DATA_FILE_RE = r"(?P<split>[A-Za-z0-9_]+)(?:-(?P<tag>\d+of\d+))?-(?P<k>\d{5})-of-(?P<n>\d{5})\.parquet"


def data_file_name(split: str, tag: str, k: int, n: int) -> str:
    """Relative path of data file ``k`` of ``n`` of ``split`` (``tag`` '' for a whole run, '1of4')."""
    return f"{DATA_DIR}/{split}-{tag + '-' if tag else ''}{k:05d}-of-{n:05d}.parquet"


# -- on-disk types -------------------------------------------------------------------------------------
#: ``datasets.Image`` storage: encoded bytes and an (unused, null) path
HF_IMAGE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])


def _nullable(t: pa.DataType) -> pa.DataType:
    """The same type with every nested field nullable (Hugging Face features are)."""
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _nullable(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(_nullable(t.value_type))
    return t


def _file_type(name: str, t: pa.DataType, label_names: list[str]) -> pa.DataType:
    if name == "labels" and label_names:
        return pa.struct([pa.field(n, pa.int8()) for n in label_names])
    if name == "images":
        return pa.list_(
            pa.struct(
                [pa.field(f.name, HF_IMAGE if f.name in ("image", "image_clahe") else _nullable(f.type)) for f in IMAGE]
            )
        )
    return _nullable(t)


def _hf_feature(t: pa.DataType, image: bool = False) -> object:
    """Hugging Face features dict (``Features.to_dict`` form) of an on-disk Arrow type."""
    if image:
        return {"_type": "Image"}
    if pa.types.is_struct(t):
        return {f.name: _hf_feature(f.type, f.name in ("image", "image_clahe") and f.type == HF_IMAGE) for f in t}
    if pa.types.is_list(t):
        return [_hf_feature(t.value_type)]  # list form: read by every datasets version
    dtype = {pa.string(): "string", pa.bool_(): "bool", pa.int8(): "int8", pa.int32(): "int32", pa.binary(): "binary"}[
        t
    ]
    return {"dtype": dtype, "_type": "Value"}


def hf_features(label_names: list[str]) -> dict:
    """The Hugging Face ``Features.to_dict()`` of a dataset's files (images as ``datasets.Image``)."""
    return {f.name: _hf_feature(_file_type(f.name, f.type, label_names)) for f in STUDY_SCHEMA}


def file_schema(label_names: list[str] | tuple[str, ...] = ()) -> pa.Schema:
    """The schema of a dataset's data files: see the module docstring."""
    return _file_schema(tuple(label_names))


@lru_cache(maxsize=64)
def _file_schema(label_names: tuple[str, ...]) -> pa.Schema:
    """``file_schema``, built once per label-name list (the writer asks for it with every table)."""
    names = list(label_names)
    if len(set(names)) != len(names) or any(not n for n in names):
        raise ValueError(f"label names must be distinct and non-empty, got {names}")
    meta = {
        VERSION_KEY: str(SCHEMA_VERSION).encode(),
        LABELS_KEY: json.dumps(names).encode(),
        HF_KEY: json.dumps({"info": {"features": hf_features(names)}}).encode(),
    }
    return pa.schema([pa.field(f.name, _file_type(f.name, f.type, names)) for f in STUDY_SCHEMA], metadata=meta)


# -- conversion between rows in memory and files ---------------------------------------------------------
_NOT_NULL = [f.name for f in STUDY_SCHEMA if not f.nullable]
_IMAGE_NOT_NULL = [f.name for f in IMAGE if not f.nullable]


def to_file_rows(rows: list[dict], label_names: list[str]) -> list[dict]:
    """Check rows of STUDY_SCHEMA (non-null columns, label count) and give them the on-disk shape."""
    n = len(label_names)
    out = []
    for r in rows:
        for c in _NOT_NULL:
            if r.get(c) is None:
                raise ValueError(f"row {r.get('study_id')!r}: column {c!r} must not be null")
        r = dict(r)
        labels = r.get("labels")
        if labels is not None and n:
            if len(labels) != n:
                raise ValueError(f"row {r['study_id']!r}: {len(labels)} labels, the dataset has {n} label names")
            r["labels"] = dict(zip(label_names, labels))
        images = []
        for im in r.get("images") or ():
            for c in _IMAGE_NOT_NULL:
                if im.get(c) is None:
                    raise ValueError(f"row {r['study_id']!r}: image field {c!r} must not be null")
            im = dict(im)
            im["image"] = {"bytes": im["image"], "path": None}
            if im.get("image_clahe") is not None:
                im["image_clahe"] = {"bytes": im["image_clahe"], "path": None}
            images.append(im)
        r["images"] = images if r.get("images") is not None else None
        out.append(r)
    return out


def to_file_table(table: pa.Table, label_names: list[str]) -> pa.Table:
    """Column-wise ``to_file_rows``: a STUDY_SCHEMA table -> the on-disk shape (``file_schema``), with the
    same checks (non-null columns, label count). Used by ``ShardWriter.write_table``."""
    import numpy as np
    import pyarrow.compute as pc

    table = table.combine_chunks()
    if table.schema != STUDY_SCHEMA:
        table = table.select(STUDY_SCHEMA.names).cast(STUDY_SCHEMA)
    for c in _NOT_NULL:
        if table[c].null_count:
            i = int(np.flatnonzero(table[c].is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"row {table['study_id'][i].as_py()!r}: column {c!r} must not be null")
    n, k = table.num_rows, len(label_names)
    cols = {}
    labels = table["labels"].chunk(0) if table["labels"].num_chunks else pa.nulls(n, pa.list_(pa.int8()))
    if k:
        lengths = pc.list_value_length(labels).to_numpy(zero_copy_only=False)
        valid = ~labels.is_null().to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(valid & (np.nan_to_num(lengths.astype(float), nan=k) != k))
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"row {table['study_id'][i].as_py()!r}: {int(lengths[i])} labels, the dataset has {k} label names"
            )
        flat = pc.list_flatten(labels)  # respects slicing; null lists contribute nothing
        lens = np.where(valid, np.nan_to_num(lengths.astype(float), nan=0), 0).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]) if n else np.zeros(0, np.int64)
        # null lists: point at a valid position (masked anyway) so take() stays in range
        starts = np.where(valid, starts, 0)
        children = [flat.take(pa.array(starts + j)) if len(flat) else pa.nulls(n, pa.int8()) for j in range(k)]
        cols["labels"] = pa.StructArray.from_arrays(
            children, fields=[pa.field(x, pa.int8()) for x in label_names], mask=labels.is_null()
        )
    images = table["images"].chunk(0) if table["images"].num_chunks else pa.nulls(n, pa.list_(IMAGE))
    img_lens = pc.fill_null(pc.list_value_length(images), 0).cast(pa.int32())
    img_offsets = (
        pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(img_lens)]) if n else pa.array([0], pa.int32())
    )
    flat = pc.list_flatten(images)
    for c in _IMAGE_NOT_NULL:
        if flat.field(c).null_count:
            parents = pc.list_parent_indices(images).to_numpy(zero_copy_only=False)
            j = int(np.flatnonzero(flat.field(c).is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"row {table['study_id'][int(parents[j])].as_py()!r}: image field {c!r} must not be null")
    children = []
    for f in IMAGE:
        child = flat.field(f.name)
        if f.name in ("image", "image_clahe"):
            child = pa.StructArray.from_arrays(
                [child, pa.nulls(len(child), pa.string())], fields=list(HF_IMAGE), mask=child.is_null()
            )
        children.append(child)
    file_images_type = _file_schema(tuple(label_names)).field("images").type
    values = pa.StructArray.from_arrays(children, fields=list(file_images_type.value_type))
    cols["images"] = pa.ListArray.from_arrays(img_offsets, values, type=file_images_type, mask=images.is_null())
    schema = file_schema(label_names)
    arrays = []
    for f in schema:
        a = cols.get(f.name)
        if a is None:
            a = table[f.name].chunk(0) if table[f.name].num_chunks else pa.nulls(n, f.type)
        arrays.append(a.cast(f.type) if not a.type.equals(f.type) else a)
    return pa.Table.from_arrays(arrays, schema=schema)


def _labels_to_list(arr: pa.Array) -> pa.Array:
    """struct<name: int8, ...> -> list<int8> in field order (null struct -> null list)."""
    k, n = arr.type.num_fields, len(arr)
    if k == 0:
        return pa.nulls(n, pa.list_(pa.int8()))
    import numpy as np

    fields = arr.flatten()
    values = pa.concat_arrays([f.cast(pa.int8()) for f in fields])
    order = np.arange(n * k).reshape(k, n).T.ravel()
    return pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), values.take(order), mask=arr.is_null()
    )


def _images_to_binary(arr: pa.Array) -> pa.Array:
    """list<struct<..., image: struct<bytes, path>, ...>> -> list<IMAGE> (image as bytes)."""
    import pyarrow.compute as pc

    lengths = pc.fill_null(pc.list_value_length(arr), 0).cast(pa.int32())
    offsets = (
        pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths)])
        if len(arr)
        else pa.array([0], pa.int32())
    )
    flat = pc.list_flatten(arr)
    cols = []
    for f in IMAGE:
        child = flat.field(f.name)
        if f.name in ("image", "image_clahe"):
            child = child.flatten()[0]  # the bytes field, null where the struct is null
        cols.append(child.cast(f.type))
    values = pa.StructArray.from_arrays(cols, fields=list(IMAGE))
    return pa.ListArray.from_arrays(offsets, values, type=pa.list_(IMAGE), mask=arr.is_null())


def from_file_batch(batch: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """A batch read from a data file (any subset of columns) -> the STUDY_SCHEMA shape of those columns."""
    if isinstance(batch, pa.Table):
        batch = (
            batch.combine_chunks().to_batches()[0]
            if batch.num_rows
            else pa.RecordBatch.from_pylist([], schema=batch.schema)
        )
    arrays, fields = [], []
    for name, arr in zip(batch.schema.names, batch.columns):
        want = STUDY_SCHEMA.field(name)
        if name == "labels" and pa.types.is_struct(arr.type):
            arr = _labels_to_list(arr)
        elif name == "images":
            arr = _images_to_binary(arr)
        arrays.append(arr.cast(want.type) if not arr.type.equals(want.type) else arr)
        fields.append(want)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields, metadata=STUDY_SCHEMA.metadata))


class ShardSchemaError(ValueError):
    """A shard file or manifest does not follow this contract; the message names the file."""


def empty_row(dataset: str, study_id: str, subject_id: str, split: str) -> dict:
    """A row with every column present and the optional ones empty/null."""
    row = {name: None for name in COLUMNS}
    row.update(dataset=dataset, study_id=study_id, subject_id=subject_id, split=split, fallback=False)
    for name in (
        "findings_sentences",
        "impression_sentences",
        "findings_bt",
        "impression_bt",
        "sections",
        "prompts",
        "images",
    ):
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


def check_schema(
    schema: pa.Schema,
    path: str | Path = "<table>",
    expected: pa.Schema | None = None,
    label_names: list[str] | None = None,
) -> None:
    """Raise ShardSchemaError if the data file schema ``schema`` differs from the contract (columns, types,
    version, label names). ``expected`` defaults to ``file_schema`` of the label names in the file's
    metadata; ``label_names`` (from the manifest) must then match them."""
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
    if expected is None:
        try:
            names = json.loads(meta.get(LABELS_KEY, b"[]").decode())
        except (ValueError, UnicodeDecodeError) as e:
            raise ShardSchemaError(f"{path}: {LABELS_KEY.decode()} metadata is not a JSON list ({e})") from e
        if label_names is not None and list(label_names) != names:
            raise ShardSchemaError(f"{path}: label names {names} differ from the manifest's {list(label_names)}")
        try:
            expected = file_schema(names)
        except ValueError as e:
            raise ShardSchemaError(f"{path}: {e}") from e
    diff = _describe_diff(schema, expected)
    if diff:
        raise ShardSchemaError(f"{path}: does not match shard schema v{SCHEMA_VERSION}: {diff}")


def check_shard(path: str | Path, label_names: list[str] | None = None) -> pa.Schema:
    """Check one data file against the contract; returns its schema. Raises ShardSchemaError naming the
    file and the difference (missing/extra/mistyped columns, wrong or missing schema version, label names
    other than ``label_names`` when given)."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise ShardSchemaError(f"{path}: not a readable Parquet file ({e})") from e
    check_schema(schema, path, label_names=label_names)
    return schema


def read_manifest(dataset_dir: str | Path) -> dict:
    """Load and validate ``manifest.json`` of a dataset folder."""
    dataset_dir = Path(dataset_dir)
    path = dataset_dir / MANIFEST
    if not path.exists():
        partial = sorted(dataset_dir.glob("manifest-*of*.json"))
        hint = (
            f"; found {len(partial)} --part manifests: run `cxrprep merge {dataset_dir}` first"
            if partial
            else "; the run that writes it was killed or has not finished: run it again"
        )
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
