"""The worker side of ``cxrprep reports`` (cxrprep.datasets.mimic): a chunk of listed reports -> one Arrow
table of study rows plus one event per report (a row, or a reject with its stage, kind and reason).

Each worker process holds one :class:`WorkerState`, built once by :func:`init_worker` (the pool's
initializer): the side tables (sent once, not with every task), the open reports zip and the sentence
splitter. :func:`process_chunk` is the pool's task function; it hands the state to named steps: read one
report (:func:`read_report`), parse and split it (:func:`one_report`), find its images
(:func:`study_images`), add the row to the chunk's columns (:class:`ChunkColumns`) and build the table
(:meth:`ChunkColumns.table`).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from cxrprep.text.sections import Report, normalize_ws, parse_report
from cxrprep.text.sentences import _LazyNLP, split_sections_and_text

DATASET = "mimic-cxr"
IMAGE_EXT = (".jpg", ".jpeg", ".dcm", ".png")


def hash_split(subject_id: str) -> str:
    """Deterministic patient-level split for studies without an official one."""
    h = zlib.crc32(f"split:{subject_id}".encode()) % 100
    return "validate" if h == 98 else "test" if h == 99 else "train"


@dataclass
class WorkerState:
    """What one worker process keeps between tasks."""

    views: dict
    splits: dict
    labels: dict
    zip_path: str | None
    max_bytes: int
    zip: zipfile.ZipFile | None = None  # opened on the first zip member
    lazy: _LazyNLP = field(default_factory=_LazyNLP)  # sentence splitter; spaCy loads on first use

    def open_zip(self) -> zipfile.ZipFile:
        if self.zip is None:
            self.zip = zipfile.ZipFile(self.zip_path)
        return self.zip


# the state of this process, set by init_worker (the pool calls process_chunk with its task only)
_WORKER: WorkerState | None = None


def init_worker(views: dict, splits: dict, labels: dict, zip_path: str | None, max_bytes: int) -> None:
    """Pool initializer: this process's :class:`WorkerState`."""
    global _WORKER
    _WORKER = WorkerState(views, splits, labels, zip_path, max_bytes)


