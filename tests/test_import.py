"""cxrtrain import: each format's random-weight checkpoint in its original key layout and file format,
imported and compared with an independent reference forward pass on the same weights and images."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

torch.set_num_threads(1)
RUN = CliRunner()


def _openai_clip_module():
    """OpenAI's clip/model.py from the openai-clip package, loaded by path (its package __init__ imports
    torchvision, which is not installed here); the reference, independent of the conversion code."""
    spec = importlib.util.find_spec("clip")
    if spec is None:
        pytest.skip("openai-clip is not installed (pip install --no-deps openai-clip)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.py"
    m_spec = importlib.util.spec_from_file_location("openai_clip_model_ref", path)
    mod = importlib.util.module_from_spec(m_spec)
    m_spec.loader.exec_module(mod)
    return mod


def tiny_openai_clip(seed: int = 0):
    ref = _openai_clip_module()
    torch.manual_seed(seed)
    # embed_dim, image_resolution, vision_layers, vision_width, patch, context_length, vocab, text width/heads/layers
    model = ref.CLIP(32, 32, 2, 64, 8, 77, 49408, 64, 1, 2).eval()
    with torch.no_grad():  # spread the weights beyond OpenAI's small init so differences would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.logit_scale.fill_(math.log(1 / 0.05))
    return ref, model


def _half_some(sd: dict) -> dict:
    """The released CheXzero files mix fp16 and fp32 tensors (clip.load's convert_weights halves the
    conv/linear/attention weights); do the same to the test file."""
    return {
        k: (v.half() if (k.endswith("weight") and v.dim() >= 2) or k.endswith("proj") else v) for k, v in sd.items()
    }


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


TEXTS = ["No acute cardiopulmonary process.", "Small left pleural effusion.", "cardiomegaly"]


def _import(fmt: str, ckpt: Path, out: Path, *extra: str):
    from cxrtrain.cli.app import app

    return RUN.invoke(app, ["import", fmt, str(ckpt), "--out", str(out), *extra])


def _compare(model, ref_img: torch.Tensor, ref_txt: torch.Tensor, ref_scale: float, pixels, tok) -> None:
    with torch.no_grad():
        img = model.encode_image(pixels)
        txt = model.encode_text(**tok)
        logits = model.scale() * img @ txt.T
    ri, rt = F.normalize(ref_img.float(), dim=-1), F.normalize(ref_txt.float(), dim=-1)
    assert F.cosine_similarity(img, ri).min() >= 0.9999
    assert F.cosine_similarity(txt, rt).min() >= 0.9999
    ref_logits = ref_scale * ri @ rt.T
    assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=0)
    assert abs(float(model.scale()) - ref_scale) < 1e-4 * ref_scale


def test_chexzero_matches_openai_clip_forward(tmp_path):
    from cxrtrain.train import load_checkpoint

    _, ref = tiny_openai_clip()
    sd = _half_some(ref.state_dict())
    torch.save(sd, tmp_path / "best_64_5e-05_original_22000_0.864.pt")
    ref.load_state_dict(sd)  # the reference runs on the same (fp16-rounded) weights
    r = _import("chexzero", tmp_path / "best_64_5e-05_original_22000_0.864.pt", tmp_path / "run")
    assert r.exit_code == 0, r.output
    model, conf = load_checkpoint(tmp_path / "run")
    assert conf["model"]["image_size"] == 32 and conf["model"]["min_temperature"] is None
    assert abs(conf["model"]["image_mean"][0] - 101.48761 / 255) < 1e-9
    pixels = _images(3, 32)
    tok = model.tokenize(TEXTS)
    # OpenAI's tokens: the same ids zero-padded to the context length (its EOT is the sequence's argmax)
    ids = torch.zeros(len(TEXTS), 77, dtype=torch.long)
    for i, (row, m) in enumerate(zip(tok["input_ids"], tok["attention_mask"])):
        ids[i, : int(m.sum())] = row[m.bool()]
    assert int(ids[0, 0]) == 49406 and int(ids.max()) == 49407
    with torch.no_grad():
        _compare(model, ref.encode_image(pixels), ref.encode_text(ids), float(ref.logit_scale.exp()), pixels, tok)
    rec = json.loads((tmp_path / "run" / "import.json").read_text())
    assert rec["format"] == "chexzero" and "float16" in rec["source_dtypes"] and "float32" in rec["source_dtypes"]
