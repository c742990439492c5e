"""cxrprep augment / cxrprep.text.translate on a tiny random Marian pair built here (both backends, real
loading code). Asserts shapes, determinism, cache behaviour, ___ survival, resume and atomic rewrite;
not translation quality (the weights are random)."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from make_tiny_marian import build_tiny_marian  # noqa: E402

from cxrprep.schema import empty_row  # noqa: E402
from cxrprep.shards import ShardDataset, ShardWriter, find_datasets  # noqa: E402
from cxrprep.shards import swap as shard_swap  # noqa: E402
from cxrprep.text import translate as T  # noqa: E402

LONG = " ".join(["The cardiomediastinal silhouette is within normal limits"] * 12) + "."
SENTS = [
    "The heart size is normal.",
    "No pneumothorax is seen.",
    "A 2.5 cm nodule is seen in the right upper lobe.",
    "Moderate cardiomegaly is stable compared to ___.",
    "Lungs are clear.",
    LONG,
    "Endotracheal tube terminates 4.5 cm above the carina.",
    "Small bilateral effusions.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    return build_tiny_marian(tmp_path_factory.mktemp("marian"), seed=0)


@pytest.fixture(scope="module")
def backends(tiny):
    fwd, bwd = (T.resolve_model(str(p), "--model") for p in tiny)
    return T.TransformersBackend(fwd, "cpu"), T.TransformersBackend(bwd, "cpu")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _cfg(tiny, tmp: Path, **kw) -> T.AugmentConfig:
    return T.AugmentConfig(
        forward_model=str(tiny[0]),
        backward_model=str(tiny[1]),
        cache_dir=tmp / "cache",
        device="cpu",
        batch_size=kw.pop("batch_size", 3),
        **kw,
    )


def _dataset(root: Path) -> Path:
    """A small finished dataset with repeats, a ___ sentence, numbers, an over-long sentence, a row with
    no impression and one reject."""
    with ShardWriter(
        root, "toy", label_names=["A"], row_group_rows=4, config={"x": 1}, extra_manifest={"notes": {"a": 1}}
    ) as w:
        for i in range(10):
            r = empty_row("toy", f"s{i:02d}", f"p{i // 2}", "train")
            f = [SENTS[i % len(SENTS)], SENTS[(i + 3) % len(SENTS)]]
            r.update(findings=" ".join(f), findings_sentences=f, labels=[1])
            if i % 4:
                r.update(impression=SENTS[i % 3], impression_sentences=[SENTS[i % 3]])
            w.write(r)
        w.reject("reports/s99.txt", "s99", stage="sections", kind="skipped", reason="no findings or impression")
        w.counts.inputs_seen = 11
    return root / "toy"


def test_tiny_marian_is_deterministic_with_zero_pad_row(tiny, tmp_path):
    from transformers import MarianMTModel

    again = build_tiny_marian(tmp_path, seed=0)
    for a, b in zip(tiny, again):
        for f in ("model.safetensors", "vocab.json", "source.spm", "target.spm", "config.json"):
            assert _sha(a / f) == _sha(b / f), f
    m = MarianMTModel.from_pretrained(str(tiny[0]))
    assert float(m.get_input_embeddings().weight[m.config.pad_token_id].detach().abs().sum()) == 0.0


def test_guards():
    text, n = T.protect("Compared to ___ and ____, stable.")
    assert n == 2 and "_" not in text and text.count(T.PLACEHOLDER) == 2
    assert T.restore("Compared to ___ and ____.", "Rispetto a zzz e ZZZ.") == "Rispetto a ___ e ____."
    assert T.restore("Compared to ___.", "Stable.") is None
    assert T.keeps_numbers("A 2.5 cm and 3 mm nodule", "nodule of 3 mm and 2,5 cm")
    assert not T.keeps_numbers("A 2.5 cm nodule", "A 25 cm nodule")
    assert not T.keeps_numbers("2 of 2 lines", "2 lines")


def test_backends_agree_on_greedy_output(tiny, backends, tmp_path):
    fwd_t, _ = backends
    fwd_c = T.CT2Backend(fwd_t.model, tmp_path, "cpu", "float32")
    dec = T.Decoding(max_new_tokens=12)
    a = fwd_t.translate(SENTS, dec, 0)
    b = fwd_c.translate(SENTS, dec, 0)
    assert len(a) == len(SENTS) and all(isinstance(x, str) and x for x in a)
    assert a == b
    assert (tmp_path / "ct2").is_dir() and len(list((tmp_path / "ct2").iterdir())) == 1  # converted once
    T.CT2Backend(fwd_t.model, tmp_path, "cpu", "float32")
    assert len(list((tmp_path / "ct2").iterdir())) == 1
    # int8 (the CPU default) loads and gives one output per input
    c = T.CT2Backend(fwd_t.model, tmp_path, "cpu", "auto")
    assert c.precision == "int8" and len(c.translate(SENTS, dec, 0)) == len(SENTS)
    # forced lengths (bench): every output has exactly the batch's longest input length in tokens
    forced = T.Decoding(max_new_tokens=200, force_length=True)
    n_in = max(fwd_t.token_lengths(SENTS[:3]))
    for be in (fwd_t, fwd_c):
        outs = be.translate(SENTS[:3], forced, 0)
        ids = be.tok(outs, add_special_tokens=False)["input_ids"]
        assert all(abs(len(x) - n_in) <= 3 for x in ids), [len(x) for x in ids]


def test_dedup_cache_hits_and_truncation(backends, tmp_path):
    fwd, bwd = backends
    cache = T.TranslationCache(tmp_path / "c.sqlite")
    tr = T.Translator(fwd, bwd, cache, T.Decoding(max_new_tokens=16), batch_size=3)
    occ = SENTS * 3
    st = T.TranslateStats(sentences=len(occ), unique=len(set(occ)))
    out = tr.translate(occ, 1, st)
    assert st.translated == len(SENTS) and st.cache_hits == 0 and st.batches == 3
    assert set(out) == {(s, 0) for s in SENTS}
    assert st.truncated >= 1  # LONG is over the 64-token limit
    assert "___" in out[("Moderate cardiomegaly is stable compared to ___.", 0)]
    st2 = T.TranslateStats()
    assert tr.translate(occ, 1, st2) == out
    assert st2.translated == 0 and st2.cache_hits == len(SENTS) and st2.truncated == st.truncated
    # other decoding settings are another cache key
    st3 = T.TranslateStats()
    T.Translator(fwd, bwd, cache, T.Decoding(method="beam", beams=2, max_new_tokens=16)).translate(SENTS[:2], 1, st3)
    assert st3.cache_hits == 0 and st3.translated == 2
    cache.close()


def test_resume_after_interruption(backends, tmp_path, monkeypatch):
    fwd, bwd = backends
    dec = T.Decoding(max_new_tokens=10)
    ref = T.Translator(fwd, bwd, T.TranslationCache(tmp_path / "ref.sqlite"), dec, 2).translate(SENTS)
    cache = T.TranslationCache(tmp_path / "c.sqlite")
    tr = T.Translator(fwd, bwd, cache, dec, 2)
    calls = {"n": 0}
    real = bwd.translate

    def dies_on_third(texts, d, seed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(texts, d, seed)

    monkeypatch.setattr(bwd, "translate", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        tr.translate(SENTS)
    monkeypatch.undo()
    st = T.TranslateStats()
    assert tr.translate(SENTS, 1, st) == ref
    assert st.cache_hits == 4 and st.translated == len(SENTS) - 4


def test_sampling_variants_are_seeded(backends, tmp_path):
    fwd, bwd = backends
    dec = T.Decoding(method="sample", temperature=1.5, max_new_tokens=8, seed=3)
    a = T.Translator(fwd, bwd, T.TranslationCache(tmp_path / "a.sqlite"), dec, 4).translate(SENTS, variants=2)
    b = T.Translator(fwd, bwd, T.TranslationCache(tmp_path / "b.sqlite"), dec, 4).translate(SENTS, variants=2)
    assert a == b and len(a) == 2 * len(SENTS)
    assert any(a[(s, 0)] != a[(s, 1)] for s in SENTS)


def test_run_augment_rewrites_dataset(tiny, tmp_path):
    d = _dataset(tmp_path / "shards")
    before = ShardDataset(d).read_table().to_pylist()
    res = T.run_augment(d, _cfg(tiny, tmp_path, decoding=T.Decoding(max_new_tokens=12)))
    ds = ShardDataset(d, verify=True)
    m = ds.manifest
    assert m["config"] == {"x": 1} and m["label_names"] == ["A"] and m["notes"] == {"a": 1}
    assert m["counts"]["inputs_seen"] == 11 == m["counts"]["rows_written"] + m["counts"]["skipped"]
    assert m["augment"]["models"]["forward"].startswith("en-it@")
    assert m["augment"]["counts"]["unique_sentences"] == len(SENTS) and res.stats.sentences == 27
    assert ds.rejects()[0]["reason"] == "no findings or impression"
    after = ds.read_table().to_pylist()
    assert len(after) == len(before)
    for b, a in zip(before, after):
        assert {k: v for k, v in a.items() if not k.endswith("_bt")} == {
            k: v for k, v in b.items() if not k.endswith("_bt")
        }
        assert len(a["findings_bt"]) == 1
        assert len(a["impression_bt"]) == (1 if a["impression_sentences"] else 0)
        if "___" in a["findings"]:
            assert "___" in a["findings_bt"][0]
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["toy"]  # no temporary folder left
    # a second run comes from the cache and writes byte-identical parts
    parts = {p.name: _sha(p) for p in d.glob("data/*.parquet")}
    assert parts
    res2 = T.run_augment(d, _cfg(tiny, tmp_path, decoding=T.Decoding(max_new_tokens=12)))
    assert res2.stats.translated == 0 and res2.stats.cache_hits == len(SENTS)
    assert {p.name: _sha(p) for p in d.glob("data/*.parquet")} == parts


def test_run_augment_failure_keeps_old_dataset(tiny, tmp_path, monkeypatch):
    d = _dataset(tmp_path / "shards")
    files = {p.relative_to(d): _sha(p) for p in d.rglob("*") if p.is_file()}
    real = ShardWriter.write
    n = {"rows": 0}

    def dies(self, row):
        n["rows"] += 1
        if n["rows"] == 6:
            raise KeyboardInterrupt
        real(self, row)

    monkeypatch.setattr(ShardWriter, "write", dies)
    with pytest.raises(KeyboardInterrupt):
        T.run_augment(d, _cfg(tiny, tmp_path))
    monkeypatch.undo()
    assert {p.relative_to(d): _sha(p) for p in d.rglob("*") if p.is_file()} == files
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["toy"]


def test_recover_after_kill_between_renames(tiny, tmp_path):
    d = _dataset(tmp_path / "shards")
    tmp = tmp_path / "shards" / ".augment-toy"
    tmp.mkdir()
    shutil.move(str(d), str(tmp / "old"))  # the fallback swap was killed after its first rename
    with pytest.raises(FileNotFoundError):
        find_datasets(tmp_path / "shards")  # hidden work folders are never datasets
    T.run_augment(d, _cfg(tiny, tmp_path, decoding=T.Decoding(max_new_tokens=8)))
    assert ShardDataset(d, verify=True).manifest["augment"]["variants"] == 1
    assert not tmp.exists()


def test_missing_model_and_ct2_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(T.ModelNotAvailable, match=r"--forward-model DIR.*Helsinki-NLP/opus-mt-en-zz"):
        T.resolve_model("Helsinki-NLP/opus-mt-en-zz", "--forward-model")
    with pytest.raises(T.ModelNotAvailable, match="no such model folder"):
        T.resolve_model(str(tmp_path / "nope"), "--backward-model")
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    with pytest.raises(RuntimeError, match=r"pip install 'cxrkit\[ct2\]'"):
        T.backend._import_ct2()


def test_cli(tiny, demo_shards, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cxrprep.cli.app import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path / "shards"
    shutil.copytree(demo_shards, root)
    args = [
        "augment",
        str(root / "mimic-cxr"),
        "--forward-model",
        str(tiny[0]),
        "--backward-model",
        str(tiny[1]),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--max-new-tokens",
        "8",
    ]
    r = CliRunner().invoke(app, [*args, "--backend", "ct2", "--decoding", "sample", "--variants", "2"])
    assert r.exit_code == 0, r.output
    assert "de-dup ratio" in r.output and "inputs seen 24" in r.output
    rows = ShardDataset(root / "mimic-cxr").read_table(["findings_bt", "impression_bt"]).to_pylist()
    assert all(len(x["findings_bt"]) == 2 and len(x["impression_bt"]) == 2 for x in rows)
    r = CliRunner().invoke(app, [*args, "--variants", "2"])
    assert r.exit_code == 2 and "--variants" in r.output
    r = CliRunner().invoke(
        app,
        [
            "augment",
            str(root / "mimic-cxr"),
            "--forward-model",
            "Helsinki-NLP/opus-mt-en-zz",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert r.exit_code == 2 and "--forward-model" in r.output
    r = CliRunner().invoke(app, ["augment", str(tmp_path), *args[2:]])
    assert r.exit_code == 2 and "manifest.json" in r.output


def test_swap_without_renameat2(tiny, tmp_path, monkeypatch):
    d = _dataset(tmp_path / "shards")
    monkeypatch.setattr(shard_swap, "exchange", lambda a, b: False)  # e.g. a filesystem without RENAME_EXCHANGE
    T.run_augment(d, _cfg(tiny, tmp_path, decoding=T.Decoding(max_new_tokens=8)))
    assert ShardDataset(d, verify=True).manifest["augment"]["decoding"] == {"method": "greedy", "max_new_tokens": 8}
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["toy"]


def test_bfloat16_transformers_backend(tiny, tmp_path):
    """--compute-type bfloat16 runs the transformers model in bfloat16 (a faster CPU path without
    CTranslate2); its cache entries are kept apart from float32's, and ct2 refuses it with a clear message."""
    import torch

    fwd, bwd = (T.resolve_model(str(p), "--model") for p in tiny)
    f16, b16 = T.TransformersBackend(fwd, "cpu", "bfloat16"), T.TransformersBackend(bwd, "cpu", "bfloat16")
    assert f16.precision == "bfloat16" and next(f16.net.parameters()).dtype == torch.bfloat16
    out = f16.translate(SENTS[:3], T.Decoding(max_new_tokens=8), 0)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    cache = T.TranslationCache(tmp_path / "c.sqlite")
    tr16 = T.Translator(f16, b16, cache)
    tr32 = T.Translator(T.TransformersBackend(fwd, "cpu"), T.TransformersBackend(bwd, "cpu"), cache)
    assert tr16.setting != tr32.setting
    with pytest.raises(ValueError, match="bfloat16 needs --backend transformers"):
        _cfg(tiny, tmp_path, backend="ct2", compute_type="bfloat16")
