"""cxrprep's Python API: the functions behind the commands, for notebooks and scripts.

Every name here is also importable from the package itself (``from cxrprep import parse_report``); the
package loads them on first use, so ``import cxrprep`` stays light. docs/api.md shows them together.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from cxrprep import _API
from cxrprep.image.process import read_gray, resize_short
from cxrprep.shards.reader import ShardDataset, find_datasets
from cxrprep.text.sections import Report, parse_report  # noqa: F401 (exported: __all__ below)
from cxrprep.text.sentences import split_sentences  # noqa: F401 (exported: __all__ below)
from cxrprep.text.templates import Templates, load_templates

_STATE = {1: "positive", 0: "negative", -1: "uncertain"}


def read_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """A DICOM, JPEG or PNG radiograph -> 8-bit MONOCHROME2 array (bone bright), as ``cxrprep images``
    decodes it (VOI LUT / windowing, MONOCHROME1 inverted, bit depth scaled). ``size``: shorter side resized to
    ``size`` (never upscaled), as ``--size``. Raises ImageError (a ValueError) naming the file when it cannot be
    read."""
    a, _view = read_gray(path, min_side=size)
    return resize_short(a, size) if size else a


def prompts_from_labels(
    labels: dict[str, int | float | None],
    templates: str | Path | Templates = "default",
    variants: int = 1,
    seed: int = 0,
) -> list[str]:
    """Labels of one study -> ``variants`` prompt reports rendered through a template file (CXR-CLIP style).

    ``labels`` maps class names of the template file (e.g. "Cardiomegaly") to 1 (positive), 0 (negative),
    -1 (uncertain) or None (not mentioned, left out). ``templates``: a packaged name (default, eval,
    cxr-clip), a YAML path, or a loaded ``Templates``. The same seed gives the same texts.
    Raises ValueError for an unknown class or label value."""
    from cxrprep.datasets.prompts import render_prompts

    t = templates if isinstance(templates, Templates) else load_templates(templates)
    states = []
    for name, v in labels.items():
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        if int(v) not in _STATE or int(v) != v:
            raise ValueError(f"label {name!r}: {v!r} is not 1, 0, -1 or None")
        if t.canonical(name) not in t.classes:
            raise ValueError(f"label {name!r}: {t.path} has no templates for it (classes: {', '.join(t.classes)})")
        states.append((name, _STATE[int(v)]))
    return render_prompts(t, states, random.Random(seed), variants)


def open_shards(path: str | Path) -> list[ShardDataset]:
    """A dataset folder (``shards/mimic-cxr``) or a shard root (``shards/``) -> its finished datasets, each a
    ``ShardDataset`` (``.iter_rows(columns, split)``, ``.read_table()``, ``.splits``, ``.manifest``)."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        return [ShardDataset(p)]
    return [ShardDataset(d) for d in find_datasets(p)]


__all__ = sorted(_API)  # the names cxrprep exports lazily (cxrprep/__init__.py)
