"""Batches as CXR-CLIP drew them (issue 21): uniform dataset mixing, no same-patient pairs, fresh prompt
reports, exact resume."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cxrprep.labels import CHEXPERT_LABELS
from cxrprep.schema import empty_row
from cxrprep.shards import ShardWriter, open_datasets
from cxrtrain.config import TrainConfig
from cxrtrain.data import StudyStream
from cxrtrain.model import model_config
from cxrtrain.sampling import patient_batches, same_patient_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from sim_batches import make_index, simulate  # noqa: E402

torch.set_num_threads(1)

SIZES = {"mimic-cxr": (14_000, 3.4), "chexpert": (8_000, 3.0), "chestxray14": (3_000, 3.0)}


def _uniform_band(sizes: dict, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """5th / 95th percentile of each dataset's share of a batch drawn by a uniform shuffle of all studies
    (multivariate hypergeometric, 20,000 batches)."""
    counts = [n for n, _ in sizes.values()]
    draws = np.random.default_rng(0).multivariate_hypergeometric(counts, batch, size=20_000) / batch
    return np.percentile(draws, 5, axis=0), np.percentile(draws, 95, axis=0)


@pytest.fixture(scope="module")
def index():
    return make_index(SIZES, group=150)  # rows in patient order, >= 3 studies per patient, row groups of 150


def test_200_batches_of_128_mix_like_a_uniform_shuffle_without_same_patient_pairs(index):
    lo, hi = _uniform_band(SIZES, 128)
    tol = 1.5 / 128  # percentiles of 200 batches vs the exact band: one study of slack each side
    shares, pairs = simulate(index, "now", batches=200, batch=128, buffer=512)
    p5, p95 = np.percentile(shares, 5, axis=0), np.percentile(shares, 95, axis=0)
    assert (p5 >= lo - tol).all() and (p95 <= hi + tol).all(), (p5, p95, lo, hi)
    assert abs(shares.mean(0) - np.array([14, 8, 3]) / 25).max() < 0.02
    assert pairs.max() == 0
    # the stream before issue 21 (one buffer over shuffled row groups) fails the same check
    old, old_pairs = simulate(index, "before", batches=200, batch=128, buffer=512)
    assert (np.percentile(old, 5, axis=0) < lo - tol).any() and old_pairs.mean() > 5


def test_patient_batches_defer_without_loss_and_warn_once_for_one_patient():
    items = [((f"s{i}", f"p{i // 3}"), i) for i in range(12)]  # 4 patients, 3 consecutive studies each
    got = list(patient_batches(items, 4))
    assert sorted(x for b in got for x in b) == list(range(12))
    assert all(same_patient_pairs([x // 3 for x in b]) == 0 for b in got)
    said: list[str] = []
    one = [((f"s{i}", "p0"), i) for i in range(40)]
    got = list(patient_batches(one, 4, warn=said.append))
    assert len(said) == 1 and "too few patients" in said[0]
    assert sorted(x for b in got for x in b) == list(range(40))


# -- on real shards ------------------------------------------------------------------------------------
def _jpeg(rng, h=40, w=48) -> bytes:
    return cv2.imencode(".jpg", rng.integers(0, 255, (h, w), dtype=np.uint8))[1].tobytes()


def _write(root: Path, name: str, n: int, per_patient: int, rng, prompts: bool = False) -> None:
    conf = {"templates": "default", "uncertain": "uncertain", "negatives": 3} if prompts else {}
    with ShardWriter(
        root, name, label_names=CHEXPERT_LABELS, row_group_rows=6, config=conf, command="prompts" if prompts else ""
    ) as w:
        for i in range(n):  # patient order, as prep writes rows
            r = empty_row(name, f"{name}-s{i:04d}", f"{name}-p{i // per_patient:04d}", "train")
            labels = [None] * len(CHEXPERT_LABELS)
            for k in (i % 5, 3 + i % 7, 9):
                labels[k] = int(rng.integers(-1, 2))
            r["labels"] = labels
            if prompts:
                r["prompts"] = [f"Variant {v} of study {i}." for v in range(2)]
            else:
                r["findings"], r["impression"] = f"Findings of study {i}.", f"Impression {i}."
            r["images"] = [dict(image_id=f"{name}{i}", view="PA", image=_jpeg(rng), height=40, width=48)]
            w.write(r)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batches")
    rng = np.random.default_rng(0)
    _write(root, "mimic-cxr", 48, 3, rng)
    _write(root, "chexpert", 30, 3, rng, prompts=True)
    _write(root, "chestxray14", 12, 4, rng)
    return root


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(model=model_config("tiny", image_size=32), shuffle_buffer=16, **kw)


def _batches(root: Path, cfg: TrainConfig, n: int, epoch: int = 0, skip: int = 0, size: int = 8) -> list[dict]:
    s = StudyStream(open_datasets([root]), "train", cfg, None, size, seed=5, log=lambda m: None)
    s.set_epoch(epoch, skip)
    it = iter(s)
    return [next(it) for _ in range(n)]


def test_stream_batches_carry_dataset_and_patient_and_avoid_same_patient(root):
    got = _batches(root, _cfg(), 12)
    for b in got:
        assert len(b["study_id"]) == 8 and len(b["dataset"]) == 8 == len(b["subject_id"])
        assert same_patient_pairs(list(zip(b["dataset"], b["subject_id"]))) == 0
    assert {d for b in got for d in b["dataset"]} == {"mimic-cxr", "chexpert", "chestxray14"}
    off = _batches(root, _cfg(avoid_same_patient=False), 12)
    assert sum(same_patient_pairs(list(zip(b["dataset"], b["subject_id"]))) for b in off) > 0


def test_resume_gives_the_same_batches(root):
    cfg = _cfg(prompt_render="online")
    full = _batches(root, cfg, 4, epoch=2)
    resumed = _batches(root, cfg, 2, epoch=2, skip=2)
    for a, b in zip(full[2:], resumed):
        assert a["study_id"] == b["study_id"] and a["texts1"] == b["texts1"] and a["texts2"] == b["texts2"]
        assert torch.equal(a["images1"], b["images1"])


def test_online_prompts_are_fresh_each_epoch_and_offline_keep_the_variants(root):
    cfg = _cfg(prompt_render="online")
    texts: dict[str, set] = {}
    stream = StudyStream(open_datasets([root]), "train", cfg, None, 10, seed=5, log=lambda m: None)
    for epoch in range(15):  # 90 studies, batches of 10: 9 batches = every study once per epoch
        stream.set_epoch(epoch)
        it = iter(stream)
        for b in (next(it) for _ in range(9)):
            for sid, t1, t2 in zip(b["study_id"], b["texts1"], b["texts2"]):
                texts.setdefault(sid, set()).update((t1, t2))
    chexpert = {k: v for k, v in texts.items() if k.startswith("chexpert")}
    assert len(chexpert) == 30
    assert min(len(v) for v in chexpert.values()) >= 12
    assert not any("Variant" in t for v in chexpert.values() for t in v)
    offline = _batches(root, replace(cfg, prompt_render="offline"), 9, size=10)
    seen = {t for b in offline for sid, t in zip(b["study_id"], b["texts1"]) if sid.startswith("chexpert")}
    assert seen and all(t.startswith("Variant") for t in seen)


def test_cli_batch_draws_k_batches_without_a_sheet(root, tmp_path):
    from typer.testing import CliRunner

    from cxrtrain.cli.app import app

    out = tmp_path / "look"
    args = ["batch", str(root), "--out", str(out), "--n", "8", "--batches", "3", "--no-sheet"]
    r = CliRunner().invoke(app, args + ["--set", "model.image_size=32"])
    assert r.exit_code == 0, r.output
    assert not (out / "batch.png").exists()
    z = np.load(out / "batch.npz")
    assert z["images"].shape[:2] == (24, 2) and list(np.bincount(z["batch"])) == [8, 8, 8]
    assert set(z["dataset"]) <= {"mimic-cxr", "chexpert", "chestxray14"} and len(z["subject_id"]) == 24
    assert "same-patient pairs per batch 0.00" in r.output


def test_ddp_ranks_draw_disjoint_studies(root):
    cfg = _cfg()
    seen = []
    for rank in (0, 1):
        s = StudyStream(open_datasets([root]), "train", cfg, None, 8, rank=rank, world_size=2, seed=5)
        it = iter(s)
        seen.append({(d, sid) for b in (next(it) for _ in range(5)) for d, sid in zip(b["dataset"], b["study_id"])})
    assert len(seen[0]) == len(seen[1]) == 40 and not seen[0] & seen[1]
