"""Metrics against hand-computed cases; eval, fewshot and export end to end on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cxrtrain.cli import app
from cxrtrain.metrics import auroc, best_threshold, bootstrap_ci, f1_score, mcc, recall_at_k

ROOT = Path(__file__).parent.parent
runner = CliRunner()


def _pairwise_auc(y, s):
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def test_auroc_by_pairwise_counting():
    y = [1, 0, 1, 1, 0, 0, 1, 0]
    s = [0.9, 0.1, 0.4, 0.4, 0.4, 0.3, 0.8, 0.85]
    assert auroc(np.array(y), np.array(s)) == pytest.approx(_pairwise_auc(y, s))
    assert auroc(np.array([1, 1]), np.array([0.2, 0.3])) != auroc(np.array([1, 1]), np.array([0.2, 0.3]))  # NaN
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 5, 40).astype(float)  # many ties
        assert auroc(y, s) == pytest.approx(_pairwise_auc(y, s))


def test_f1_mcc_formula_and_threshold():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([1, 1, 0, 0, 0, 1, 0, 1])
    tp, fp, tn, fn = 3, 1, 3, 1
    assert f1_score(y, p) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert mcc(y, p) == pytest.approx((tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    assert mcc(y, np.ones(8)) == 0.0
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3, 0.05, 0.6])
    t = best_threshold(y, s)
    assert f1_score(y, s >= t) == 1.0 and 0.3 < t < 0.6
    lo, hi = bootstrap_ci(y, s, n=200)
    assert lo <= auroc(y, s) <= hi


def test_recall_at_k():
    sim = np.array([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.1, 0.2, 0.3]])
    r = recall_at_k(sim, [{0}, {1}, {0}], ks=(1, 2))
    assert r == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3)}


@pytest.fixture(scope="module")
def checkpoint(demo_shards, tmp_path_factory):
    from cxrtrain.config import build_config
    from cxrtrain.train import train

    out = tmp_path_factory.mktemp("run")
    cfg = build_config(dict(model={"preset": "tiny", "image_size": 32, "embed_dim": 32}, epochs=1, batch_size=4,
                            log_every=100, warmup_steps=1, max_steps=2))
    train([str(demo_shards)], out, cfg, log=lambda *_: None)
    return out


def test_eval_end_to_end_and_cache(checkpoint, demo_shards, tmp_path):
    out = tmp_path / "ev"
    args = ["eval", str(checkpoint), str(demo_shards), "--prompts", str(ROOT / "prompts/eval.yaml"), "--out", str(out),
            "--bootstrap", "50"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["checkpoint_sha256"] and m["prompts"]["binary"]["Pneumonia"]
    d = m["datasets"]["mimic-cxr"]
    assert "Pleural Effusion" in d["binary"]["classes"] and "retrieval" in d
    assert d["retrieval"]["unique_texts"] <= d["retrieval"]["images"]
    assert (out / "metrics.md").exists() and list(out.glob("roc_*.png"))
    assert not d["embeddings_cached"]
    r = runner.invoke(app, args)
    assert json.loads((out / "metrics.json").read_text())["datasets"]["mimic-cxr"]["embeddings_cached"]
    r = runner.invoke(app, ["eval", str(checkpoint), str(demo_shards), "--uncertain", "sometimes"])
    assert r.exit_code == 2 and "--uncertain" in r.output


def test_fewshot_sampling_and_run(checkpoint, demo_shards, tmp_path):
    from cxrtrain.fewshot import sample_kshot

    y = np.array([[1, 0], [0, 1], [1, np.nan], [0, 0], [-1, 1], [1, 1]], float)
    idx, notes = sample_kshot(y, np.arange(6), 1, 0)
    assert all(((y[idx, j] == 1).sum() >= 1 and (y[idx, j] == 0).sum() >= 1) for j in range(2))
    assert np.array_equal(idx, sample_kshot(y, np.arange(6), 1, 0)[0])
    out = tmp_path / "fs"
    r = runner.invoke(app, ["fewshot", str(checkpoint), str(demo_shards / "mimic-cxr"), "--shots", "1,2", "--seeds", "2",
                            "--epochs", "2", "--modes", "linear,partial", "--out", str(out),
                            "--prompts", str(ROOT / "prompts/eval.yaml")])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "fewshot.json").read_text())
    shots = res["datasets"]["mimic-cxr"]["shots"]
    assert set(shots) == {"1", "2"} and set(shots["1"]) == {"linear", "partial"}
    assert all(1 <= run["best_epoch"] <= 2 for run in shots["2"]["linear"]["runs"])
    assert (out / "fewshot.png").exists()


def test_export_loads_back(checkpoint, tmp_path):
    from cxrtrain.export import ExportedModel
    from cxrtrain.train import load_checkpoint

    r = runner.invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    model, _ = load_checkpoint(checkpoint)
    ex = ExportedModel(tmp_path / "exp")
    x = torch.randn(2, 3, 32, 32)
    texts = ["There is a pleural effusion.", "No pleural effusion."]
    with torch.no_grad():
        assert torch.allclose(ex.embed_image(x), model.encode_image(x), atol=1e-5)
        assert torch.allclose(ex.embed_text(texts), model.encode_text(**model.tokenize(texts)), atol=1e-5)
    assert "from_pretrained" in (tmp_path / "exp/README.md").read_text()


def test_multiclass_and_binary_on_known_embeddings():
    from cxrtrain.evaluate import EvalConfig, retrieval, zero_shot_binary, zero_shot_multiclass

    names = ["Atelectasis", "Cardiomegaly", "Pleural Effusion"]
    protos = {"atelectasis": [1, 0, 0], "cardiomegaly": [0, 1, 0], "effusion": [0, 0, 1], "normal": [0, 0, -1]}

    def text_emb(texts):
        out = np.array([protos[next(k for k in protos if k in t.lower())] for t in texts], float)
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    # images point at the class they show; the 4th is labelled Cardiomegaly but looks like an effusion
    e = np.array([[1, 0.1, 0], [0, 1, 0.1], [0.1, 0, 1], [0, 0.2, 1]], float)
    emb = dict(emb=e / np.linalg.norm(e, axis=1, keepdims=True),
               labels=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]], float),
               split=np.array(["test"] * 4), findings=np.array(["atelectasis", "cardiomegaly", "effusion", "cardiomegaly"]),
               impression=np.array([""] * 4))
    sets = {c: [c.lower()] for c in names}
    r = zero_shot_multiclass(emb, names, sets, text_emb)
    assert r["n"] == 4 and r["accuracy"] == pytest.approx(3 / 4)
    b = zero_shot_binary(emb, names, {"Pleural Effusion": {"positive": ["effusion"], "negative": ["normal"]}}, 10.0,
                         text_emb, EvalConfig(bootstrap=20))
    # P(effusion) grows with the cosine to the effusion prompt: image 3 (0.995, positive) > image 4 (0.981) > others
    assert b["classes"]["Pleural Effusion"]["auroc"] == pytest.approx(1.0)
    rr = retrieval(emb, text_emb, "findings")
    assert rr["unique_texts"] == 3 and rr["image_to_text"]["R@1"] == pytest.approx(3 / 4)
