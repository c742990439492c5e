"""`cxrtrain batch`: one training batch through the real loader; white images stay white (no padding)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cxrprep.cli.app import app as prep_app
from cxrtrain.cli.app import app as train_app

ROOT = Path(__file__).parent.parent
runner = CliRunner()


def _canary():
    spec = importlib.util.spec_from_file_location("canary", ROOT / "examples/canary/canary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def white_shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("white")
    # white, non-square images: any padding or out-of-image crop would show as dark pixels
    csv, _ = _canary().make_dataset(d / "data", n=24, white=True, size=96)
    for p in (d / "data/images").glob("*.png"):
        import cv2

        img = np.full((90, 140), 255, np.uint8)
        img[45, 70] = 254  # one pixel off white: a blank (single-value) image is a reject in cxrprep
        cv2.imwrite(str(p), img)
    r = runner.invoke(
        prep_app,
        ["prompts", str(csv), "--image-root", str(d / "data/images"), "--out", str(d / "shards"), "--size", "128"],
    )
    assert r.exit_code == 0, r.output
    return d / "shards"


@pytest.mark.parametrize("clahe", ["offline", "online"])
def test_batch_on_white_images_has_no_dark_pixel(white_shards, tmp_path, clahe):
    out = tmp_path / "look"
    r = runner.invoke(
        train_app,
        [
            "batch",
            str(white_shards),
            "--config",
            str(ROOT / "examples/train_tiny.yaml"),
            "--out",
            str(out),
            "--n",
            "6",
            "--set",
            f"clahe={clahe}",
            "--set",
            "clahe_prob=1.0",
        ],
    )
    assert r.exit_code == 0, r.output
    z = np.load(out / "batch.npz")
    assert z["images"].dtype == np.uint8 and z["images"].shape == (6, 2, 64, 64)
    assert z["images"].min() >= 200  # brightness x0.9 at worst; a padded border would be 0
    assert len(z["text1"]) == len(z["text2"]) == len(z["study_id"]) == 6
    assert all(a != b for a, b in zip(z["text1"], z["text2"]))  # 8 prompt variants: always two different texts
    assert (out / "batch.png").stat().st_size > 10_000


def test_batch_bad_config(white_shards, tmp_path):
    r = runner.invoke(train_app, ["batch", str(white_shards), "--out", str(tmp_path), "--set", "clahe=maybe"])
    assert r.exit_code == 2 and "clahe" in r.output
