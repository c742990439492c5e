"""Towers as CXR-CLIP: text pooling cls/mean/eos, image pooling, projection bias, temperature cap; text pairing."""

from __future__ import annotations

import math
import random

import pytest
import torch
from helpers import tiny_layers

from cxrtrain.config import TrainConfig
from cxrtrain.data import pick_texts
from cxrtrain.model import create_model, model_config, pool_image, pool_text


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("tiny", proj_bias=True).eval()


def test_text_pooling_by_hand(tiny):
    tok = tiny.tokenize(["No pneumothorax.", "There is a small left pleural effusion, unchanged from before."])
    ids, mask = tok["input_ids"], tok["attention_mask"]
    assert mask[0].sum() < mask[1].sum()  # the first text is padded
    with torch.no_grad():
        h = tiny.text_tower(input_ids=ids, attention_mask=mask).last_hidden_state
        n0, n1 = int(mask[0].sum()), int(mask[1].sum())
        by_hand = {
            "cls": torch.stack([h[0, 0], h[1, 0]]),
            "mean": torch.stack([h[0, :n0].mean(0), h[1, :n1].mean(0)]),
            "eos": torch.stack([h[0, n0 - 1], h[1, n1 - 1]]),  # the [SEP] token: the last real one
        }
        assert ids[0, n0 - 1] == tiny.tokenizer.sep_token_id
        for pooling, want in by_hand.items():
            got = pool_text(h, mask, pooling)
            assert torch.allclose(got, want, atol=1e-6), pooling
            m = create_model(tiny.config.__class__(**{**tiny.config.__dict__, "text_pooling": pooling}))
            m.load_state_dict(tiny.state_dict())
            m.eval()
            assert torch.allclose(m.text_features(ids, mask), want, atol=1e-5), pooling


def test_eos_equals_clip_pooled_output():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    m = CLIPTextModel(
        CLIPTextConfig(**tiny_layers(16, vocab_size=50, max_position_embeddings=12, eos_token_id=49))
    ).eval()
    ids = torch.tensor([[1, 5, 7, 49, 0, 0], [1, 3, 4, 8, 9, 49]])
    mask = (torch.arange(6) < torch.tensor([[4], [6]])).long()
    with torch.no_grad():
        out = m(input_ids=ids, attention_mask=mask)
    assert torch.allclose(pool_text(out.last_hidden_state, mask, "eos"), out.pooler_output, atol=1e-6)


def test_image_pooling_by_hand():
    from transformers import SwinConfig, SwinModel

    torch.manual_seed(0)
    swin = SwinModel(
        SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=2)
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        o = swin(pixel_values=x)
    h = o.last_hidden_state  # [B, tokens, C], after the final layer norm
    assert torch.allclose(pool_image(o, "pooler"), h.mean(1), atol=1e-6)  # Swin's pooler: token average
    assert torch.allclose(pool_image(o, "mean"), h.mean(1), atol=1e-6)
    assert torch.equal(pool_image(o, "first"), h[:, 0])  # CXR-CLIP's Swin choice
    tiny = create_model("tiny", image_pooling="first").eval()
    with torch.no_grad():
        fm = tiny.image_tower(pixel_values=torch.randn(2, 3, 64, 64))
    assert torch.allclose(pool_image(fm, "pooler"), fm.last_hidden_state.mean((2, 3)), atol=1e-6)
    assert torch.equal(pool_image(fm, "first"), fm.last_hidden_state[:, :, 0, 0])


