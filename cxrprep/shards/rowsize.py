"""Row size estimates for ``ShardWriter``'s row-group and file rotation: a row dict (``row_bytes``) or every
row of a STUDY_SCHEMA table at once (``table_row_bytes``), dominated by image bytes."""

from __future__ import annotations

import pyarrow as pa


def row_bytes(row: dict) -> int:
    """Cheap size estimate of a row (dominated by image bytes) used for row-group/part rotation."""
    n = 256
    for img in row.get("images") or ():
        n += len(img.get("image") or b"") + len(img.get("image_clahe") or b"")
    for key in ("findings", "impression"):
        n += 2 * len(row.get(key) or "")
    for p in row.get("prompts") or ():
        n += len(p)
    return n


def table_row_bytes(table: pa.Table) -> list[int]:
    """``row_bytes`` of every row of a STUDY_SCHEMA table, computed column-wise."""
    import numpy as np
    import pyarrow.compute as pc

    n = table.num_rows
    out = np.full(n, 256, dtype=np.int64)
    for key in ("findings", "impression"):
        out += 2 * pc.fill_null(pc.utf8_length(table[key]), 0).to_numpy(zero_copy_only=False)

    def per_row(lists, lengths) -> np.ndarray:
        lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
        parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
        return np.bincount(parents, weights=lengths, minlength=n).astype(np.int64) if len(parents) else 0

    prompts = table["prompts"]
    if pc.sum(pc.list_value_length(prompts)).as_py():
        flat = pc.list_flatten(prompts.combine_chunks())
        out += per_row(prompts, pc.fill_null(pc.utf8_length(flat), 0).to_numpy(zero_copy_only=False))
    images = table["images"]
    if pc.sum(pc.list_value_length(images)).as_py():
        flat = pc.list_flatten(images.combine_chunks())
        size = sum(
            pc.fill_null(pc.binary_length(pc.struct_field(flat, k)), 0).to_numpy(zero_copy_only=False)
            for k in ("image", "image_clahe")
        )
        out += per_row(images, size)
    return out.tolist()
