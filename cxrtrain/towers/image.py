"""Image towers that are not transformers models, behind the small interface ``CLIPModel`` uses.

``torchvision/resnet50`` (CXR-CLIP's ResNet-50 tower, kakaobrain/cxr-clip
``cxrclip/model/modules/image_encoder.py``: ``torchvision.models.resnet50(pretrained=True)`` without ``fc``,
global average pooled 2048-d features): the plain-torch architecture of ``tv_resnet`` with torchvision's
state-dict keys. Weights come from a torchvision-format file: ``model.image_weights`` (a path), else
torchvision's own cache (``$TORCH_HOME/hub/checkpoints/resnet50-0676ba61.pth``, the ImageNet
``IMAGENET1K_V1`` weights that ``pretrained=True`` downloads); ``model.random_init`` builds it without
weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from cxrtrain.towers.tv_resnet import TVResNet, load_torchvision_state_dict, resnet50

TORCHVISION_RESNET50 = "torchvision/resnet50"
#: the file torchvision's ``resnet50(pretrained=True)`` / ``weights=IMAGENET1K_V1`` downloads
IMAGENET_FILE = "resnet50-0676ba61.pth"
MODEL_TYPE = "torchvision_resnet50"
WEIGHTS_FILE = "resnet50.pth"


class _Config(SimpleNamespace):
    """Enough of a transformers config for ``CLIPModel.save_towers``: a JSON file naming the architecture."""

    def save_pretrained(self, path: Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text(json.dumps({"model_type": self.model_type}) + "\n")


class TorchvisionResNet50Tower(nn.Module):
    """``forward(pixel_values=...)`` returns ``pooler_output`` [B, 2048, 1, 1] (the global average, as
    torchvision's ``avgpool``) and ``last_hidden_state`` [B, 2048, h, w] like transformers' ResNetModel."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet: TVResNet = resnet50(num_classes=None)
        self.config = _Config(model_type=MODEL_TYPE, hidden_size=self.resnet.feature_dim)

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        fmap = self.resnet.feature_map(pixel_values)
        return SimpleNamespace(last_hidden_state=fmap, pooler_output=self.resnet.avgpool(fmap))

    def save_pretrained(self, path: Path) -> None:
        """config.json and ``resnet50.pth``: the weights in torchvision's format (``torchvision.models.resnet50()``
        loads them with ``strict=False``: only ``fc`` is absent)."""
        self.config.save_pretrained(path)
        torch.save({k: v.detach().cpu() for k, v in self.resnet.state_dict().items()}, Path(path) / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, path: Path) -> "TorchvisionResNet50Tower":
        tower = cls()
        load_torchvision_state_dict(tower.resnet, Path(path) / WEIGHTS_FILE)
        return tower

    def blocks(self) -> list[nn.Module]:
        """Bottleneck blocks, input to output (partial fine-tuning)."""
        return [b for i in range(1, 5) for b in getattr(self.resnet, f"layer{i}")]


def save_tower_config(path: Path) -> None:
    """The ``towers/image`` config of a checkpoint whose image tower is this ResNet-50 (weights come from the
    checkpoint's model.safetensors)."""
    _Config(model_type=MODEL_TYPE).save_pretrained(path)


def default_weights() -> Path:
    """Where torchvision keeps its downloaded ImageNet ResNet-50 (``torch.hub.get_dir()``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def is_torchvision_dir(path: Path) -> bool:
    """A saved tower folder (``towers/image``) written by ``_Config.save_pretrained``."""
    f = Path(path) / "config.json"
    return f.is_file() and json.loads(f.read_text()).get("model_type") == MODEL_TYPE


def build_torchvision_resnet50(weights: str | None, random_init: bool) -> TorchvisionResNet50Tower:
    """The tower with weights from ``weights`` (a torchvision-format file), else torchvision's cached
    ImageNet file; ``random_init``: no weights. A missing file is one message saying how to get it."""
    tower = TorchvisionResNet50Tower()
    if random_init and not weights:
        return tower
    path = Path(os.path.expanduser(weights)) if weights else default_weights()
    if not path.is_file():
        raise RuntimeError(
            f"model.image_encoder={TORCHVISION_RESNET50}: no weight file {path}. Download torchvision's ImageNet "
            f"ResNet-50 once where there is network (https://download.pytorch.org/models/{IMAGENET_FILE}) and "
            "pass it with --set model.image_weights=PATH (or put it there), or --set model.random_init=true"
        )
    try:
        load_torchvision_state_dict(tower.resnet, path)
    except ValueError as e:
        raise RuntimeError(f"model.image_weights: {e}") from None
    return tower
