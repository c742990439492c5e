"""torchvision's ResNet-50 in plain torch, with torchvision's exact state-dict keys.

CXR-CLIP (kakaobrain/cxr-clip, ``cxrclip/model/image_classification.py`` / ``modules``) builds its ResNet-50
image tower with ``torchvision.models.resnet50``. torchvision's compiled ops cannot be loaded beside every
torch build (its 0.28 wheel fails on CPU torch 2.13 with ``operator torchvision::nms does not exist``), so
this module writes the same public architecture (He et al. 2016, "v1.5": the stride-2 convolution of a
down-sampling bottleneck is the 3x3 one) with the same module names, so that a torchvision-format weight
file (for example ImageNet ``resnet50-0676ba61.pth`` or ``resnet50-11ad3fa6.pth``) loads with no key
mapping: ``conv1``, ``bn1``, ``layer1`` .. ``layer4`` (blocks ``conv1/bn1 .. conv3/bn3`` and
``downsample.0`` / ``downsample.1``), ``fc``. With ``fc`` the state dict holds 320 tensors.

``resnet50(num_classes=None)`` has no classifier: ``forward`` / ``features`` return the pooled 2048-d
feature. ``load_torchvision_state_dict`` loads a torchvision file into either form (a headless model drops
the file's ``fc.*``) and refuses any other missing or unexpected key.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

#: torchvision ResNet-50: Bottleneck blocks per stage and the stages' base widths (output = 4x width).
LAYERS = (3, 4, 6, 3)
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4
FEATURE_DIM = WIDTHS[-1] * EXPANSION  # 2048


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand; identity or ``downsample`` shortcut."""

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        out_ch = width * EXPANSION
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _stage(in_ch: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    out_ch = width * EXPANSION
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
    layers = [Bottleneck(in_ch, width, stride, downsample)]
    layers += [Bottleneck(out_ch, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class TVResNet(nn.Module):
    """ResNet-50 with torchvision's module names. ``fc`` is ``nn.Identity`` when headless."""

    def __init__(self, num_classes: int | None = None) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = 64
        for i, (width, blocks) in enumerate(zip(WIDTHS, LAYERS)):
            self.add_module(f"layer{i + 1}", _stage(in_ch, width, blocks, 1 if i == 0 else 2))
            in_ch = width * EXPANSION
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity() if num_classes is None else nn.Linear(FEATURE_DIM, num_classes)
        self.feature_dim = FEATURE_DIM
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation: Kaiming-normal (fan_out) convolutions, BatchNorm weight 1 / bias 0
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> the last stage's [B, 2048, H/32, W/32] map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> the globally averaged [B, 2048] feature (torchvision's input to ``fc``)."""
        return torch.flatten(self.avgpool(self.feature_map(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def resnet50(num_classes: int | None = None) -> TVResNet:
    """torchvision's ResNet-50 architecture; ``num_classes=None`` gives the headless 2048-d feature model."""
    return TVResNet(num_classes)


def _unwrap(obj) -> dict:
    """A torchvision file is a bare state dict; training checkpoints often nest it under a key."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError("not a state dict")
    return obj


def load_torchvision_state_dict(model: TVResNet, path: str | Path | dict) -> list[str]:
    """Load a torchvision-format ResNet-50 state dict (a file path or a dict) into ``model``.

    Keys must match exactly; a headless model drops the file's ``fc.weight`` / ``fc.bias`` (returned as the
    list of dropped keys). Raises ``ValueError`` naming the file and the first missing, unexpected or
    mis-shaped keys.
    """
    where = "state dict" if isinstance(path, dict) else str(path)
    state = path if isinstance(path, dict) else torch.load(path, map_location="cpu", weights_only=True)
    try:
        state = dict(_unwrap(state))
    except ValueError:
        raise ValueError(f"{where}: not a torchvision ResNet-50 state dict") from None
    dropped = [k for k in list(state) if k.startswith("fc.")] if model.num_classes is None else []
    for k in dropped:
        del state[k]
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"{where}: not a torchvision ResNet-50 state dict (missing {missing[:3]} of {len(missing)}, "
            f"unexpected {unexpected[:3]} of {len(unexpected)}, wrong shape {bad_shape[:3]} of {len(bad_shape)})"
        )
    model.load_state_dict(state, strict=True)
    return dropped
