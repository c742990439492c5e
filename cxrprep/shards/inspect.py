"""``cxrprep inspect shards/NAME``: counts, label statistics, sample rows and a contact-sheet PNG."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from cxrprep.shards import ShardDataset


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


def shorten(text: str, n: int) -> str:
    """``text`` cut to at most ``n`` characters at a word boundary, with '...' when cut."""
    text = " ".join((text or "").split())
    if len(text) <= n:
        return text
    cut = text.rfind(" ", 0, n - 3)
    return (text[:cut] if cut > 0 else text[: n - 3]).rstrip(" ,;:") + " ..."


_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def wrap_text(text: str, width_px: int, scale: float, max_lines: int) -> list[str]:
    """Break ``text`` into lines that fit ``width_px`` at word boundaries (ids also break after / _ -);
    when it does not fit in ``max_lines``, the last line ends with '...' after a whole word."""
    import re

    words = [w for w in re.split(r"(?<=[ /_-])", text.replace("\n", " ")) if w.strip()]
    lines: list[str] = []
    cur = ""
    for w in words:
        cand = cur + w
        if _width(cand.rstrip(), scale) <= width_px or not cur:
            while _width(cand.rstrip(), scale) > width_px and len(cand) > 1 and not cur:  # one huge word
                lines.append(cand[: max(1, len(cand) * width_px // max(1, _width(cand, scale)))])
                cand = cand[len(lines[-1]) :]
            cur = cand
        else:
            lines.append(cur.rstrip())
            cur = w
    if cur.strip():
        lines.append(cur.rstrip())
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and _width(last + " ...", scale) > width_px:
            cut = max(last.rfind(" "), last.rfind("/"), last.rfind("_"))
            last = last[:cut] if cut > 0 else last[:-1]
        lines = lines[: max_lines - 1] + [last.rstrip(" ,;:") + " ..."]
    return lines


def contact_sheet(ds: ShardDataset, png: Path, n: int = 12, tile: int = 224, cols: int = 4) -> int:
    """Draw up to ``n`` studies' first images, each captioned with the dataset's own study id, the view and
    the first sentence, wrapped at word boundaries; returns tiles drawn."""
    tiles = []
    pad, id_scale, txt_scale, line_h = 4, 0.4, 0.36, 14
    id_lines, txt_lines = 2, 4
    caption_h = (id_lines + txt_lines) * line_h + 2 * pad
    for row in ds.iter_rows(["study_id", "images", "impression_sentences", "findings_sentences", "prompts"]):
        for im in row["images"][:1]:
            a = cv2.imdecode(np.frombuffer(im["image"], np.uint8), cv2.IMREAD_GRAYSCALE)
            if a is None:
                continue
            h, w = a.shape
            k = tile / max(h, w)
            a = cv2.resize(a, (max(1, int(w * k)), max(1, int(h * k))), interpolation=cv2.INTER_AREA)
            canvas = np.full((tile + caption_h, tile), 255, np.uint8)
            y0, x0 = (tile - a.shape[0]) // 2, (tile - a.shape[1]) // 2
            canvas[y0 : y0 + a.shape[0], x0 : x0 + a.shape[1]] = a
            y = tile + pad + 10
            head = f"{row['study_id']}  [{im['view'] or 'view ?'}]"
            for line in wrap_text(head, tile - 2 * pad, id_scale, id_lines):
                cv2.putText(canvas, line, (pad, y), _FONT, id_scale, 0, 1, cv2.LINE_AA)
                y += line_h
            y = tile + pad + 10 + id_lines * line_h
            for line in wrap_text(_caption(row) or "(no text)", tile - 2 * pad, txt_scale, txt_lines):
                cv2.putText(canvas, line, (pad, y), _FONT, txt_scale, 70, 1, cv2.LINE_AA)
                y += line_h
            canvas[:, -1] = 200  # a thin grid line between tiles
            canvas[-1, :] = 200
            tiles.append(canvas)
        if len(tiles) >= n:
            break
    if not tiles:
        return 0
    drawn = len(tiles)
    cols = min(cols, drawn)
    while len(tiles) % cols:
        tiles.append(np.full_like(tiles[0], 255))
    sheet = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".tmp-{png.name}")
    if not cv2.imwrite(str(tmp), sheet) or not tmp.exists():
        raise OSError(f"could not write {png}")
    tmp.replace(png)
    return drawn


def inspect_lines(ds: ShardDataset, samples: int = 2) -> list[str]:
    m = ds.manifest
    c = m["counts"]
    lines = [
        f"{ds.dir}: dataset {ds.name}, schema v{m['schema_version']}, cxrkit {m['cxrkit_version']}, "
        f"command {m.get('command') or '?'}",
        f"  rows {c['rows_written']:,}, images {c['images_written']:,}, inputs {c['inputs_seen']:,}, "
        f"skipped {c['skipped']:,}, failed {c['failed']:,}, parts {len(m['parts'])}",
    ]
    splits = Counter()
    for b in ds.iter_batches(["split"]):
        splits.update(b.column("split").to_pylist())
    lines.append("  splits: " + ", ".join(f"{k} {v:,}" for k, v in sorted(splits.items())))
    if ds.label_names:
        lines.append("  labels (1 / 0 / -1 / null):")
        for n, cnt in label_stats(ds).items():
            lines.append(f"    {n:28s} {cnt['1']:6d} {cnt['0']:6d} {cnt['-1']:6d} {cnt['null']:6d}")
    for i, row in enumerate(
        ds.iter_rows(["study_id", "subject_id", "split", "findings", "impression", "prompts", "images"])
    ):
        if i >= samples:
            break
        text = row["impression"] or row["findings"] or (row["prompts"][0] if row["prompts"] else "")
        views = ",".join(str(im["view"]) for im in row["images"])
        lines.append(f"  sample {row['study_id']} ({row['split']}, views {views or '-'}): {shorten(text, 120)}")
    return lines


def root_lines(root: Path, done: list[Path], incomplete: list[Path]) -> list[str]:
    """``cxrprep inspect ROOT`` on a shard root: one line per dataset folder under it (finished: name, rows per
    split, rows and images; unfinished: what is missing), then how to inspect one."""
    import json

    from cxrprep.schema import MANIFEST

    lines = [
        f"{root}: a shard root with {len(done)} finished dataset(s)"
        + (f", {len(incomplete)} unfinished" if incomplete else "")
    ]
    for d in done:
        m = json.loads((d / MANIFEST).read_text())
        c, splits = m.get("counts", {}), m.get("splits") or {}
        per = ", ".join(f"{k} {v:,}" for k, v in splits.items()) or "no split counts"
        lines.append(
            f"  {d.relative_to(root)}: dataset {m.get('dataset', d.name)}, rows {c.get('rows_written', 0):,} "
            f"({per}), images {c.get('images_written', 0):,}"
        )
    for d in incomplete:
        lines.append(f"  {d.relative_to(root)}: unfinished (no {MANIFEST}: a run was killed or is still writing)")
    first = (done or incomplete)[0]
    lines.append(f"inspect one: cxrprep inspect {first}")
    return lines
