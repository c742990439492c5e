"""Dataset folders of study shards: the writer, the reader, the merge of ``--part`` pieces, the lock.

``from cxrprep.shards import ShardWriter, ShardDataset, ...`` is the public API; the code lives in

* ``writer.py``  ShardWriter (rows -> data files, rejects, dataset card, manifest), Counts;
* ``reader.py``  find_datasets / scan_datasets, ShardDataset, open_datasets, summary_lines;
* ``merge.py``   merge_parts (``cxrprep merge``);
* ``lock.py``    DatasetLock (one writer per folder; pieces side by side);
* ``card.py``    the README.md dataset card;
* ``files.py``   hashes, atomic writes, rejects JSON Lines, ShardWriteError.

The contract itself (columns, types, folder layout, version) is cxrprep/schema.py.
"""

from cxrprep.shards.card import card_text
from cxrprep.shards.files import (
    DatasetExists,
    MiB,
    ShardWriteError,
    atomic_write_json,
    invocation,
    read_rejects,
    sha256_file,
)
from cxrprep.shards.lock import DatasetBusy, DatasetLock
from cxrprep.shards.merge import merge_parts
from cxrprep.shards.reader import (
    IncompleteDataset,
    RowGroup,
    ShardDataset,
    find_datasets,
    finished_datasets,
    open_datasets,
    scan_datasets,
    summary_lines,
)
from cxrprep.shards.writer import Counts, ShardWriter, part_tag

__all__ = [
    "Counts",
    "DatasetBusy",
    "DatasetExists",
    "DatasetLock",
    "IncompleteDataset",
    "MiB",
    "RowGroup",
    "ShardDataset",
    "ShardWriteError",
    "ShardWriter",
    "atomic_write_json",
    "card_text",
    "find_datasets",
    "finished_datasets",
    "invocation",
    "merge_parts",
    "open_datasets",
    "part_tag",
    "read_rejects",
    "scan_datasets",
    "sha256_file",
    "summary_lines",
]
