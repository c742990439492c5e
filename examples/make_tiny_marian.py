"""Build a tiny, random-weight English->Italian and Italian->English Marian pair for tests and the demo.

The directories have exactly the layout of Helsinki-NLP/opus-mt-en-it (config.json, model weights,
source.spm, target.spm, vocab.json, tokenizer_config.json), so ``cxrprep augment`` loads them with
the same code path as the real models. The weights are random: the translations are nonsense, but
shapes, tokenisation, batching, caching and both backends are exercised for real.

Deterministic: the same seed gives the same SentencePiece models, vocabulary and weights.

Example::

    .venv/bin/python examples/make_tiny_marian.py --out models/tiny-marian
    cxrprep augment shards/mimic-cxr --backtranslate it \\
        --forward-model models/tiny-marian/en-it --backward-model models/tiny-marian/it-en
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

# Enough radiology-like text for SentencePiece to learn a few hundred pieces; the Italian side is a
# rough rendering of the same sentences so the target vocabulary has Italian pieces.
_EN = """The heart size is normal. The mediastinal and hilar contours are unremarkable.
There is a small left pleural effusion. No pneumothorax is seen. Lungs are clear.
Mild pulmonary edema is present. There is right lower lobe consolidation concerning for pneumonia.
Interval placement of a right internal jugular central venous catheter with tip in the mid SVC.
Endotracheal tube terminates 4.5 cm above the carina. Nasogastric tube courses below the diaphragm.
Moderate cardiomegaly is stable compared to ___. Bibasilar atelectasis. No acute cardiopulmonary process.
A 2.5 cm nodule is seen in the right upper lobe. Degenerative changes of the thoracic spine.
Patchy opacity at the left base may reflect atelectasis or aspiration. Small bilateral effusions.
The cardiomediastinal silhouette is within normal limits. No focal consolidation, effusion or pneumothorax.
Median sternotomy wires and mediastinal clips are intact. Low lung volumes with crowding of vessels.
"""
_IT = """Le dimensioni del cuore sono normali. I contorni mediastinici e ilari sono nella norma.
C'è un piccolo versamento pleurico sinistro. Non si osserva pneumotorace. I polmoni sono liberi.
È presente un lieve edema polmonare. C'è un consolidamento del lobo inferiore destro sospetto per polmonite.
Posizionamento di un catetere venoso centrale giugulare interno destro con punta nella vena cava superiore.
Il tubo endotracheale termina 4,5 cm sopra la carena. Il sondino nasogastrico passa sotto il diaframma.
La cardiomegalia moderata è stabile rispetto a ___. Atelettasia bibasale. Nessun processo cardiopolmonare acuto.
Si osserva un nodulo di 2,5 cm nel lobo superiore destro. Alterazioni degenerative della colonna toracica.
Un'opacità a chiazze alla base sinistra può riflettere atelettasia o aspirazione. Piccoli versamenti bilaterali.
La silhouette cardiomediastinica è nei limiti della norma. Nessun consolidamento focale, versamento o pneumotorace.
I fili della sternotomia mediana e le clip mediastiniche sono intatti. Bassi volumi polmonari.
"""

SPECIALS = ("</s>", "<unk>")  # ids 0 and 1, as in opus-mt vocabularies; <pad> is the last id


def _train_spm(text: str, vocab_size: int, seed: int, model_type: str = "unigram") -> bytes:
    """Train a unigram SentencePiece model on ``text`` and return its serialized bytes (``seed`` is
    unused: with one thread and no shuffling the trainer is already deterministic)."""
    import sentencepiece as spm

    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # Repeat lines so the trainer has enough sentences; shuffling off + one thread = deterministic.
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 8),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        num_threads=1,
        shuffle_input_sentence=False,
        seed_sentencepiece_size=10000,
        hard_vocab_limit=False,
        minloglevel=2,
        bos_id=-1,
        eos_id=2,
        unk_id=1,
        pad_id=-1,
    )
    return buf.getvalue()


def _pieces(model: bytes) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def _build_one(
    out: Path,
    src_spm: bytes,
    tgt_spm: bytes,
    vocab: dict[str, int],
    seed: int,
    d_model: int,
    layers: int,
    ffn: int,
    heads: int,
    max_len: int,
) -> Path:
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "source.spm").write_bytes(src_spm)
    (out / "target.spm").write_bytes(tgt_spm)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=1) + "\n")
    pad = vocab["<pad>"]
    tok = MarianTokenizer(
        vocab=str(out / "vocab.json"),
        source_spm=str(out / "source.spm"),
        target_spm=str(out / "target.spm"),
        source_lang="en",
        target_lang="it",
        model_max_length=max_len,
    )
    tok.save_pretrained(out)
    both = (("layers", layers), ("attention_heads", heads), ("ffn_dim", ffn))  # the same for encoder and decoder
    cfg = MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        d_model=d_model,
        **{f"{side}_{name}": value for side in ("encoder", "decoder") for name, value in both},
        max_position_embeddings=max_len,
        pad_token_id=pad,
        eos_token_id=0,
        decoder_start_token_id=pad,
        forced_eos_token_id=0,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        activation_function="swish",
        static_position_embeddings=True,
    )
    torch.manual_seed(seed)
    model = MarianMTModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than the default init so greedy outputs vary by input
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
        # CTranslate2 starts the decoder from the pad embedding and assumes that row is zero.
        model.get_input_embeddings().weight[pad].zero_()
    model.generation_config.max_length = max_len
    model.generation_config.num_beams = 1
    model.save_pretrained(out)
    return out


def build_tiny_marian(
    out_dir: Path,
    seed: int = 0,
    *,
    d_model: int = 32,
    layers: int = 2,
    ffn: int = 64,
    heads: int = 4,
    max_len: int = 64,
) -> tuple[Path, Path]:
    """Write ``out_dir/en-it`` and ``out_dir/it-en`` (tiny random Marian models); return both paths.

    ``max_len`` is the model's input limit in tokens (max_position_embeddings), kept small so tests
    can exercise truncation. Raises ImportError if transformers/sentencepiece/torch are missing."""
    out_dir = Path(out_dir)
    en = _train_spm(_EN, 200, seed)
    it = _train_spm(_IT, 200, seed)
    pieces = sorted((set(_pieces(en)) | set(_pieces(it))) - set(SPECIALS) - {"<pad>", "<s>"})
    vocab = {p: i for i, p in enumerate([*SPECIALS, *pieces, "<pad>"])}
    fwd = _build_one(out_dir / "en-it", en, it, vocab, seed, d_model, layers, ffn, heads, max_len)
    bwd = _build_one(out_dir / "it-en", it, en, vocab, seed + 1, d_model, layers, ffn, heads, max_len)
    return fwd, bwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("models/tiny-marian"), help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    try:
        from cxrprep.cli.quiet import quiet_third_party

        quiet_third_party()  # no sacremoses advice or "Writing model shards" bars in logs
    except ImportError:  # run without cxrkit on the path
        pass
    fwd, bwd = build_tiny_marian(a.out, a.seed)
    print(f"forward model  {fwd}\nbackward model {bwd}")


if __name__ == "__main__":
    main()
