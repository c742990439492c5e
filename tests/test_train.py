"""Losses against plain loops, sampler, partial freezing, config, exact resume, SIGTERM, DDP on CPU."""

from __future__ import annotations

import json
import math
import os
import random
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import sets, start_trainer, tiny_config

from cxrtrain.config import TrainConfig, build_config, load_config
from cxrtrain.data import StudyStream, eval_transform, pick_images, pick_texts, train_transform
from cxrtrain.model import create_model, model_config, set_trainable


def test_sampler_views_and_texts():
    cfg = TrainConfig(bt_prob=0.0)
    imgs = [dict(view="PA", n=0), dict(view="PA", n=1), dict(view="LATERAL", n=2)]
    for s in range(20):
        a, b = pick_images(imgs, random.Random(s))
        assert a["view"] != b["view"]
    one = [dict(view="AP", n=0)]
    assert pick_images(one, random.Random(0)) == (one[0], one[0])
    row = dict(
        findings="A. B.",
        impression="C.",
        findings_sentences=["A.", "B."],
        impression_sentences=["C."],
        findings_bt=[],
        impression_bt=[],
        prompts=[],
    )
    assert set(pick_texts(row, random.Random(0), cfg)) == {"A. B.", "C."}
    samp = TrainConfig(sentence_sampling=True, sentences_min=1, sentences_max=1)
    got = {pick_texts(row, random.Random(s), samp)[0] for s in range(30)}
    assert got == {"A.", "B.", "C."}  # one random sentence from either section
    shuf = TrainConfig(shuffle_sentences=True, bt_prob=0.0)
    orders = {
        pick_texts(dict(row, impression=None, impression_sentences=[]), random.Random(s), shuf)[0] for s in range(30)
    }
    assert orders == {"A. B.", "B. A."}  # shuffling really changes the text
    bt = TrainConfig(bt_prob=1.0)
    r2 = dict(row, findings_bt=["Back-translated."])
    assert "Back-translated." in pick_texts(r2, random.Random(0), bt)
    label_row = dict(row, prompts=["p1", "p2", "p3"])
    a, b = pick_texts(label_row, random.Random(0), cfg)
    assert a != b and {a, b} <= {"p1", "p2", "p3"}


def test_transforms_shapes():
    mc = model_config("tiny")
    g = (np.arange(100 * 80) % 255).astype(np.uint8).reshape(100, 80)
    x = train_transform(g, mc, np.random.default_rng(0))
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    y = eval_transform(g, mc)
    assert y.shape == (3, 64, 64)
    assert torch.equal(eval_transform(g, mc), y)


@pytest.fixture(scope="module")
def tiny_model():
    return create_model("tiny")


def test_partial_freezing_counts(tiny_model):
    m = tiny_model
    full, total = set_trainable(m, None, None)
    assert full == total
    t1, _ = set_trainable(m, 1, 0)
    t2, _ = set_trainable(m, 2, 0)
    assert t1 < t2 < total
    last = m.image_blocks()[-1]
    assert all(p.requires_grad for p in last.parameters())
    assert not any(p.requires_grad for p in m.image_blocks()[0].parameters() if p.ndim > 1)
    assert not m.text_tower.embeddings.word_embeddings.weight.requires_grad
    assert m.image_proj.weight.requires_grad and m.logit_scale.requires_grad
    set_trainable(m, None, None)


