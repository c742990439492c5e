"""Issue 22: the GLoRIA grid, the CXR-CLIP probe schedule, embeddings.npz re-scoring, prompt comparison."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).parent.parent
FIVE = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


# -- the GLoRIA grid ------------------------------------------------------------------------------------
def test_gloria_grid_counts_order_and_duplicates():
    from cxrprep.text.templates import eval_prompt_sets

    g = eval_prompt_sets("gloria")["multiclass"]["chexpert-5x200"]
    assert {c: len(v) for c, v in g.items()} == {
        "Atelectasis": 210,
        "Cardiomegaly": 15,
        "Consolidation": 192,
        "Edema": 18,
        "Pleural Effusion": 54,
    }
    at = g["Atelectasis"]
    assert at[0] == "subsegmental atelectasis at the mid lung zone"  # the empty severity is stripped
    assert at[1] == "subsegmental atelectasis at the upper lung zone"  # location innermost
    assert at[10] == "linear atelectasis at the mid lung zone"
    assert at[70] == "mild subsegmental atelectasis at the mid lung zone"
    assert at[-1] == "minimal residual atelectasis at the right lower lobe"
    assert g["Cardiomegaly"][12] == (
        "mildly enlarged cardiac silhouette, likely left ventricular enlargement. other chambers are less prominent"
    )
    assert g["Consolidation"][48] == "increased bilateral consolidation at the lower lung zone"
    assert g["Consolidation"][-3] == "apperance of partial consolidation at the right uppper lobe"  # as published
    assert g["Edema"][:4] == [
        "pulmonary edema",
        "trace interstitial edema",
        "pulmonary interstitial edema",
        "mild pulmonary edema",
    ]
    assert "presistent pulmonary edema" in g["Edema"]
    pe = g["Pleural Effusion"]  # walked severity, location, subtype: the published dictionary order
    assert pe[:3] == [
        "left bilateral pleural effusion",
        "left subpulmonic pleural effusion",
        "left bilateral pleural effusion",
    ]
    assert pe[-1] == "increased tiny bilateral pleural effusion"
    counts = Counter(pe)
    assert len(counts) == 36 and sorted(set(counts.values())) == [1, 2]
    assert all(counts[p] == 2 for p in pe if "bilateral" in p) and all(counts[p] == 1 for p in pe if "subpulmonic" in p)


def test_cxr_clip_protocol_file_is_gloria_with_two_spellings_fixed_and_18_vindr_pairs():
    from cxrprep.text.templates import eval_prompt_sets
    from cxrtrain.protocols import VINDR_18

    g = eval_prompt_sets("gloria")["multiclass"]["chexpert-5x200"]
    p = eval_prompt_sets("cxr-clip-protocol")
    c = p["multiclass"]["chexpert-5x200"]
    fixed = {"apperance of": "appearance of", "presistent": "persistent"}
    for cls in FIVE:
        want = g[cls]
        for a, b in fixed.items():
            want = [w.replace(a, b) for w in want]
        assert c[cls] == want
    assert c != g
    vindr = [k.split(":", 1)[1] for k in p["binary"] if k.startswith("vindr-cxr:")]
    assert vindr == list(VINDR_18)
    assert p["binary"]["vindr-cxr:ILD"] == {"positive": ["ILD"], "negative": ["No ILD"]}
    assert p["binary"]["rsna-pneumonia:Pneumonia"]["positive"] == ["Findings suggesting pneumonia."]


def test_duplicated_prompt_weighs_double_in_the_mean():
    from cxrtrain.evaluate import set_scores

    img = np.array([[1.0, 0.0]])
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert set_scores(img, np.stack([a, a, b]), "mean-similarity")[0] == pytest.approx(2 / 3)


def test_templates_preview_json(tmp_path):
    from typer.testing import CliRunner

    from cxrprep.cli.app import app

    r = CliRunner().invoke(app, ["templates", "preview", "gloria", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert [len(v) for v in d["multiclass"]["chexpert-5x200"].values()] == [210, 15, 192, 18, 54]


# -- the probe schedule ------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps_per_epoch,epochs", [(7, 30), (3, 300), (1, 11)])
def test_probe_schedule_matches_the_seed_loop_and_torch(steps_per_epoch, epochs):
    from cxrtrain.protocols import PROTOCOLS, lr_lambda, probe_lr_schedule

    p = PROTOCOLS["cxr-clip"]["probe"]
    base = p["lr"]
    got = probe_lr_schedule(steps_per_epoch, epochs, base, p["warmup_fraction"])
    # the seed's schedule written out: warm-up over 10% of all steps (rounded up), then cosine to zero
    total = steps_per_epoch * epochs
    warm = math.ceil(0.1 * total)
    want = []
    for step in range(total):
        if step < warm:
            want.append(base * step / warm)
        else:
            want.append(base * math.cos(math.pi / 2 * (step - warm) / (total - warm)) ** 2)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-18)
    assert max(got) == pytest.approx(base, rel=0.05) and got[0] == 0.0
    # the same numbers from an optimiser stepped per batch with LambdaLR, as the seed's trainer does
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([w], lr=base, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps_per_epoch, epochs, 0.1))
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx(want, rel=1e-9, abs=1e-18)


# -- paired comparison -------------------------------------------------------------------------------------
def _planted(n=400, d=24, seed=0):
    rng = np.random.default_rng(seed)
    dirs = np.linalg.qr(rng.normal(size=(d, d)))[0][:, :3].T  # three orthogonal class directions
    labels = rng.integers(0, 2, size=(n, 3)).astype(float)
    img = rng.normal(0, 1.0, (n, d)) + 1.5 * (labels * 2 - 1) @ dirs
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    vec, good, rand = {}, {}, {}
    for k, c in enumerate(["Atelectasis", "Edema", "Fracture"]):
        vec[f"{c} yes"], vec[f"{c} no"] = dirs[k], -dirs[k]
        vec[f"{c} r1"], vec[f"{c} r2"] = rng.normal(size=d), rng.normal(size=d)
        good[c] = {"positive": [f"{c} yes"], "negative": [f"{c} no"]}
        rand[c] = {"positive": [f"{c} r1"], "negative": [f"{c} r2"]}
    emb = dict(emb=img, labels=labels, split=np.array(["test"] * n), study_id=np.arange(n).astype(str))
    sets = {"good": {"binary": good, "multiclass": {}}, "random": {"binary": rand, "multiclass": {}}}
    return emb, sets, lambda texts: np.stack([vec[t] for t in texts])


def test_random_prompt_set_is_reported_worse_with_ci_excluding_zero(tmp_path):
    from cxrtrain.compare import forest_plot
    from cxrtrain.evaluate import EvalConfig
    from cxrtrain.prompt_compare import compare_dataset, markdown_section

    emb, sets, text_emb = _planted()
    cfg = EvalConfig(bootstrap=200, seed=3)
    res = compare_dataset(emb, ["Atelectasis", "Edema", "Fracture"], "toy", sets, text_emb, cfg, 10.0)
    assert res["reference"] == "good" and res["n"] == 400
    for task in ["AUROC Atelectasis", "AUROC Edema", "AUROC Fracture", "AUROC macro"]:
        r = res["tasks"][task]["random"]
        assert r["reference_value"] > 0.9 and r["delta"] < -0.2
        assert r["ci95"][1] < 0 and r["verdict"] == "worse", (task, r)
    # the same file against itself: delta 0 on every resample, within noise
    same = compare_dataset(emb, ["Edema"], "toy", {"a": sets["good"], "b": sets["good"]}, text_emb, cfg, 10.0)
    r = same["tasks"]["AUROC Edema"]["b"]
    assert r["delta"] == 0 and r["ci95"] == [0.0, 0.0] and r["verdict"] == "within noise"
    assert "| AUROC macro | random |" in markdown_section({"toy": res})
    forest_plot(res, tmp_path / "f.png", "toy")
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_paired_bootstrap_uses_one_draw_for_every_system():
    from cxrtrain.compare import paired_bootstrap, resample_indices

    seen = []

    def recorder(tag):
        def stat(idx):
            seen.append((tag, tuple(idx)))
            return float(np.mean(idx))

        return stat

    paired_bootstrap(10, {"t": {"a": recorder("a"), "b": recorder("b")}}, "a", n_boot=5, seed=1)
    draws = [tuple(r) for r in resample_indices(10, 5, 1)]
    assert [i for t, i in seen if t == "a"][1:] == draws == [i for t, i in seen if t == "b"][1:]


# -- embeddings.npz: every number re-scored from the file alone ---------------------------------------------
def _five_by_two_hundred(root: Path, n: int = 30) -> None:
    import cv2

    from cxrprep.schema import empty_row
    from cxrprep.shards import ShardWriter

    rng = np.random.default_rng(5)
    texts = ["Mild atelectasis.", "Enlarged heart.", "Patchy consolidation.", "Pulmonary edema.", "Small effusion."]
    with ShardWriter(root, "chexpert-5x200", label_names=FIVE, row_group_rows=8) as w:
        for i in range(n):
            r = empty_row("chexpert-5x200", f"p{i:04d}/study1", f"p{i:04d}", "test")
            k = i % 5
            r["labels"] = [1 if j == k else 0 for j in range(5)]
            r["impression"] = texts[k] if i % 3 else f"{texts[k]} Case {i}."
            a = np.clip(rng.normal(100 + 8 * k, 30, size=(40, 48)), 0, 255).astype(np.uint8)
            enc = cv2.imencode(".png", a)[1].tobytes()
            r["images"] = [dict(image_id=f"i{i}", view="PA", image=enc, image_clahe=enc, height=40, width=48)]
            w.write(r)


SMALL = """version: 1
binary:
  Atelectasis: {positive: ["Atelectasis."], negative: ["No atelectasis."]}
  Cardiomegaly: {positive: ["The heart is enlarged.", "Cardiomegaly."], negative: ["Heart size is normal."]}
  Edema: {positive: ["Pulmonary edema."], negative: ["No edema."]}
  Pleural Effusion: {positive: ["Pleural effusion."], negative: ["No pleural effusion."]}
  Consolidation: {positive: ["Consolidation."], negative: ["No consolidation."]}
