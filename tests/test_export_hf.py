"""cxrtrain export --format hf: transformers' own classes load the folder and score as cxrkit does; models they
cannot hold exactly are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cxrtrain.cli.app import app

torch.set_num_threads(1)
runner = CliRunner()
TEXTS = ["Small right pleural effusion.", "No acute process.", "Heart size is enlarged, with mild edema."]


def _tok():
    from transformers import AutoTokenizer

    from cxrtrain.model import _minilm_path

    return AutoTokenizer.from_pretrained(_minilm_path())


def _tiny_clip_dir(path, tok):
    """A tiny transformers CLIPModel (random weights) + MiniLM's tokenizer; its EOS is the tokenizer's [SEP]."""
    from transformers import CLIPConfig, CLIPModel

    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    text = dict(
        common, vocab_size=tok.vocab_size, max_position_embeddings=64, eos_token_id=tok.sep_token_id, pad_token_id=0
    )
    conf = CLIPConfig(text_config=text, vision_config=dict(common, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(1)
    CLIPModel(conf).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _tiny_vit_dir(path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(2)
    conf = ViTConfig(
        image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48
    )
    ViTModel(conf).save_pretrained(path)
    return str(path)


def _tiny_swin_dir(path):
    from transformers import SwinConfig, SwinModel

    torch.manual_seed(2)
    conf = SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4)
    SwinModel(conf).save_pretrained(path)
    return str(path)


def _checkpoint(path, logit_scale=None, **model):
    from cxrtrain.checkpoint import save_checkpoint
    from cxrtrain.config import TrainConfig
    from cxrtrain.model import create_model, model_config

    cfg = model_config("tiny", image_size=32, embed_dim=16, max_text_len=32, **model)
    m = create_model(cfg)
    torch.manual_seed(3)
    with torch.no_grad():  # projections away from their init, so a dropped or swapped weight shows
        for p in (*m.image_proj.parameters(), *m.text_proj.parameters()):
            p.normal_(0, 0.3)
        if logit_scale is not None:
            m.logit_scale.fill_(logit_scale)
    save_checkpoint(path, m, TrainConfig(model=cfg))
    return path


def _cxrkit_logits(ck, pixels, texts):
    from cxrtrain.checkpoint import load_checkpoint

    model, _ = load_checkpoint(ck)
    with torch.no_grad():
        return model.scale() * model.encode_image(pixels) @ model.encode_text(**model.tokenize(texts)).T


def _hf_logits(cls, d, pixels, texts):
    from transformers import AutoTokenizer

    hf = cls.from_pretrained(d).eval()
    t = AutoTokenizer.from_pretrained(d)(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return hf(pixel_values=pixels, input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits_per_image


def _export(ck, out):
    return runner.invoke(app, ["export", str(ck), "--out", str(out), "--format", "hf"])


@pytest.mark.parametrize("tower", ["vit", "swin"])
def test_vit_or_swin_with_clip_text_loads_as_vision_text_dual_encoder(tmp_path, tower):
    from PIL import Image
    from transformers import AutoImageProcessor, VisionTextDualEncoderModel

    tok = _tok()
    clip = _tiny_clip_dir(tmp_path / "clip", tok)
    ck = _checkpoint(
        tmp_path / "ck",
        image_encoder=(_tiny_vit_dir if tower == "vit" else _tiny_swin_dir)(tmp_path / tower),
        text_encoder=clip,
        text_pooling="eos",
    )
    r = _export(ck, tmp_path / "hf")
    assert r.exit_code == 0, r.output
    assert "VisionTextDualEncoderModel" in r.output
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    ours = _cxrkit_logits(ck, pixels, TEXTS)
    theirs = _hf_logits(VisionTextDualEncoderModel, tmp_path / "hf", pixels, TEXTS)
    assert ours.shape == theirs.shape == (3, 3)
    assert torch.allclose(ours, theirs, atol=1e-5), (ours - theirs).abs().max()
    assert ours.std() > 0.01  # the scores are not trivially equal
    proc = AutoImageProcessor.from_pretrained(tmp_path / "hf")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56), dtype=np.uint8))
    assert tuple(proc(images=img, return_tensors="pt")["pixel_values"].shape) == (1, 3, 32, 32)


def test_clip_pair_loads_as_clip_model_with_capped_scale(tmp_path):
    from transformers import CLIPModel

    clip = _tiny_clip_dir(tmp_path / "clip", _tok())
    # a learnable scale above the cap (log 100): cxrkit multiplies by 100, and so must the export
    ck = _checkpoint(tmp_path / "ck", logit_scale=5.0, image_encoder=clip, text_encoder=clip, text_pooling="eos")
    r = _export(ck, tmp_path / "hf")
    assert r.exit_code == 0, r.output
    assert "CLIPModel" in r.output
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    ours = _cxrkit_logits(ck, pixels, TEXTS)
    hf = CLIPModel.from_pretrained(tmp_path / "hf")
    assert abs(float(hf.logit_scale.detach().exp()) - 100.0) < 1e-3
    assert torch.allclose(ours, _hf_logits(CLIPModel, tmp_path / "hf", pixels, TEXTS), atol=1e-5)


@pytest.mark.parametrize(
    "model,named",
    [
        (dict(text_encoder="config:tiny-bert", text_pooling="cls"), "pooler_output"),
        (dict(proj_bias=True, text_pooling="eos"), "proj_bias"),
        (dict(text_pooling="mean"), "'mean'"),
    ],
)
def test_refused_when_hf_would_score_differently(tmp_path, model, named):
    clip = _tiny_clip_dir(tmp_path / "clip", _tok())
    model = {"image_encoder": _tiny_vit_dir(tmp_path / "vit"), "text_encoder": clip, **model}
    ck = _checkpoint(tmp_path / "ck", **model)
    r = _export(ck, tmp_path / "hf")
    assert r.exit_code == 2, r.output
    line = r.output.strip()
    assert "\n" not in line and named in line and "--format cxrkit" in line, line
    assert not (tmp_path / "hf").exists() and not (tmp_path / ".tmp-hf").exists()


def test_resnet_image_tower_refused(tmp_path):
    ck = _checkpoint(tmp_path / "ck", text_encoder=_tiny_clip_dir(tmp_path / "clip", _tok()), text_pooling="eos")
    r = _export(ck, tmp_path / "hf")  # the tiny preset's transformers ResNet
    assert r.exit_code == 2 and "ResNet" in r.output and "--format cxrkit" in r.output, r.output


def test_imported_chexzero_run_loads_as_clip_model(tmp_path):
    """A CheXzero checkpoint (OpenAI CLIP layout) imported by cxrtrain import: CLIP's own tokenizer, whose EOS
    is the largest id, and OpenAI's ViT; the export scores as the imported run."""
    from test_import import _half_some, _import, tiny_openai_clip
    from transformers import CLIPModel

    _, ref = tiny_openai_clip(seed=4)
    torch.save(_half_some(ref.state_dict()), tmp_path / "chexzero.pt")
    assert _import("chexzero", tmp_path / "chexzero.pt", tmp_path / "run").exit_code == 0
    r = _export(tmp_path / "run", tmp_path / "hf")
    assert r.exit_code == 0 and "CLIPModel" in r.output, r.output
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    texts = [*TEXTS, "a much longer sentence " * 30]  # truncated at the context length
    ours = _cxrkit_logits(tmp_path / "run", pixels, texts)
    assert torch.allclose(ours, _hf_logits(CLIPModel, tmp_path / "hf", pixels, texts), atol=1e-5)
