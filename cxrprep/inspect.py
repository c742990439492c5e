"""``cxrprep inspect shards/NAME``: counts, label statistics, sample rows and a contact-sheet PNG."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from .shards import ShardDataset


def label_stats(ds: ShardDataset) -> dict[str, Counter]:
    """Per label: counts of 1 / 0 / -1 / null over all rows."""
    stats = {n: Counter() for n in ds.label_names}
    for b in ds.iter_batches(["labels"]):
        for labels in b.column("labels").to_pylist():
            for n, v in zip(ds.label_names, labels or [None] * len(ds.label_names)):
                stats[n]["null" if v is None else str(v)] += 1
    return stats


def _caption(row: dict) -> str:
    for key in ("impression_sentences", "findings_sentences", "prompts"):
        if row.get(key):
            return row[key][0]
    return ""


def contact_sheet(ds: ShardDataset, png: Path, n: int = 12, tile: int = 192, cols: int = 4) -> int:
    """Draw up to ``n`` studies' first images with their view and first sentence; returns tiles drawn."""
    tiles = []
    for row in ds.iter_rows(["study_id", "images", "impression_sentences", "findings_sentences", "prompts"]):
        for im in row["images"][:1]:
            a = cv2.imdecode(np.frombuffer(im["image"], np.uint8), cv2.IMREAD_GRAYSCALE)
            h, w = a.shape
            k = tile / max(h, w)
            a = cv2.resize(a, (max(1, int(w * k)), max(1, int(h * k))), interpolation=cv2.INTER_AREA)
            canvas = np.full((tile + 40, tile), 255, np.uint8)
            canvas[:a.shape[0], :a.shape[1]] = a
            cv2.putText(canvas, f"{row['study_id'][-14:]} {im['view'] or '?'}", (3, tile + 14),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.38, 0, 1, cv2.LINE_AA)
            cv2.putText(canvas, _caption(row)[:34], (3, tile + 32), cv2.FONT_HERSHEY_SIMPLEX, 0.33, 0, 1, cv2.LINE_AA)
            tiles.append(canvas)
        if len(tiles) >= n:
            break
    if not tiles:
        return 0
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    sheet = np.vstack([np.hstack(tiles[i:i + cols]) for i in range(0, len(tiles), cols)])
    png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png), sheet)
    return min(n, len(tiles))


def inspect_lines(ds: ShardDataset, samples: int = 2) -> list[str]:
    m = ds.manifest
    c = m["counts"]
    lines = [f"{ds.dir}: dataset {ds.name}, schema v{m['schema_version']}, cxrkit {m['cxrkit_version']}, "
             f"command {m.get('command') or '?'}",
             f"  rows {c['rows_written']:,}, images {c['images_written']:,}, inputs {c['inputs_seen']:,}, "
             f"skipped {c['skipped']:,}, failed {c['failed']:,}, parts {len(m['parts'])}"]
    splits = Counter()
    for b in ds.iter_batches(["split"]):
        splits.update(b.column("split").to_pylist())
    lines.append("  splits: " + ", ".join(f"{k} {v:,}" for k, v in sorted(splits.items())))
    if ds.label_names:
        lines.append("  labels (1 / 0 / -1 / null):")
        for n, cnt in label_stats(ds).items():
            lines.append(f"    {n:28s} {cnt['1']:6d} {cnt['0']:6d} {cnt['-1']:6d} {cnt['null']:6d}")
    for i, row in enumerate(ds.iter_rows(["study_id", "subject_id", "split", "findings", "impression", "prompts",
                                          "images"])):
        if i >= samples:
            break
        text = row["impression"] or row["findings"] or (row["prompts"][0] if row["prompts"] else "")
        views = ",".join(str(im["view"]) for im in row["images"])
        lines.append(f"  sample {row['study_id']} ({row['split']}, views {views or '-'}): {text[:100]}")
    return lines