def test_presets_projection_bias_and_temperature_cap():
    for p in ("cxr-clip-r50", "cxr-clip-swin"):
        c = model_config(p)
        assert (c.text_pooling, c.proj_bias, c.min_temperature, c.image_mean, c.image_std) == (
            "eos",
            True,
            None,
            (0.5,) * 3,
            (0.5,) * 3,
        )
    assert model_config("cxr-clip-swin").image_pooling == "first"
    assert model_config("cxr-clip-r50").image_pooling == "pooler"
    assert model_config("clip-b32").proj_bias is False
    m = create_model("tiny", proj_bias=True)
    assert m.image_proj.bias is not None and m.text_proj.bias is not None
    assert create_model("tiny").image_proj.bias is None
    with torch.no_grad():
        m.logit_scale.fill_(math.log(1000.0))
    assert float(m.scale().detach()) == pytest.approx(100.0)  # capped at 1 / min_temperature
    m.clamp_temperature_()
    assert float(m.logit_scale.detach()) == pytest.approx(math.log(100.0))
    free = create_model("tiny", min_temperature=None)
    with torch.no_grad():
        free.logit_scale.fill_(math.log(1000.0))
    free.clamp_temperature_()
    assert float(free.scale().detach()) == pytest.approx(1000.0, rel=1e-5)  # no cap (CXR-CLIP)
    with pytest.raises(ValueError, match="min_temperature"):
        model_config("tiny", min_temperature=0.5)
    with pytest.raises(ValueError, match="image_pooling"):
        model_config("tiny", image_pooling="max")


# -- text pairing ----------------------------------------------------------------------------------
def _row(**kw):
    base = dict(
        findings=None,
        impression=None,
        findings_sentences=[],
        impression_sentences=[],
        findings_bt=[],
        impression_bt=[],
        prompts=[],
    )
    return {**base, **kw}


def test_two_texts_differ_whenever_an_alternative_exists():
    cfg = TrainConfig()
    cases = [
        _row(
            impression="No acute process.",
            impression_sentences=["No acute process."],
            impression_bt=["No acute disease."],
        ),
        _row(findings="Lungs clear. Heart normal.", findings_sentences=["Lungs clear.", "Heart normal."]),
        _row(
            findings="A.",
            findings_sentences=["A."],
            impression="B.",
            impression_sentences=["B."],
            findings_bt=["B."],
            impression_bt=["A."],
        ),
        _row(prompts=["No pneumothorax.", "No pneumothorax.", "There is no pneumothorax."]),
    ]
    for row in cases:
        for s in range(200):
            for c in (cfg, TrainConfig(bt_prob=1.0), TrainConfig(shuffle_sentences=True)):
                a, b = pick_texts(row, random.Random(s), c)
                assert a != b, (row, a)
    # the original is paired with its back-translation, as CXR-CLIP
    pairs = {pick_texts(cases[0], random.Random(s), cfg) for s in range(50)}
    assert {frozenset(p) for p in pairs} == {frozenset({"No acute process.", "No acute disease."})}
    # no alternative at all: the same text twice
    only = _row(impression="No acute process.", impression_sentences=["No acute process."])
    assert pick_texts(only, random.Random(0), cfg) == ("No acute process.", "No acute process.")


def test_sentence_sampling_and_shuffle_apply_to_prompt_reports():
    row = _row(
        prompts=[
            "Cardiomegaly. No pneumothorax. No pleural effusion. Possible atelectasis.",
            "Heart size is enlarged. No pneumothorax is seen. No effusion is seen. Atelectasis is not excluded.",
        ]
    )
    samp = TrainConfig(sentence_sampling=True, sentences_min=1, sentences_max=2)
    lens = set()
    for s in range(100):
        a, b = pick_texts(row, random.Random(s), samp)
        assert a != b
        lens |= {a.count(". ") + 1, b.count(". ") + 1}
    assert lens == {1, 2}
    shuf = TrainConfig(shuffle_sentences=True)
    firsts = {pick_texts(row, random.Random(s), shuf)[0].split(". ")[0] for s in range(60)}
    assert len(firsts) > 3  # sentence order varies


def test_validation_texts_are_deterministic():
    cfg = TrainConfig(bt_prob=1.0, shuffle_sentences=True, sentence_sampling=True)
    rep = _row(
        findings="F1. F2.",
        findings_sentences=["F1.", "F2."],
        impression="I.",
        impression_sentences=["I."],
        findings_bt=["Fb."],
        impression_bt=["Ib."],
    )
    prm = _row(prompts=["P1.", "P2.", "P3."])
    for row, want in ((rep, ("F1. F2.", "I.")), (prm, ("P1.", "P2."))):
        assert {pick_texts(row, random.Random(s), cfg, train=False) for s in range(20)} == {want}