class Reject(Exception):
    """One report that gives no row: ``args3`` = (stage, kind, reason) for the rejects file."""

    def __init__(self, stage: str, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.args3 = (stage, kind, reason)


def read_bounded(f, expected: int, limit: int, data: bytes | None = None) -> bytes:
    """Read ``f`` to its end, but never more than ``limit`` + 1 bytes. ``read(limit + 1)`` allocates the
    whole limit (1 MiB) for every few-KB report (3x slower per file, measured); this reads what the size
    says, then on to the end in small steps (the file grew, a zip header lied, or a read came back short)."""
    if data is None:  # else: what the caller read already (its first read)
        data = f.read(min(expected, limit) + 1)
    # exactly the expected size: the +1 byte was not there, the end. Else read on to the end: a short read
    # (network file systems) must not cut a report
    while len(data) != expected and len(data) <= limit:
        more = f.read(min(limit + 1 - len(data), 1 << 13))
        if not more:
            break
        data += more
    return data


class _FdReader:
    """``read(n)`` of an open descriptor, for read_bounded."""

    __slots__ = ("read",)

    def __init__(self, fd: int) -> None:
        self.read = lambda n: os.read(fd, n)


def read_report(state: WorkerState, path: str | None, member: str | None) -> bytes:
    """The report's bytes, never more than max_report_bytes (+1 to tell it was larger): raises
    Reject for a file or member over the limit."""
    limit = state.max_bytes
    if member is not None:
        z = state.open_zip()
        info = z.getinfo(member)
        if info.file_size > limit:
            raise Reject(
                "read",
                "failed",
                f"zip member is {info.file_size:,} bytes uncompressed, over --max-report-bytes {limit:,}",
            )
        with z.open(info) as f:  # streamed: a member whose header lies about its size stops at the limit
            data = read_bounded(f, info.file_size, limit)
    else:  # a bare descriptor: no file object per report (same system calls as an unbuffered open)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, min(size, limit) + 1)
            if len(data) != size:  # a short read, or the file changed size: read_bounded reads on
                data = read_bounded(_FdReader(fd), size, limit, data)
        finally:
            os.close(fd)
    if len(data) > limit:
        raise Reject("read", "failed", f"report is over --max-report-bytes {limit:,} bytes")
    return data


def report_text(state: WorkerState, path: str | None, member: str | None, error: str | None) -> str:
    """The report's text; raises Reject for what cannot be read, decoded, or is empty."""
    if error is not None:
        raise Reject("read", "failed", error)
    try:
        data = read_report(state, path, member)
    except OSError as e:
        raise Reject("read", "failed", f"cannot read: {e.strerror or e}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise Reject("read", "failed", f"cannot read zip member: {e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Reject("read", "failed", f"not UTF-8 text (byte {e.start}: {data[e.start : e.start + 4]!r})") from None
    if not text or text.isspace():  # what `not text.strip()` says, without copying the text
        raise Reject("read", "skipped", "empty report file")
    return text


def one_report(state: WorkerState, path: str | None, member: str | None, error: str | None):
    """-> (Report, findings sentences, impression sentences, findings and impression as single-line text);
    raises Reject."""
    rep = parse_report(report_text(state, path, member, error))
    if rep.findings is None and rep.impression is None:
        raise Reject("sections", "skipped", "no findings, impression or any paragraph of text")
    (fs, ims), (findings, impression) = split_sections_and_text([rep.findings, rep.impression], state.lazy)
    return rep, fs, ims, findings, impression


def study_images(state: WorkerState, image_dir: str | None, settings) -> tuple[list, list]:
    """-> (processed images, [(image path, reason) of failed ones]); raises Reject when the study has
    none on disk or all fail."""
    from cxrprep.image.process import process_study_images

    names = []
    if image_dir and os.path.isdir(image_dir):
        with os.scandir(image_dir) as it:
            names = sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXT))
    found = [(os.path.join(image_dir, n), Path(n).stem, state.views.get(Path(n).stem)) for n in names]
    if not found:
        raise Reject(
            "image",
            "skipped",
            f"no images (*.jpg, *.dcm) in {image_dir or 'the zip'}; use --no-images for text-only shards",
        )
    images, failed = process_study_images(found, settings)
    if not images:
        raise Reject("image", "failed", f"all {len(found)} images failed; first: {failed[0][1]}")
    return images, failed


_COLUMNS = ("study_id", "subject_id", "split", "findings", "impression", "fallback", "labels", "images", "sizes")


class ChunkColumns:
    """The rows of one chunk, column by column (sentences and extra sections as flat lists + offsets), and
    the counters the manifest adds up."""

    def __init__(self) -> None:
        self.col: dict[str, list] = {k: [] for k in _COLUMNS}
        self.fs_flat: list[str] = []
        self.fs_off = [0]
        self.is_flat: list[str] = []
        self.is_off = [0]
        self.sec_names: list[str] = []
        self.sec_texts: list[str | None] = []
        self.sec_off = [0]
        self.extra = {"fallback": 0, "split_assigned": 0, "no_labels": 0}

    def add(self, state: WorkerState, study_id: str, subject_id: str, parsed: tuple, images: list) -> None:
        rep, fs, ims, findings, impression = parsed
        rep: Report
        split = state.splits.get(study_id)
        if split is None:
            split = hash_split(subject_id)
            self.extra["split_assigned"] += 1
        lab = state.labels.get(study_id)
        self.extra["no_labels"] += lab is None
        self.extra["fallback"] += rep.fallback
        col = self.col
        col["study_id"].append(study_id)
        col["subject_id"].append(subject_id)
        col["split"].append(split)
        col["findings"].append(findings)
        col["impression"].append(impression)
        col["fallback"].append(rep.fallback)
        col["labels"].append(lab)
        col["images"].append(images)
        self.fs_flat += fs
        self.fs_off.append(len(self.fs_flat))
        self.is_flat += ims
        self.is_off.append(len(self.is_flat))
        for n, t in rep.sections:
            if n not in ("findings", "impression"):
                self.sec_names.append(n)
                self.sec_texts.append(normalize_ws(t))
        self.sec_off.append(len(self.sec_names))
        size = 256 + 2 * len(findings or "") + 2 * len(impression or "")
        for img in images:
            size += len(img.get("image") or b"") + len(img.get("image_clahe") or b"")
        col["sizes"].append(size)

    def pack(self) -> "ChunkColumns":
        """Every string column as one UTF-8 buffer plus offsets (:func:`pack_strings`), before the chunk is
        pickled back to the main process: pickling a chunk's 15,000 small strings took the worker 1.2 ms
        and unpickling them the main process 1.1 ms (1,024 realistic reports), the buffers 0.03 ms each
        way, and the main process builds its string arrays on them without copying."""
        col = self.col
        for k in _STRING_COLUMNS:
            col[k] = pack_strings(col[k])
        self.fs_flat, self.is_flat = pack_strings(self.fs_flat), pack_strings(self.is_flat)
        self.sec_names, self.sec_texts = pack_strings(self.sec_names), pack_strings(self.sec_texts)
        return self

    def table(self):
        """The chunk's rows as a table of STUDY_SCHEMA (``source`` null: the main process fills it)."""
        import pyarrow as pa

        from cxrprep.schema import SECTION, STUDY_SCHEMA

        col, n, string = self.col, len(self.col["sizes"]), pa.string()
        empty = pa.ListArray.from_arrays(pa.array([0] * (n + 1), pa.int32()), pa.array([], string))

        def lists(off, flat):
            return pa.ListArray.from_arrays(pa.array(off, pa.int32()), strings(flat))

        names, texts = strings(self.sec_names), strings(self.sec_texts)
        arrays = {
            "dataset": pa.array([DATASET] * n, string),
            "study_id": strings(col["study_id"]),
            "subject_id": strings(col["subject_id"]),
            "split": strings(col["split"]),
            "source": pa.nulls(n, string),
            "findings": strings(col["findings"]),
            "impression": strings(col["impression"]),
            "findings_sentences": lists(self.fs_off, self.fs_flat),
            "impression_sentences": lists(self.is_off, self.is_flat),
            "findings_bt": empty,
            "impression_bt": empty,
            "sections": pa.ListArray.from_arrays(
                pa.array(self.sec_off, pa.int32()), pa.StructArray.from_arrays([names, texts], fields=list(SECTION))
            ),
            "fallback": pa.array(col["fallback"], pa.bool_()),
            "labels": pa.array(col["labels"], STUDY_SCHEMA.field("labels").type),
            "prompts": empty,
            "images": pa.array(col["images"], STUDY_SCHEMA.field("images").type),
        }
        return pa.Table.from_arrays(
            [arrays[f.name].cast(f.type) if arrays[f.name].type != f.type else arrays[f.name] for f in STUDY_SCHEMA],
            schema=STUDY_SCHEMA,
        )


#: the ChunkColumns.col entries that hold strings (or None)
_STRING_COLUMNS = ("study_id", "subject_id", "split", "findings", "impression")
#: a packed column larger than this stays a list (a string array's int32 offsets end at 2 GiB)
_PACK_LIMIT = (1 << 31) - 1


def pack_strings(values: list) -> list | tuple:
    """A list of str or None -> (count, UTF-8 bytes of all of them, int32 offsets as bytes, one byte per
    value saying it is not None, or None when none is None): the buffers of an Arrow string array.
    Returned unchanged when the bytes would not fit int32 offsets."""
    from array import array
    from itertools import accumulate

    valid = None
    if None in values:
        valid = bytes([v is not None for v in values])
        values = [v if v is not None else "" for v in values]
    joined = "".join(values)
    if joined.isascii():  # one byte per character: the lengths are the string lengths
        data, lengths = joined.encode("ascii"), map(len, values)
    else:
        encoded = [v.encode("utf-8") for v in values]
        data, lengths = b"".join(encoded), map(len, encoded)
    if len(data) > _PACK_LIMIT:
        return [v if ok else None for v, ok in zip(values, valid)] if valid is not None else values
    offsets = array("i", [0])
    offsets.extend(accumulate(lengths))
    return len(values), data, offsets.tobytes(), valid


def strings(packed):
    """The Arrow string array of :func:`pack_strings`' result (its buffers, not copied), or of a list."""
    import pyarrow as pa

    if isinstance(packed, list):
        return pa.array(packed, pa.string())
    n, data, offsets, valid = packed
    bitmap = None
    if valid is not None:
        import numpy as np

        bitmap = pa.py_buffer(np.packbits(np.frombuffer(valid, np.uint8), bitorder="little"))
    return pa.Array.from_buffers(pa.string(), n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)])


