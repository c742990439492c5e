"""Metrics against hand-computed cases; eval, fewshot and export end to end on the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import cli_args
from typer.testing import CliRunner

from cxrtrain.cli.app import app

ROOT = Path(__file__).parent.parent
runner = CliRunner()


def test_eval_end_to_end_and_cache(tiny_checkpoint, demo_shards, tmp_path):
    out = tmp_path / "ev"
    args = cli_args("eval", tiny_checkpoint, demo_shards, prompts=ROOT / "prompts/eval.yaml", out=out, bootstrap=50)
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    m = strict_load(out / "metrics.json")
    assert m["checkpoint_sha256"] and m["prompts"]["binary"]["Pneumonia"]
    d = m["datasets"]["mimic-cxr"]
    assert "Pleural Effusion" in d["binary"]["classes"] and "retrieval" in d
    assert d["retrieval"]["unique_texts"] <= d["retrieval"]["images"]
    assert (out / "metrics.md").exists() and list(out.glob("roc_*.png"))
    assert not d["embeddings_cached"]
    r = runner.invoke(app, args)
    assert json.loads((out / "metrics.json").read_text())["datasets"]["mimic-cxr"]["embeddings_cached"]
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), str(demo_shards), "--uncertain", "sometimes"])
    assert r.exit_code == 2 and "--uncertain" in r.output


def test_fewshot_sampling_and_run(tiny_checkpoint, demo_shards, tmp_path):
    from cxrtrain.fewshot import sample_kshot

    y = np.array([[1, 0], [0, 1], [1, np.nan], [0, 0], [-1, 1], [1, 1]], float)
    idx, notes = sample_kshot(y, np.arange(6), 1, 0)
    assert all(((y[idx, j] == 1).sum() >= 1 and (y[idx, j] == 0).sum() >= 1) for j in range(2))
    assert np.array_equal(idx, sample_kshot(y, np.arange(6), 1, 0)[0])
    out = tmp_path / "fs"
    r = runner.invoke(
        app,
        cli_args(
            "fewshot",
            tiny_checkpoint,
            demo_shards / "mimic-cxr",
            shots="1,2",
            seeds=2,
            epochs=2,
            modes="linear,partial",
            out=out,
            prompts=ROOT / "prompts/eval.yaml",
        ),
    )
    assert r.exit_code == 0, r.output
    res = strict_load(out / "fewshot.json")
    d = res["datasets"]["mimic-cxr"]
    shots = d["shots"]
    assert set(shots) == {"1", "2"} and set(shots["1"]) == {"linear", "partial"}
    assert res["selection_split"] == "validate" and res["report_split"] == "test"
    for run in shots["2"]["linear"]["runs"]:  # early stopping; a binding cap is doubled, so it never binds here
        assert 1 <= run["best_epoch"] <= run["caps_tried"][-1] and run["caps_tried"][0] == 2
        assert not run["cap_binding"] and run["selected_by"].startswith("validate")
    assert set(d["linear_probe"]) == {"1%", "10%", "100%"}
    p = d["linear_probe"]["100%"]
    assert p["runs"][0]["n_train"] == d["studies"]["train"] and p["first_cap"] == 30
    assert d["linear_probe"]["1%"]["runs"][0]["n_train"] == 1 and d["linear_probe"]["10%"]["first_cap"] == 300
    assert "linear probe 10%" in (out / "fewshot.md").read_text()
    assert (out / "fewshot.png").exists()


def test_export_loads_back(tiny_checkpoint, tmp_path):
    from cxrtrain.export import ExportedModel
    from cxrtrain.train import load_checkpoint

    r = runner.invoke(app, ["export", str(tiny_checkpoint), "--out", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    model, _ = load_checkpoint(tiny_checkpoint)
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
    emb = dict(
        emb=e / np.linalg.norm(e, axis=1, keepdims=True),
        labels=np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]], float),
        split=np.array(["test"] * 4),
        findings=np.array(["atelectasis", "cardiomegaly", "effusion", "cardiomegaly"]),
        impression=np.array([""] * 4),
    )
    sets = {c: [c.lower()] for c in names}
    r = zero_shot_multiclass(emb, names, sets, text_emb)
    assert r["n"] == 4 and r["accuracy"] == pytest.approx(3 / 4)
    b = zero_shot_binary(
        emb,
        names,
        {"Pleural Effusion": {"positive": ["effusion"], "negative": ["normal"]}},
        10.0,
        text_emb,
        EvalConfig(bootstrap=20),
    )
    # P(effusion) grows with the cosine to the effusion prompt: image 3 (0.995, positive) > image 4 (0.981) > others
    assert b["classes"]["Pleural Effusion"]["auroc"] == pytest.approx(1.0)
    rr = retrieval(emb, text_emb, "findings")
    assert rr["unique_texts"] == 3 and rr["image_to_text"]["R@1"] == pytest.approx(3 / 4)


# -- issue 12: honest splits, strict metrics, CXR-CLIP protocol ------------------------------------------
def strict_load(path: Path) -> dict:
    """json.loads that rejects NaN/Infinity tokens (as JavaScript, jq and strict parsers do)."""

    def bad(tok):
        raise ValueError(f"{path}: non-standard JSON token {tok}")

    return json.loads(Path(path).read_text(), parse_constant=bad)


def test_mean_similarity_is_cxrclip_averaging_loop():
    """CXR-CLIP's 5x200 rule written as a plain loop (mean over prompts of cosine similarity, argmax, per-class
    accuracy and their mean) must give exactly what --ensemble mean-similarity gives."""
    from cxrtrain.evaluate import zero_shot_multiclass

    rng = np.random.default_rng(7)
    classes = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]
    prompts = {c: [f"{c} prompt {i}" for i in range(1 + 3 * k)] for k, c in enumerate(classes)}  # 1..13 prompts
    vec = {p: rng.normal(size=16) for ps in prompts.values() for p in ps}

    def text_emb(texts):  # unnormalised on purpose: cosine must normalise
        return np.stack([vec[t] for t in texts])

    n = 60
    img = rng.normal(size=(n, 16)) * rng.uniform(0.5, 3, size=(n, 1))
    truth = np.arange(n) % 5
    labels = np.zeros((n, 5))
    labels[np.arange(n), truth] = 1
    emb = dict(emb=img, labels=labels, split=np.array(["test"] * n))

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    correct = {c: 0 for c in classes}
    for i in range(n):
        sims = {c: sum(cos(img[i], vec[p]) for p in prompts[c]) / len(prompts[c]) for c in classes}
        if max(sims, key=sims.get) == classes[truth[i]]:
            correct[classes[truth[i]]] += 1
    per = {c: correct[c] / (n // 5) for c in classes}
    r = zero_shot_multiclass(emb, classes, prompts, text_emb, ensemble="mean-similarity", split="test")
    assert r["accuracy"] == sum(correct.values()) / n
    assert {c: v["accuracy"] for c, v in r["per_class"].items()} == per
    assert r["macro_accuracy"] == float(np.mean(list(per.values())))
    e = zero_shot_multiclass(emb, classes, prompts, text_emb, ensemble="mean-embedding", split="test")
    protos = {c: np.mean([vec[p] / np.linalg.norm(vec[p]) for p in prompts[c]], 0) for c in classes}
    loop = sum(max(classes, key=lambda c: cos(img[i], protos[c])) == classes[truth[i]] for i in range(n)) / n
    assert e["accuracy"] == loop and e["ensemble"] == "mean-embedding"


@pytest.fixture(scope="module")
def no_test_shards(tmp_path_factory):
    """A labelled dataset with train and validate rows only (like the demo's CheXpert prompt shards)."""
    from conftest import make_demo_shards

    from cxrprep.shards import ShardDataset, ShardWriter

    src = make_demo_shards(tmp_path_factory.mktemp("src"), n_reports=8, n_labels=14)
    root = tmp_path_factory.mktemp("notest")
    ds = ShardDataset(src / "chexpert")
    with ShardWriter(root, "chexpert", label_names=ds.label_names) as w:
        for k, row in enumerate(ds.iter_rows()):
            row["split"] = "validate" if k % 3 == 0 else "train"
            w.write(row)
    return root


def test_eval_split_is_explicit_and_never_falls_back(tiny_checkpoint, no_test_shards, tmp_path):
    out = tmp_path / "ev"
    base = cli_args("eval", tiny_checkpoint, no_test_shards, out=out, bootstrap=20, prompts=ROOT / "prompts/eval.yaml")
    r = runner.invoke(app, base)
    assert r.exit_code == 2, r.output
    assert "--split" in r.output and "'chexpert'" in r.output and "'test'" in r.output and "Traceback" not in r.output
    assert not (out / "metrics.json").exists()
    r = runner.invoke(app, base + ["--split", "validate"])
    assert r.exit_code == 0, r.output
    m = strict_load(out / "metrics.json")
    d = m["datasets"]["chexpert"]
    assert m["config"]["split"] == "validate" and m["protocol"]["split"] == "validate"
    assert d["split"] == "validate" and d["binary"]["split"] == "validate"
    assert d["studies_scored"] == d["rows_per_split"]["validate"]
    assert all(c["split"] == "validate" for c in d["binary"]["classes"].values())
    assert all(c["threshold_from"] == "train" for c in d["binary"]["classes"].values())
    md = (out / "metrics.md").read_text()
    assert "Split scored: **validate**" in md and "| chexpert | validate |" in md
    assert "| n | positives |" in md and "validate" in r.output
    # every class without positives (or negatives) has null + a reason, and the macro says how many went in
    for c in d["binary"]["classes"].values():
        assert (c["auroc"] is None) == ("auroc_reason" in c)
    assert d["binary"]["macro_of"] == len(d["binary"]["classes"])
    assert d["binary"]["macro_classes"] == sum(c["auroc"] is not None for c in d["binary"]["classes"].values())
    r = runner.invoke(app, base + ["--split", "everything"])
    assert r.exit_code == 2 and "--split" in r.output


def test_eval_strict_json_skipped_baseline_and_bad_input(tiny_checkpoint, demo_shards, tmp_path):
    prompts = tmp_path / "few.yaml"  # prompts for two classes only: the others must be listed as skipped
    prompts.write_text(
        "version: 1\nbinary:\n  Pleural Effusion:\n    positive: [Pleural effusion.]\n"
        "    negative: [No pleural effusion.]\n  Edema:\n    positive: [Edema.]\n    negative: [No edema.]\n"
    )
    out = tmp_path / "ev"
    r = runner.invoke(
        app,
        cli_args(
            "eval",
            tiny_checkpoint,
            demo_shards / "mimic-cxr",
            prompts=prompts,
            out=out,
            bootstrap=20,
            baseline="untrained",
            device="auto",
        ),
    )
    assert r.exit_code == 0, r.output
    m = strict_load(out / "metrics.json")
    d = m["datasets"]["mimic-cxr"]
    assert set(d["binary"]["classes"]) == {"Edema", "Pleural Effusion"}
    skipped = {s["label"]: s["reason"] for s in d["binary"]["skipped"]}
    assert len(skipped) == 12 and "no binary prompt pair" in skipped["Cardiomegaly"]
    assert "| mimic-cxr | test | Cardiomegaly |" in (out / "metrics.md").read_text()
    b = m["baseline"]["datasets"]["mimic-cxr"]
    assert m["baseline"]["kind"] == "untrained" and set(b["binary"]["classes"]) == {"Edema", "Pleural Effusion"}
    assert b["binary"]["classes"]["Edema"]["n"] == d["binary"]["classes"]["Edema"]["n"]
    assert "untrained |" in (out / "metrics.md").read_text()
    assert m["config"]["device_used"] == "cpu" and m["config"]["ensemble"] == "mean-similarity"
    r = runner.invoke(app, ["eval", str(tiny_checkpoint), str(demo_shards), "--bootstrap", "-5"])
    assert r.exit_code == 2 and "--bootstrap" in r.output and "Traceback" not in r.output
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint / ("best" if (tiny_checkpoint / "best").exists() else "last"), bad)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    r = runner.invoke(app, ["eval", str(bad), str(demo_shards), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2, r.output
    assert "model.safetensors" in r.output and "truncated" in r.output and "Traceback" not in r.output


def test_strict_json_helper():
    from cxrtrain.evaluate import strict_json

    txt = strict_json({"a": float("nan"), "b": [np.float32(np.inf), np.int64(3)], "c": np.array([1.5])})
    assert json.loads(txt) == {"a": None, "b": [None, 3], "c": [1.5]}


def test_cached_embeddings_are_encode_image_and_tower_features(tiny_checkpoint, demo_shards):
    """The eval cache's ``emb`` is exactly model.encode_image (zero-shot) and ``feat`` the frozen tower's pooled
    features (linear probes), for the image eval picks (first PA/AP view)."""
    from cxrprep.shards import ShardDataset
    from cxrtrain.data import decode_gray, eval_transform
    from cxrtrain.evaluate import _pick_image, embed_dataset
    from cxrtrain.train import load_checkpoint

    model, _ = load_checkpoint(tiny_checkpoint)
    ds = ShardDataset(demo_shards / "mimic-cxr")
    e = embed_dataset(model, ds, "test", None, batch_size=5)
    row = next(r for r in ds.iter_rows(["study_id", "images"]) if r["study_id"] == e["study_id"][3])
    x = eval_transform(decode_gray(_pick_image(row["images"])["image"]), model.config)[None]
    with torch.no_grad():
        assert np.allclose(e["emb"][3], model.encode_image(x)[0].numpy(), atol=1e-5)
        assert np.allclose(e["feat"][3], model.image_features(x)[0].numpy(), atol=1e-5)
    assert _pick_image(row["images"])["view"] in ("PA", "AP")
