"""Which rows a stream can use, counted up front, so that no loop draws forever from rows it must skip.

A training or validation row needs images and a text: prompt reports (label datasets written with
prompts), or a findings or impression section (report datasets); with ``sentence_sampling`` in training,
sentences of ``sentence_sections``. Benchmark sets written by the benchmark readers (RSNA, SIIM, VinDr)
have labels but no text: under a training root their rows would be drawn and skipped forever (issue 20).
``usable_rows`` counts both kinds per dataset from the text columns only (no image bytes are read);
``check_usable`` turns zero usable rows into a UsageError naming each dataset, the split and why."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cxrprep.shards import ShardDataset
from cxrtrain.runlog import UsageError


class NoUsableRows(UsageError):
    """A split has rows with images, but none that a stream can use (the CLI exits 2)."""


def has_text(row: dict, cfg, train: bool = True) -> bool:
    """Whether ``pick_texts`` can draw two texts from ``row`` (the same rules, without drawing)."""
    if any(p for p in (row.get("prompts") or [])):
        return True
    if cfg.sentence_sampling and train:
        return any(row.get(f"{sec}_sentences") for sec in cfg.sentence_sections.split(","))
    return any((row.get(sec) or "").strip() for sec in ("findings", "impression"))


def _nonempty(col: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0), False))


def _any_nonempty(col: pa.Array, n: int) -> np.ndarray:
    """Rows of a list<string> column with at least one non-empty string."""
    out = np.zeros(n, dtype=bool)
    flat = pc.list_flatten(col)
    if len(flat):
        keep = np.asarray(pc.fill_null(pc.greater(pc.utf8_length(flat), 0), False))
        out[np.asarray(pc.list_parent_indices(col))[keep]] = True
    return out


def _text_mask(b: pa.RecordBatch, cfg, train: bool) -> np.ndarray:
    n = b.num_rows
    ok = _any_nonempty(b.column("prompts"), n)
    if cfg.sentence_sampling and train:
        for sec in cfg.sentence_sections.split(","):
            ok |= np.asarray(pc.fill_null(pc.greater(pc.list_value_length(b.column(f"{sec}_sentences")), 0), False))
        return ok
    return ok | _nonempty(b.column("findings")) | _nonempty(b.column("impression"))


@dataclass
class Usable:
    """Per dataset of one split: rows with images, and of those, rows with a text."""

    split: str
    images: dict[str, int] = field(default_factory=dict)
    text: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return sum(self.text.values())

    @property
    def skipped(self) -> int:
        return sum(self.images.values()) - self.n

    def names_with_text(self) -> set[str]:
        return {k for k, v in self.text.items() if v}

    def skipped_line(self) -> str | None:
        """The start-up line for rows left out (None when every row with images has a text)."""
        parts = [f"{k}: {self.images[k] - self.text[k]:,}" for k in self.images if self.images[k] > self.text[k]]
        if not parts:
            return None
        return (
            f"skipped {self.skipped:,} {self.split} rows without text ({', '.join(parts)}); a contrastive model "
            f"cannot train on them"
        )


def usable_rows(datasets: list[ShardDataset], split: str, cfg, train: bool = True) -> Usable:
    cols = ["split", "images", "prompts", "findings", "impression", "findings_sentences", "impression_sentences"]
    u = Usable(split)
    for d in datasets:
        n_img = n_txt = 0
        for b in d.iter_batches(cols, split=split):
            img = np.asarray(pc.fill_null(pc.greater(pc.list_value_length(b.column("images")), 0), False))
            n_img += int(img.sum())
            n_txt += int((img & _text_mask(b, cfg, train)).sum())
        u.images[d.name] = u.images.get(d.name, 0) + n_img
        u.text[d.name] = u.text.get(d.name, 0) + n_txt
    return u


def check_usable(datasets: list[ShardDataset], split: str, cfg, roots, train: bool = True) -> Usable:
    """``usable_rows``; raises NoUsableRows naming each dataset when the split has no usable row at all."""
    u = usable_rows(datasets, split, cfg, train)
    if u.n:
        return u
    where = ", ".join(map(str, roots))
    if not any(u.images.values()):
        raise NoUsableRows(f"no {split} rows with images under {where}; check the split column")
    what = "sentences in " + cfg.sentence_sections if cfg.sentence_sampling and train else "text"
    each = "; ".join(f"{k}: {v:,} {split} rows, none has {what}" for k, v in u.images.items() if v)
    raise NoUsableRows(
        f"{each}: nothing to train a contrastive model on. Benchmark sets (RSNA, SIIM, VinDr) have labels but "
        f"no reports or prompts and belong outside the training root: write them with --out bench/ "
        f"(the default), or give cxrtrain run a root without them"
    )
