"""Shared test setup: offline, one torch thread, paths to the real fixtures in tests/data."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# cxrkit's cache folder (the spaCy tokenizer rules file, cxrprep.text.chunk_tokenizer): one per test session,
# never the user's; subprocesses inherit it
if "CXRKIT_CACHE_DIR" not in os.environ:
    os.environ["CXRKIT_CACHE_DIR"] = tempfile.mkdtemp(prefix="cxrkit-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CXRKIT_CACHE_DIR"], True)

DATA = Path(__file__).parent / "data"
EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


# -- a small shard root shared by trainer/eval tests -------------------------------------------------
def _synthetic_cxr(rng, h: int, w: int):
    """A chest-X-ray-like 8-bit image: dark lungs, bright mediastinum and ribs, noise."""
    import numpy as np

    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 60 + 40 * np.exp(-(((x - w / 2) / (0.12 * w)) ** 2))  # mediastinum
    img += 25 * (np.sin(y / h * 40) > 0.7)  # ribs
    img += rng.normal(0, 8, size=(h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_demo_shards(
    root: Path, n_reports: int = 24, n_labels: int = 16, size: int = 64, seed: int = 0, splits: list[str] | None = None
) -> Path:
    """Write two small datasets under ``root`` with the real writer: ``mimic-cxr`` (report rows, two
    views per study, 14 CheXpert labels) and ``chexpert`` (label rows with prompts, one view)."""
    import cv2
    import numpy as np

    from cxrprep.labels import CHEXPERT_LABELS
    from cxrprep.schema import empty_row
    from cxrprep.shards import ShardWriter

    rng = np.random.default_rng(seed)
    findings_bank = [
        "The heart size is normal.",
        "There is a small left pleural effusion.",
        "No pneumothorax is seen.",
        "Mild pulmonary edema is present.",
        "Lungs are clear.",
        "There is right lower lobe consolidation.",
    ]

    def enc(a):
        return cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()

    def image(i, k, view):
        a = _synthetic_cxr(rng, size, int(size * 1.2))
        c = cv2.createCLAHE(2.0, (8, 8)).apply(a)
        return dict(
            image_id=f"img{i}_{k}", view=view, image=enc(a), image_clahe=enc(c), height=a.shape[0], width=a.shape[1]
        )

    splits = splits or ["train"] * 6 + ["validate", "test"]
    with ShardWriter(root, "mimic-cxr", label_names=CHEXPERT_LABELS, row_group_rows=8) as w:
        for i in range(n_reports):
            r = empty_row("mimic-cxr", f"5{i:07d}", f"1{i // 2:07d}", splits[(i // 2) % len(splits)])
            fs = list(rng.choice(findings_bank, size=3, replace=False))
            r["findings_sentences"] = fs
            r["findings"] = " ".join(fs)
            r["impression_sentences"] = [fs[0]]
            r["impression"] = fs[0]
            r["labels"] = [int(v) if v != 2 else None for v in rng.integers(-1, 3, size=len(CHEXPERT_LABELS))]
            r["images"] = [image(i, 0, "PA"), image(i, 1, "LATERAL")]
            w.write(r)
    with ShardWriter(root, "chexpert", label_names=CHEXPERT_LABELS, row_group_rows=8) as w:
        for i in range(n_labels):
            r = empty_row("chexpert", f"patient{i:05d}/study1", f"patient{i:05d}", splits[i % len(splits)])
            labs = [None] * len(CHEXPERT_LABELS)
            labs[i % len(CHEXPERT_LABELS)] = 1
            r["labels"] = labs
            name = CHEXPERT_LABELS[i % len(CHEXPERT_LABELS)].lower()
            r["prompts"] = [f"There is {name}. No pneumothorax.", f"Findings suggest {name}.", f"{name} is seen."]
            r["images"] = [image(1000 + i, 0, "AP")]
            w.write(r)
    return root


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory) -> Path:
    """A shard root with two tiny datasets written by the real ShardWriter (see make_demo_shards)."""
    return make_demo_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def tiny_checkpoint(demo_shards, tmp_path_factory) -> Path:
    """A real run folder of the tiny model trained 2 steps on demo_shards (one per test module, so that
    what one module writes into it never reaches another)."""
    from helpers import train_tiny

    return train_tiny(demo_shards, tmp_path_factory.mktemp("run"))
