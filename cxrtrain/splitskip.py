"""Leave out, before any embedding, the datasets that have no rows in the split being scored.

``cxrtrain eval`` and ``bench-suite`` read each dataset's manifest ``splits`` counts (rows per split, written
by every cxrprep command) and skip a dataset without rows in ``--split`` with one line naming it, instead of
embedding every image first and refusing afterwards. Only when nothing is left to score is it a usage error.
"""

from __future__ import annotations

from collections.abc import Callable


def split_rows(ds, split: str) -> int | None:
    """Rows of ``ds`` in ``split`` by its manifest (None when the manifest has no ``splits`` counts)."""
    counts = ds.manifest.get("splits")
    if not counts:
        return None
    return sum(counts.values()) if split == "all" else int(counts.get(split, 0))


def skip_line(ds, split: str) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in (ds.manifest.get("splits") or {}).items()) or "none"
    return f"skipping dataset {ds.name!r}: no rows in split {split!r} (rows per split: {counts}); see --split"


def drop_missing_split(datasets: list, split: str, log: Callable[[str], object] = print) -> tuple[list, dict]:
    """(datasets with rows in ``split``, {name: note} for the others); logs one line per skipped dataset."""
    kept, skipped = [], {}
    for ds in datasets:
        if split_rows(ds, split) == 0:
            line = skip_line(ds, split)
            log(line)
            skipped[ds.name] = line.split(": ", 1)[1]
        else:
            kept.append(ds)
    return kept, skipped
