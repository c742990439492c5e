"""Benchmark: cxrkit back-translation (distinct sentences, length-sorted batches) vs the naive approach
(each report's text translated whole, per report, in corpus order, no de-duplication).

Both use the same opus-mt-sized Marian model (d_model 512, 6+6 layers, ~44M parameters, random weights,
SentencePiece vocabularies trained on the corpus so token counts are realistic), the same batch size and
the same decoding (greedy), with output lengths forced to the longest input of each batch, so both do
the same work per token (random weights would otherwise stop at arbitrary lengths).

The corpus mimics real repetition: a public corpus of 3,956 reports has 24,433 sentences of which
8,641 are distinct (2.83x); the generator below is tuned to about that ratio at that size.

Timing the full corpus both ways takes far longer than a shared 2-core machine allows, so both
approaches run on a uniform subsample of their own work (``--sample``: every k-th distinct sentence in
length order for cxrkit, every k-th report for the naive approach), and the full-corpus time is
extrapolated as time x (total items / sampled items). Throughput is reported as corpus sentences per
second of (extrapolated) wall time.

    .venv/bin/python bench/bench_translate.py                  # CPU, transformers and CTranslate2
    .venv/bin/python bench/bench_translate.py --bf16           # also cxrkit with the model in bfloat16 (CPU)
    .venv/bin/python bench/bench_translate.py --device cuda    # GPU (transformers, float16)
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "bench"))
from realistic_reports import STOCK_HEAD  # noqa: E402

SIDES = ["left", "right", "bilateral"]
SEVERITY = ["small", "moderate", "large", "trace", "mild"]
CHANGE = ["unchanged", "new", "increased", "decreased", "stable", "slightly larger", "improved"]
LOCATIONS = [
    "right upper lobe",
    "right middle lobe",
    "right lower lobe",
    "left upper lobe",
    "lingula",
    "left lower lobe",
    "left base",
    "right base",
    "retrocardiac region",
    "perihilar region",
]
FINDING = [
    "opacity",
    "consolidation",
    "atelectasis",
    "airspace disease",
    "nodular opacity",
    "scarring",
    "interstitial abnormality",
    "ground-glass opacity",
]
TUBES = ["Endotracheal tube", "Enteric tube", "Right internal jugular central venous catheter", "Left PICC line"]
ENDS = ["terminates", "ends", "has its tip"]
COMMON = [  # frequent sentences, drawn with Zipf-like weights
    *STOCK_HEAD,
    "No focal consolidation is seen.",
    "Hilar contours are normal.",
    "No acute osseous abnormality.",
    "The mediastinal and hilar contours are unremarkable.",
    "Median sternotomy wires are intact.",
    "Lungs are well expanded and clear.",
    "Mild degenerative changes of the thoracic spine.",
    "There is no pulmonary edema.",
    "Cardiac silhouette is mildly enlarged.",
    "No acute intrathoracic process.",
    "Pulmonary vascularity is normal.",
    "Low lung volumes.",
    "Lines and tubes are unchanged in position.",
    "Stable cardiomegaly.",
    "Mild pulmonary vascular congestion.",
    "No evidence of pneumonia.",
]


def _templated(r: random.Random, compound: int = 4) -> str:
    k = r.randrange(7 + compound)
    if k == 0:
        return f"{r.choice(SEVERITY).capitalize()} {r.choice(SIDES)} pleural effusion is {r.choice(CHANGE)}."
    if k == 1:
        return f"{r.choice(TUBES)} {r.choice(ENDS)} {r.randint(10, 80) / 10} cm above the carina."
    if k == 2:
        return (
            f"There is {r.choice(SEVERITY)} {r.choice(FINDING)} in the {r.choice(LOCATIONS)}, "
            f"which is {r.choice(CHANGE)} compared to the prior study."
        )
    if k == 3:
        return f"Compared to the prior radiograph from ___, the {r.choice(FINDING)} is {r.choice(CHANGE)}."
    if k == 4:
        return (
            f"A {r.randint(3, 45) / 10} cm {r.choice(['nodule', 'nodular opacity', 'mass'])} projects over the "
            f"{r.choice(LOCATIONS)}."
        )
    if k == 5:
        return (
            f"{r.choice(FINDING).capitalize()} in the {r.choice(LOCATIONS)} may reflect "
            f"{r.choice(['atelectasis', 'pneumonia', 'aspiration', 'scarring'])}."
        )
    if k == 6:
        return f"{r.choice(SEVERITY).capitalize()} {r.choice(FINDING)} at the {r.choice(LOCATIONS)}."
    # compound sentences: the long tail of distinct sentences that real reports have
    a, b = _templated(r, 0).rstrip("."), _templated(r, 0)
    return f"{a}, and {b[0].lower()}{b[1:]}"


def make_corpus(n_reports: int, seed: int = 0, p_common: float = 0.42) -> list[tuple[list[str], list[str]]]:
    """``n_reports`` (findings sentences, impression sentences) pairs, ~6 sentences a report."""
    r = random.Random(seed)
    weights = [1 / (i + 1) ** 0.8 for i in range(len(COMMON))]

    def sent() -> str:
        return r.choices(COMMON, weights)[0] if r.random() < p_common else _templated(r)

    return [
        ([sent() for _ in range(r.randint(3, 6))], [sent() for _ in range(r.randint(1, 2))]) for _ in range(n_reports)
    ]


def build_model(out: Path, corpus_text: str, vocab: int, seed: int = 0) -> tuple[Path, Path]:
    """Two opus-mt-sized random Marian models with vocabularies trained on ``corpus_text``."""
    from make_tiny_marian import SPECIALS, _build_one, _pieces, _train_spm

    spm = _train_spm(corpus_text, vocab, seed, model_type="bpe")
    pieces = sorted(set(_pieces(spm)) - set(SPECIALS) - {"<pad>", "<s>"})
    v = {p: i for i, p in enumerate([*SPECIALS, *pieces, "<pad>"])}
    size = dict(d_model=512, layers=6, ffn=2048, heads=8, max_len=512)
    return (
        _build_one(out / "en-it", spm, spm, v, seed, **size),
        _build_one(out / "it-en", spm, spm, v, seed + 1, **size),
    )


def run_naive(fwd, bwd, reports: list[str], batch: int, dec) -> float:
    """Seconds to back-translate whole reports, in order, ``batch`` at a time."""
    t = time.perf_counter()
    for i in range(0, len(reports), batch):
        chunk = reports[i : i + batch]
        bwd.translate(fwd.translate(chunk, dec, 0), dec, 1)
    return time.perf_counter() - t


def run_cxrkit(fwd, bwd, sentences: list[str], batch: int, dec, cache_dir: Path, batch_tokens: int) -> float:
    """Seconds for cxrkit's Translator (fresh cache: everything is translated) on ``sentences``."""
    from cxrprep.text.translate import TranslateStats, TranslationCache, Translator

    tr = Translator(
        fwd, bwd, TranslationCache(cache_dir / f"c{time.time_ns()}.sqlite"), dec, batch, batch_tokens=batch_tokens
    )
    st = TranslateStats()
    t = time.perf_counter()
    tr.translate(sentences, 1, st)
    dt = time.perf_counter() - t
    assert st.translated == len(set(sentences)), st
    tr.cache.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reports", type=int, default=3956)
    ap.add_argument("--batch-size", type=int, default=32, help="naive: reports per batch")
    ap.add_argument(
        "--batch-tokens",
        type=int,
        default=2048,
        help="cxrkit: padded tokens per batch (about what 32 whole reports take), at most 256 sentences",
    )
    ap.add_argument("--sample", type=float, default=0.04, help="fraction of each approach's work that is timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--no-ct2", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="also time cxrkit with the model in bfloat16 (CPU)")
    a = ap.parse_args()

    import torch

    from cxrprep.text.translate import CT2Backend, Decoding, TransformersBackend, resolve_model

    torch.set_num_threads(a.threads)
    corpus = make_corpus(a.reports)
    occ = [s for f, i in corpus for s in f + i]
    uniq = sorted(set(occ))
    reports = [" ".join(f + i) for f, i in corpus]
    print(
        f"corpus: {len(corpus):,} reports, {len(occ):,} sentences, {len(uniq):,} distinct "
        f"(de-dup ratio {len(occ) / len(uniq):.2f}x)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-translate-"))
    t0 = time.perf_counter()
    fdir, bdir = build_model(tmp / "model", "\n".join(occ), 600)
    fref, bref = resolve_model(str(fdir), "fwd"), resolve_model(str(bdir), "bwd")
    fwd, bwd = TransformersBackend(fref, a.device), TransformersBackend(bref, a.device)
    n_params = sum(p.numel() for p in fwd.net.parameters())
    print(
        f"model: d_model 512, 6+6 layers, {n_params / 1e6:.1f}M parameters, vocab {fwd.tok.vocab_size:,}, "
        f"{fwd.precision} on {a.device}, built in {time.perf_counter() - t0:.0f}s; threads {a.threads}"
    )
    dec = Decoding(max_new_tokens=511, force_length=True)

    # uniform subsamples of each approach's own work
    lens = fwd.token_lengths(uniq)
    by_len = [s for _, s in sorted(zip(lens, uniq))]
    k = max(1, round(1 / a.sample))
    sent_sample = by_len[::k]
    rep_sample = reports[::k]
    rl = fwd.token_lengths(reports)
    print(
        f"tokens: sentence mean {sum(lens) / len(lens):.1f}, report mean {sum(rl) / len(rl):.1f}; timing "
        f"1/{k} of each: {len(sent_sample)} distinct sentences, {len(rep_sample)} reports "
        f"(naive: {a.batch_size} reports per batch; cxrkit: up to {a.batch_tokens} padded tokens per batch; greedy, "
        f"output length forced to the batch's longest input)"
    )

    scale_r, scale_s = len(reports) / len(rep_sample), len(uniq) / len(sent_sample)
    naive_s = run_naive(fwd, bwd, rep_sample, a.batch_size, dec) * scale_r
    ours_s = run_cxrkit(fwd, bwd, sent_sample, 256, dec, tmp, a.batch_tokens) * scale_s
    rows = [("naive (whole reports), transformers", naive_s), ("cxrkit, transformers", ours_s)]
    if a.bf16 and a.device == "cpu":  # the same pipeline with the model in bfloat16 (--compute-type bfloat16)
        fb, bb = TransformersBackend(fref, "cpu", "bfloat16"), TransformersBackend(bref, "cpu", "bfloat16")
        rows.append(
            ("cxrkit, transformers bfloat16", run_cxrkit(fb, bb, sent_sample, 256, dec, tmp, a.batch_tokens) * scale_s)
        )
        del fb, bb
    if not a.no_ct2 and a.device == "cpu":
        cf, cb = CT2Backend(fref, tmp, "cpu", "int8", a.threads), CT2Backend(bref, tmp, "cpu", "int8", a.threads)
        rows.append(
            ("naive (whole reports), CTranslate2 int8", run_naive(cf, cb, rep_sample, a.batch_size, dec) * scale_r)
        )
        rows.append(
            ("cxrkit, CTranslate2 int8", run_cxrkit(cf, cb, sent_sample, 256, dec, tmp, a.batch_tokens) * scale_s)
        )
    print(f"\n{'approach':<42}{'full-corpus s (extrap.)':>24}{'sentences/s':>14}{'vs naive transformers':>23}")
    for name, s in rows:
        print(f"{name:<42}{s:>24.1f}{len(occ) / s:>14.1f}{naive_s / s:>22.1f}x")
    print(f"\nsame backend, cxrkit vs naive: transformers {naive_s / ours_s:.2f}x", end="")
    if len(rows) >= 4 and rows[-1][0].startswith("cxrkit, CTranslate2"):
        print(
            f", CTranslate2 {rows[-2][1] / rows[-1][1]:.2f}x; CTranslate2 int8 vs transformers in the cxrkit "
            f"pipeline: {ours_s / rows[-1][1]:.2f}x"
        )
    else:
        print()


if __name__ == "__main__":
    main()