grids:
  chexpert-5x200:
    Atelectasis: {a: ["", mild atelectasis], b: [at the bases, at the bases]}
    Cardiomegaly: {a: [cardiomegaly, enlarged heart]}
    Consolidation: {a: [consolidation]}
    Edema: {a: [pulmonary edema, interstitial edema]}
    Pleural Effusion: {a: [small, large], b: [effusion]}
"""


@pytest.mark.slow
def test_embeddings_npz_rescores_every_number_and_prompt_comparison_runs(demo_shards, tmp_path):
    from typer.testing import CliRunner

    from cxrtrain.cli.app import app
    from cxrtrain.config import build_config
    from cxrtrain.embeddings import rescore
    from cxrtrain.model import create_model
    from cxrtrain.train import save_checkpoint

    torch.manual_seed(0)
    cfg = build_config(dict(model={"preset": "tiny", "image_size": 32, "embed_dim": 32}))
    run = tmp_path / "run"
    save_checkpoint(run / "last", create_model(cfg.model), cfg)  # a seeded untrained model: numbers are numbers
    small = tmp_path / "small.yaml"
    small.write_text(SMALL)
    other = tmp_path / "other.yaml"
    other.write_text(SMALL.replace("mild atelectasis", "bibasilar atelectasis").replace("Edema: [", "Edema: [edema, "))
    five = tmp_path / "five"
    _five_by_two_hundred(five)
    out = tmp_path / "ev"
    args = ["eval", str(run), str(demo_shards), str(five), "--out", str(out), "--bootstrap", "30", "--split", "all"]
    r = CliRunner().invoke(app, [*args, "--save-embeddings", "--prompts", str(small), "--prompts", str(other)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    checked = 0
    for name, d in m["datasets"].items():
        z = rescore(out / d["embeddings_file"])
        for cls, res in d.get("binary", {}).get("classes", {}).items():
            got = {k: v for k, v in z["binary"].items() if k == res["label"]}[res["label"]]
            assert (got is None) == (res["auroc"] is None)
            if got is not None:
                assert got == pytest.approx(res["auroc"], abs=1e-6), (name, cls)
                checked += 1
        for set_name, res in d.get("multiclass", {}).items():
            zz = z["multiclass"][set_name]
            assert zz["accuracy"] == pytest.approx(res["accuracy"], abs=1e-6)
            assert zz["macro_accuracy"] == pytest.approx(res["macro_accuracy"], abs=1e-6)
            for c, pc in res["per_class"].items():
                assert zz["per_class"][c] == pytest.approx(pc["accuracy"], abs=1e-6)
            checked += 1
        if "retrieval" in d:
            for direction in ("image_to_text", "text_to_image"):
                for k, v in d["retrieval"][direction].items():
                    assert z["retrieval"][direction][k] == pytest.approx(v, abs=1e-6), (name, direction, k)
                    checked += 1
    assert checked > 20 and "chexpert-5x200" in m["datasets"] and "multiclass" in m["datasets"]["chexpert-5x200"]
    zf = np.load(out / "embeddings" / "chexpert-5x200.npz")
    assert zf["temperature"] == pytest.approx(1 / zf["logit_scale"])
    assert (zf["prompt_set"] == "chexpert-5x200").sum() > 0 and zf["image_emb"].shape[0] == 30
    comp = m["prompt_comparison"]["datasets"]["chexpert-5x200"]
    assert comp["reference"] == str(small) and "accuracy chexpert-5x200 macro" in comp["tasks"]
    assert (out / "compare_chexpert-5x200.png").exists() and "Prompt sets compared" in (out / "metrics.md").read_text()
    assert m["protocol"]["preset"] == "cxrkit" and "protocol: **cxrkit**" in (out / "metrics.md").read_text()
    out2 = tmp_path / "ev2"
    r = CliRunner().invoke(
        app,
        ["eval", str(run), str(five), "--out", str(out2), "--bootstrap", "0"]
        + ["--protocol", "cxr-clip", "--save-embeddings"],
    )
    assert r.exit_code == 0, r.output
    m2 = json.loads((out2 / "metrics.json").read_text())
    d = m2["datasets"]["chexpert-5x200"]
    assert m2["protocol"]["preset"] == "cxr-clip" and m2["config"]["text_section"] == "max"
    assert d["multiclass"]["chexpert-5x200"]["prompts_per_class"] == dict(zip(FIVE, [210, 15, 192, 18, 54]))
    assert d["retrieval"]["rsum"] == pytest.approx(sum(d["retrieval"]["image_to_text"].values()))
    z = rescore(out2 / d["embeddings_file"])
    assert z["multiclass"]["chexpert-5x200"]["accuracy"] == pytest.approx(d["multiclass"]["chexpert-5x200"]["accuracy"])
    assert z["retrieval"]["image_to_text"] == pytest.approx(d["retrieval"]["image_to_text"])


def test_argmax_f1_rule_is_cxr_clips():
    from cxrtrain.evaluate import EvalConfig, zero_shot_binary
    from cxrtrain.metrics import f1_score

    emb, sets, text_emb = _planted(n=120, seed=2)
    emb["split"] = np.array(["test"] * 60 + ["validate"] * 60)
    res = zero_shot_binary(
        emb,
        ["Atelectasis", "Edema", "Fracture"],
        sets["good"]["binary"],
        5.0,
        text_emb,
        EvalConfig(bootstrap=0, f1_rule="argmax"),
        "toy",
    )
    for j, (cls, r) in enumerate(res["classes"].items()):
        s_pos = emb["emb"] @ text_emb([f"{cls} yes"])[0]
        s_neg = emb["emb"] @ text_emb([f"{cls} no"])[0]
        y = emb["labels"][:60, j]
        assert r["threshold_from"] == "argmax" and r["f1"] == pytest.approx(f1_score(y, (s_pos > s_neg)[:60]))


def test_retrieval_text_max_is_the_larger_string():
    from cxrtrain.evaluate import retrieval_text

    assert retrieval_text("The heart is normal.", "No acute disease.", "max") == "The heart is normal."
    assert retrieval_text("", "Clear lungs.", "max") == "Clear lungs."
    assert retrieval_text("Findings.", "", "impression") == "Findings."


def test_cxr_clip_probe_steps_follow_the_seed_schedule(demo_shards):
    from cxrprep.shards import ShardDataset
    from cxrtrain.config import build_config
    from cxrtrain.model import create_model
    from cxrtrain.probe_cxrclip import run_cxr_clip_probe

    torch.manual_seed(0)
    model = create_model(build_config(dict(model={"preset": "tiny", "image_size": 32, "embed_dim": 32})).model)
    ds = ShardDataset(demo_shards / "chexpert")
    r = run_cxr_clip_probe(model, ds, 1.0, epochs=4)
    assert r["batch_size"] == r["train_rows"] == 12 and r["steps"] == 4  # one full batch per epoch
    total, warm = 4, math.ceil(0.1 * 4)
    loop = [
        5e-5 * (s / warm if s < warm else math.cos(math.pi / 2 * (s - warm) / (total - warm)) ** 2)
        for s in range(total)
    ]
    assert r["lrs"] == pytest.approx(loop, rel=1e-9, abs=1e-18) and r["warmup_steps"] == warm
    small = run_cxr_clip_probe(model, ds, 0.1, epochs=2)
    assert small["train_rows"] == 1 and small["steps"] == 2  # round(0.1 * 12) rows, DataFrame.sample's
    assert set(r["auroc"]) == set(ds.label_names) and 0 <= r["best_epoch"] < 4
