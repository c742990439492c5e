"""MIMIC-CXR inputs that hold no report at all are bad usage (exit 2), not an empty dataset (issue 20)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator


def not_empty(studies: Iterator, skipped: list, base: Path, files, zpath, part) -> Iterator:
    """``studies`` unchanged, after checking that there is at least one input: no report at all is bad
    usage (exit 2), not an empty dataset (the first one is looked for now; the rest stay lazy)."""
    import itertools

    first = next(studies, None)
    if first is not None:
        return itertools.chain([first], studies)
    if skipped or part:  # rejects are inputs; a --part piece may be empty (merge joins the pieces)
        return iter(())
    if zpath is not None:
        raise ValueError(f"{zpath}: the zip holds no report files (files/pNN/pNNNNNNNN/sNNNNNNNN.txt members)")
    beside = base / "mimic-cxr-reports.zip"
    hint = (
        f"; the reports are in {beside}: give that zip with --no-images, or unzip it into {base}"
        if beside.exists()
        else "; MIMIC-CXR-JPG has no reports: unzip mimic-cxr-reports.zip (from MIMIC-CXR) into it"
    )
    raise ValueError(f"{files}: no report files (pNN/pNNNNNNNN/sNNNNNNNN.txt) under it{hint}")
