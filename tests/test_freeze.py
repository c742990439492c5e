"""Freezing that freezes: train_*_blocks: 0 leaves no parameter of that tower trainable (issue 21)."""

from __future__ import annotations

import pytest
import torch

from cxrtrain.model import create_model, set_trainable, trainable_line, trainable_parts

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return create_model("tiny")


def _trainable(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_zero_text_blocks_freeze_the_whole_text_tower(tiny):
    set_trainable(tiny, None, 0)
    assert _trainable(tiny.text_tower) == 0
    assert _trainable(tiny.image_tower) == sum(p.numel() for p in tiny.image_tower.parameters())
    assert all(p.requires_grad for p in (*tiny.text_proj.parameters(), tiny.logit_scale))
    line = trainable_line(tiny)
    assert "text tower 0 of" in line and "image tower" in line and "projections+temperature" in line


def test_zero_image_blocks_freeze_the_image_tower_and_norms_only_on_request(tiny):
    set_trainable(tiny, 0, 0)
    assert _trainable(tiny.image_tower) == 0 and _trainable(tiny.text_tower) == 0
    set_trainable(tiny, 0, 0, frozen_norms=True)
    norms = [m for m in tiny.text_tower.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and _trainable(tiny.text_tower) == sum(_trainable(m) for m in norms) > 0


def test_partial_blocks_train_the_last_blocks_and_norms(tiny):
    set_trainable(tiny, None, 1)
    last = tiny.text_blocks()[-1]
    first = tiny.text_blocks()[0]
    assert _trainable(last) == sum(p.numel() for p in last.parameters())
    assert 0 < _trainable(first) < sum(p.numel() for p in first.parameters())  # its LayerNorms only
    parts = trainable_parts(tiny)
    assert parts["text tower"][0] < parts["text tower"][1]


def test_torchvision_tower_blocks_freeze():
    m = create_model("tiny", image_encoder="torchvision/resnet50", random_init=True)
    assert m.image_kind == "tv-resnet" and len(m.image_blocks()) == 16
    set_trainable(m, 0, 0)
    assert _trainable(m.image_tower) == 0
    set_trainable(m, 1, 0)
    assert _trainable(m.image_tower) > _trainable(m.image_blocks()[-1]) > 0  # the last block + every BatchNorm
    x = torch.randn(2, 3, 64, 64)
    assert m.encode_image(x).shape == (2, m.config.embed_dim)
