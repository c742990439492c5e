"""The torchvision-layout ResNet-50 (``cxrtrain/towers/tv_resnet.py``) as a cxrkit image tower.

CXR-CLIP's R50 checkpoints hold a torchvision ResNet-50; this adapter gives it the interface the model
expects of a transformers tower: ``tower(pixel_values=x)`` returns ``pooler_output`` (the globally averaged
2048-d feature, CXR-CLIP's ``ResNet50.forward``) and ``last_hidden_state`` (the last stage's feature map);
``config.save_pretrained(dir)`` writes ``{"model_type": "torchvision_resnet50"}`` so a checkpoint's
``towers/image`` rebuilds it; ``save_pretrained(dir)`` (export) writes that config and the weights under
torchvision's own key names.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

MODEL_TYPE = "torchvision_resnet50"


class TVTowerConfig:
    model_type = MODEL_TYPE
    hidden_size = 2048

    def to_dict(self) -> dict:
        return {"model_type": MODEL_TYPE, "hidden_size": self.hidden_size, "layout": "torchvision resnet50"}

    def save_pretrained(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")


class TVResNetTower(nn.Module):
    """Headless torchvision ResNet-50 (``self.resnet``, torchvision's keys) with a transformers-like call."""

    def __init__(self) -> None:
        super().__init__()
        from cxrtrain.towers.tv_resnet import resnet50

        self.resnet = resnet50(num_classes=None)
        self.config = TVTowerConfig()

    def forward(self, pixel_values: torch.Tensor) -> SimpleNamespace:
        fmap = self.resnet.feature_map(pixel_values)
        return SimpleNamespace(last_hidden_state=fmap, pooler_output=torch.flatten(self.resnet.avgpool(fmap), 1))

    def blocks(self) -> list[nn.Module]:
        return [b for i in range(1, 5) for b in getattr(self.resnet, f"layer{i}")]

    def save_pretrained(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        self.config.save_pretrained(path)
        sd = {k: v.detach().contiguous().cpu() for k, v in self.resnet.state_dict().items()}
        save_file(sd, str(Path(path) / "model.safetensors"))


def is_tv_tower_dir(path: Path) -> bool:
    f = Path(path) / "config.json"
    return f.is_file() and json.loads(f.read_text()).get("model_type") == MODEL_TYPE


def load_tv_tower(path: str | Path) -> TVResNetTower:
    """An exported tower folder (config.json + model.safetensors) -> the tower with its weights."""
    from safetensors.torch import load_file

    from cxrtrain.towers.tv_resnet import load_torchvision_state_dict

    t = TVResNetTower()
    load_torchvision_state_dict(t.resnet, load_file(str(Path(path) / "model.safetensors")))
    return t.eval()


__all__ = ["TVResNetTower", "is_tv_tower_dir", "load_tv_tower", "MODEL_TYPE"]
