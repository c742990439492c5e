"""torchvision-layout ResNet-50 (cxrtrain/towers/tv_resnet.py): torchvision's exact keys and shapes, and the
same features as an independent implementation (transformers' ResNetModel, random weights, keys mapped)."""

from __future__ import annotations

import pytest
import torch

from cxrtrain.towers.tv_resnet import load_torchvision_state_dict, resnet50

torch.set_num_threads(1)


def _torchvision_shapes() -> dict[str, tuple]:
    """torchvision.models.resnet50's state-dict keys and shapes, written out from its published layout
    (torchvision/models/resnet.py: Bottleneck blocks [3, 4, 6, 3], widths 64..512, expansion 4)."""
    shapes: dict[str, tuple] = {}

    def bn(name: str, c: int) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{suffix}"] = (c,)
        shapes[f"{name}.num_batches_tracked"] = ()

    shapes["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    in_ch = 64
    for s, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for b in range(blocks):
            p = f"layer{s + 1}.{b}"
            shapes[f"{p}.conv1.weight"] = (width, in_ch, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn2", width)
            shapes[f"{p}.conv3.weight"] = (4 * width, width, 1, 1)
            bn(f"{p}.bn3", 4 * width)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (4 * width, in_ch, 1, 1)
                bn(f"{p}.downsample.1", 4 * width)
            in_ch = 4 * width
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes


def _hf_to_tv(key: str) -> str:
    """transformers ResNetModel key -> torchvision key."""
    parts = key.split(".")
    kind = {"convolution": "conv", "normalization": "bn"}
    if parts[0] == "embedder":
        return {"convolution": "conv1", "normalization": "bn1"}[parts[2]] + "." + ".".join(parts[3:])
    stage, block = int(parts[2]), int(parts[4])
    prefix = f"layer{stage + 1}.{block}"
    if parts[5] == "shortcut":
        return f"{prefix}.downsample.{0 if parts[6] == 'convolution' else 1}." + ".".join(parts[7:])
    i = int(parts[6]) + 1  # layer.{0,1,2} -> conv1/bn1 .. conv3/bn3
    return f"{prefix}.{kind[parts[7]]}{i}." + ".".join(parts[8:])


def test_state_dict_has_torchvisions_exact_keys_and_shapes():
    expected = _torchvision_shapes()
    got = {k: tuple(v.shape) for k, v in resnet50(num_classes=1000).state_dict().items()}
    assert len(expected) == 320
    assert got == expected
    head = {k: v for k, v in expected.items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in resnet50().state_dict().items()} == head


def test_loads_a_torchvision_file_and_refuses_other_keys(tmp_path):
    src = resnet50(num_classes=1000)
    path = tmp_path / "resnet50-test.pth"
    torch.save(src.state_dict(), path)
    headed = resnet50(num_classes=1000)
    assert load_torchvision_state_dict(headed, path) == []
    headless = resnet50()
    assert load_torchvision_state_dict(headless, path) == ["fc.weight", "fc.bias"]
    for k, v in headless.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
    bad = dict(src.state_dict())
    bad["layer1.0.extra.weight"] = bad.pop("layer1.0.conv1.weight")
    with pytest.raises(ValueError, match="missing .*layer1.0.conv1.weight"):
        load_torchvision_state_dict(resnet50(), bad)


def test_features_equal_transformers_resnet50_with_keys_mapped():
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    hf = ResNetModel(ResNetConfig()).eval()  # the ResNet-50 architecture, random weights
    with torch.no_grad():  # non-trivial running statistics so that eval-mode BatchNorm is compared too
        for name, buf in hf.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn_like(buf) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand_like(buf) + 0.5)
    mapped = {_hf_to_tv(k): v for k, v in hf.state_dict().items()}
    ours = resnet50().eval()
    load_torchvision_state_dict(ours, mapped)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = hf(pixel_values=x).pooler_output.flatten(1)
        got = ours(x)
    assert got.shape == (2, 2048)
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    assert torch.equal(ours.features(x), got)