def process_chunk(args):
    """Pool task: a chunk of (study_id, subject_id, path, member, error, image_dir) -> (the rows as
    :class:`ChunkColumns` or None, row size estimates, events, counters). ``events`` has one entry per
    input, in order: ("row", [(image path, reason) ...]) or ("reject", stage, kind, reason). The main
    process builds the Arrow table (``ChunkColumns.table``): workers never import pyarrow, so they can
    start before the main process has loaded it."""
    return run_chunk(_WORKER, *args)


def run_chunk(state: WorkerState, items, with_images: bool, settings):
    """:func:`process_chunk` with the state given."""
    events: list = []
    cols = ChunkColumns()
    for study_id, subject_id, path, member, error, image_dir in items:
        try:
            parsed = one_report(state, path, member, error)
            images, failed = study_images(state, image_dir, settings) if with_images else ([], [])
        except Reject as r:
            events.append(("reject",) + r.args3)
            continue
        except Exception as e:  # one odd report never stops the run
            events.append(("reject", "read", "failed", f"{type(e).__name__}: {e}"))
            continue
        cols.add(state, study_id, subject_id, parsed, images)
        events.append(("row", failed))
    if not cols.col["study_id"]:
        return None, [], events, cols.extra
    return cols.pack(), cols.col["sizes"], events, cols.extra