def test_config_unknown_key_and_types(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'batch_size'"):
        build_config({"batchsize": 4})
    with pytest.raises(ValueError, match="model.imagesize"):
        build_config({"model.imagesize": 4})
    p = tmp_path / "c.yaml"
    p.write_text("model: {preset: tiny}\nepochs: 2\n")
    c = load_config(p, ["lr=1e-3", "relax_threshold=0.8", "model.embed_dim=64", "train_image_blocks=2"])
    assert (c.lr, c.relax_threshold, c.model.embed_dim, c.epochs, c.train_image_blocks) == (1e-3, 0.8, 64, 2, 2)
    with pytest.raises(ValueError, match="unknown model preset"):
        load_config(None, ["model.preset=resnet"])


def _cfg(**kw):
    return tiny_config(**{"epochs": 2, "shuffle_buffer": 8, **kw})


def test_stream_is_deterministic_and_skips_exactly(demo_shards, tiny_model):
    from cxrprep.shards import open_datasets

    ds = open_datasets([demo_shards])
    cfg = _cfg()
    s = StudyStream(ds, "train", cfg, tiny_model.tokenizer, 4, seed=3)
    s.set_epoch(1)
    it = iter(s)
    batches = [next(it) for _ in range(5)]
    s.set_epoch(1, skip_batches=3)
    it2 = iter(s)
    resumed = next(it2)
    assert resumed["study_id"] == batches[3]["study_id"]
    assert torch.equal(resumed["images1"], batches[3]["images1"])
    s.set_epoch(2)
    other = [next(iter(s))["study_id"]]
    assert other[0] != batches[0]["study_id"]  # another epoch reshuffles


def test_exact_resume_and_sigterm(demo_shards, tmp_path):
    from cxrtrain.train import load_checkpoint, train

    cfg = _cfg(max_steps=4)
    full = train([str(demo_shards)], tmp_path / "full", cfg, log=lambda *_: None)
    part1 = train([str(demo_shards)], tmp_path / "killed", _cfg(max_steps=2), log=lambda *_: None)
    assert part1["stopped_by"] == "max_steps" and (tmp_path / "killed/last/state.pt").exists()
    st = torch.load(tmp_path / "killed/last/state.pt", weights_only=True)
    assert st["step"] == 2
    part2 = train([str(demo_shards)], tmp_path / "killed", cfg, resume=True, log=lambda *_: None)
    a = [h["loss"] for h in full["history"]]
    b = [h["loss"] for h in part1["history"]] + [h["loss"] for h in part2["history"]]
    assert len(a) == 4 and b == pytest.approx(a, rel=1e-5, abs=1e-6)
    m1, _ = load_checkpoint(tmp_path / "full/last")
    m2, conf = load_checkpoint(tmp_path / "killed/last")
    for (k, v), (_, w) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.allclose(v, w, atol=1e-6), k
    assert conf["model"]["preset"] == "tiny"


def test_full_run_validation_best_and_plot(demo_shards, tmp_path):
    from typer.testing import CliRunner

    from cxrtrain.cli.app import app

    r = CliRunner().invoke(
        app,
        ["run", str(demo_shards), "--out", str(tmp_path / "r")]
        + sets("epochs=2", "batch_size=4", "model.image_size=32", "model.embed_dim=32", "warmup_steps=1"),
    )
    assert r.exit_code == 0, r.output
    assert "trainable parameters" in r.output
    rows = [json.loads(x) for x in (tmp_path / "r/metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in x for x in rows) and all("data_wait" in x for x in rows if "loss" in x)
    assert (tmp_path / "r/best/model.safetensors").exists() and (tmp_path / "r/loss.png").exists()
    r = CliRunner().invoke(app, ["run", str(demo_shards), "--set", "batchsize=4"])
    assert r.exit_code == 2 and "batch_size" in r.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a subprocess trainer
def test_sigterm_writes_checkpoint(demo_shards, tmp_path):
    import signal

    out = tmp_path / "run"
    p = start_trainer(demo_shards, out, *sets("epochs=50", "batch_size=4", "model.image_size=32", "model.embed_dim=32"))
    p.send_signal(signal.SIGTERM)
    output = p.communicate(timeout=120)[0].decode()
    assert p.returncode == 0, output
    assert "stopped by SIGTERM" in output
    st = torch.load(out / "last/state.pt", weights_only=True)
    assert st["step"] >= 1


@pytest.mark.slow  # two torchrun processes
def test_torchrun_two_process_training(demo_shards, tmp_path):
    """The real trainer under torchrun with 2 CPU processes (gloo): runs, syncs, checkpoints once."""
    import subprocess

    out = tmp_path / "ddp"
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        "-m",
        "cxrtrain.cli.app",
        "run",
        str(demo_shards),
        "--out",
        str(out),
        *sets("epochs=1", "batch_size=4", "max_steps=2", "model.image_size=32", "model.embed_dim=32"),
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "world 2" in p.stdout and p.stdout.count("done:") == 1
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    assert torch.load(out / "last/state.pt", weights_only=True)["step"] == 2


def test_bf16_autocast_and_accumulation(demo_shards, tmp_path):
    from cxrtrain.train import train

    res = train(
        [str(demo_shards)], tmp_path / "bf16", _cfg(max_steps=2, precision="bf16", accum_steps=2), log=lambda *_: None
    )
    assert res["steps"] == 2 and all(math.isfinite(h["loss"]) for h in res["history"])
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        train([str(demo_shards)], tmp_path / "fp16", _cfg(max_steps=1, precision="fp16"), log=lambda *_: None)


def test_checkpoint_is_self_contained(demo_shards, tmp_path):
    """A checkpoint rebuilds from its saved tower configs even when the original encoders are gone."""
    from cxrtrain.train import load_checkpoint, train

    train([str(demo_shards)], tmp_path / "r", _cfg(max_steps=1), log=lambda *_: None)
    conf_path = tmp_path / "r/last/config.json"
    conf = json.loads(conf_path.read_text())
    conf["model"]["text_encoder"] = str(tmp_path / "gone")  # as if trained elsewhere
    conf_path.write_text(json.dumps(conf))
    m, _ = load_checkpoint(tmp_path / "r/last")
    tok = m.tokenize(["No pleural effusion."])
    assert m.encode_text(**tok).shape == (1, 32)
    assert (tmp_path / "r/last/towers/text/tokenizer_config.json").exists()


def test_dataset_weights(demo_shards, tiny_model, tmp_path):
    from cxrprep.shards import open_datasets
    from cxrtrain.train import train

    ds = open_datasets([demo_shards])
    only_reports = _cfg(dataset_weights={"chexpert": 0.0}, shuffle_buffer=1)
    s = StudyStream(ds, "train", only_reports, tiny_model.tokenizer, 4, seed=0)
    it = iter(s)
    ids = [i for _ in range(6) for i in next(it)["study_id"]]
    assert ids and all(not i.startswith("patient") for i in ids)  # no chexpert studies drawn
    both = StudyStream(ds, "train", _cfg(shuffle_buffer=1), tiny_model.tokenizer, 4, seed=0)
    it = iter(both)
    ids = [i for _ in range(8) for i in next(it)["study_id"]]
    assert any(i.startswith("patient") for i in ids) and any(not i.startswith("patient") for i in ids)
    with pytest.raises(ValueError, match="dataset_weights names \\['mimic'\\]"):
        train([str(demo_shards)], tmp_path / "run", _cfg(dataset_weights={"mimic": 2.0}), log=lambda *_: None)


def test_distinct_batches_defers_a_repeated_study_without_losing_rows():
    from cxrtrain.data import distinct_batches

    items = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5), ("d", 6), ("e", 7)]
    got = list(distinct_batches(items, 2))
    assert got == [[1, 2], [3, 4], [5, 6], [7]]
    assert list(distinct_batches([("a", 1), ("a", 2), ("a", 3), ("b", 4)], 2)) == [[1, 4], [2], [3]]
    assert list(distinct_batches(items, 3, distinct=False)) == [[1, 2, 3], [4, 5, 6], [7]]


def test_stream_never_puts_one_study_twice_in_a_batch(demo_shards, tiny_model):
    """A split smaller than batch + shuffle buffer: the buffer spans the end of one pass and the start of
    the next, which used to put a study twice in one batch (its own false negative)."""
    from cxrprep.shards import open_datasets
    from cxrtrain.data import count_rows

    ds = open_datasets([demo_shards])
    n = count_rows(ds, "train")
    s = StudyStream(ds, "train", _cfg(), tiny_model.tokenizer, max(2, n - 1), seed=0)
    it = iter(s)
    batches = [next(it) for _ in range(12)]
    for b in batches:
        assert len(set(b["study_id"])) == len(b["study_id"]), b["study_id"]
    s.set_epoch(0, skip_batches=7)
    assert next(iter(s))["study_id"] == batches[7]["study_id"]
