"""Loading real towers with from_pretrained from local directories (tiny models saved in the test)."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_layers

from cxrtrain.model import _minilm_path, create_model


def test_resnet_bert_from_local_dirs(tmp_path):
    from transformers import ResNetConfig, ResNetModel

    ResNetModel(
        ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    ).save_pretrained(tmp_path / "resnet")
    m = create_model(
        "cxr-clip-r50",
        image_encoder=str(tmp_path / "resnet"),
        text_encoder=_minilm_path(),
        image_size=32,
        max_text_len=16,
    )
    assert m.image_kind == "resnet" and len(m.image_blocks()) == 2 and len(m.text_blocks()) == 6
    x = m.encode_image(torch.randn(2, 3, 32, 32))
    t = m.encode_text(**m.tokenize(["No effusion.", "Cardiomegaly."]))
    assert x.shape == t.shape == (2, 512)


def test_clip_from_local_dir_keeps_its_projections(tmp_path):
    from transformers import AutoTokenizer, CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=tiny_layers(32, vocab_size=30522, max_position_embeddings=32, eos_token_id=102),
        vision_config=tiny_layers(32, image_size=32, patch_size=8),
        projection_dim=24,
    )
    torch.manual_seed(0)
    hf = CLIPModel(cfg)
    hf.save_pretrained(tmp_path / "clip")
    AutoTokenizer.from_pretrained(_minilm_path()).save_pretrained(tmp_path / "clip")
    m = create_model(
        "clip-b32",
        image_encoder=str(tmp_path / "clip"),
        text_encoder=str(tmp_path / "clip"),
        image_size=32,
        embed_dim=24,
        max_text_len=32,
    )
    assert torch.equal(m.image_proj.weight, hf.visual_projection.weight)
    assert torch.equal(m.text_proj.weight, hf.text_projection.weight)
    assert float(m.logit_scale.detach()) == pytest.approx(float(hf.logit_scale.detach()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(hf.visual_projection(hf.vision_model(pixel_values=x).pooler_output), dim=-1)
        assert torch.allclose(m.encode_image(x), ref, atol=1e-5)
    assert len(m.image_blocks()) == 2 and len(m.text_blocks()) == 2


def test_missing_model_offline_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        RuntimeError, match="HF_HUB_OFFLINE=1 is set and there is no local copy.*--set model.image_encoder"
    ):
        create_model("cxr-clip-swin")
