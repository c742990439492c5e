"""The Python API (cxrprep / cxrtrain top-level names) and its notebook-sized example."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run(demo_shards, tmp_path_factory):
    from cxrtrain.config import build_config
    from cxrtrain.train import train

    out = tmp_path_factory.mktemp("api-run")
    cfg = build_config(
        dict(model={"preset": "tiny", "image_size": 32, "embed_dim": 32}, epochs=1, batch_size=4, max_steps=1)
    )
    train([str(demo_shards)], out, cfg, log=lambda *_: None)
    return out


def test_import_is_light_and_names_resolve():
    code = "import sys, cxrprep, cxrtrain; print('torch' in sys.modules, 'spacy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # nothing heavy until a name is used
    import cxrprep
    import cxrtrain

    for mod in (cxrprep, cxrtrain):
        for name in mod.__all__:
            assert getattr(mod, name) is not None
    with pytest.raises(AttributeError):
        cxrprep.no_such_name  # noqa: B018


def test_prep_api():
    import cxrprep

    r = cxrprep.parse_report("FINDINGS: Heart size is normal. No effusion.\nIMPRESSION: Normal chest.")
    assert r.findings == "Heart size is normal. No effusion." and r.impression == "Normal chest."
    assert cxrprep.split_sentences(r.findings) == ["Heart size is normal.", "No effusion."]
    a = cxrprep.prompts_from_labels({"Cardiomegaly": 1, "Edema": 0}, variants=3, seed=7)
    assert len(a) == 3 and a == cxrprep.prompts_from_labels({"Cardiomegaly": 1, "Edema": 0}, variants=3, seed=7)
    with pytest.raises(ValueError, match="no templates for it"):
        cxrprep.prompts_from_labels({"Broken Leg": 1})
    with pytest.raises(ValueError, match="not 1, 0, -1 or None"):
        cxrprep.prompts_from_labels({"Edema": 2})


def test_read_image_matches_the_images_command(data_dir):
    import cxrprep

    dcm = sorted(data_dir.glob("dicom/*.dcm"))[0]
    a = cxrprep.read_image(dcm, size=64)
    assert a.dtype == np.uint8 and min(a.shape) == 64


def test_train_api_matches_eval(run, demo_shards):
    import cxrtrain
    from cxrtrain.evaluate import encode_texts

    model, preprocess = cxrtrain.load_model(run)
    ds = cxrtrain.ShardImages(demo_shards / "mimic-cxr", preprocess, split="test")
    x, labels, sid = ds[0]
    assert x.shape == (3, 32, 32) and labels.shape == (14,) and isinstance(sid, str)
    t = cxrtrain.encode_texts(model, ["Pleural effusion.", "No effusion."])
    assert torch.allclose(t, torch.from_numpy(encode_texts(model, ["Pleural effusion.", "No effusion."])), atol=1e-6)
    names, p = cxrtrain.zero_shot(model, [x, ds[1][0]], {"a": ["Pleural effusion."], "b": ["No effusion."]})
    img = cxrtrain.encode_images(model, [x, ds[1][0]])
    expect = (model.scale().float() * img @ t.T).softmax(-1)
    assert names == ["a", "b"] and torch.allclose(p, expect, atol=1e-6)


def test_api_example_runs(run, demo_shards):
    spec = importlib.util.spec_from_file_location("api_example", ROOT / "examples/api_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(str(run), str(demo_shards / "mimic-cxr"))
    assert out["sentences"][0].startswith("The heart is mildly enlarged")
    assert out["probs"].shape[1] == 2 and torch.allclose(out["probs"].sum(1), torch.ones(out["probs"].shape[0]))
