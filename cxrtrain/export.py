"""``cxrtrain export``: both encoders as Hugging Face directories plus projections and temperature.

Layout::

    DIR/image_encoder/      save_pretrained of the image tower (config.json + model.safetensors)
    DIR/text_encoder/       save_pretrained of the text tower and its tokenizer
    DIR/projections.safetensors   image_proj.weight, text_proj.weight (+ .bias when model.proj_bias), logit_scale
    DIR/cxrkit.json         model config (image size, normalisation, text pooling, max length)
    DIR/README.md           how to load it without cxrkit and score an image against two prompts
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

README = """# cxrkit export

Exported by `cxrtrain export` from `{checkpoint}` (preset `{preset}`). Load without cxrkit:

```python
import json, cv2, numpy as np, torch, torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

d = "{out}"
cfg = json.load(open(f"{{d}}/cxrkit.json"))
image_tower = AutoModel.from_pretrained(f"{{d}}/image_encoder").eval()
text_tower = AutoModel.from_pretrained(f"{{d}}/text_encoder").eval()
tok = AutoTokenizer.from_pretrained(f"{{d}}/text_encoder")
proj = load_file(f"{{d}}/projections.safetensors")

def embed_image(path):
    g = cv2.imread(path, cv2.IMREAD_GRAYSCALE)               # 8-bit MONOCHROME2, as cxrprep writes
    s = cfg["image_size"]; h, w = g.shape; k = s / min(h, w)
    g = cv2.resize(g, (max(s, round(w * k)), max(s, round(h * k))), interpolation=cv2.INTER_AREA)
    y, x = (g.shape[0] - s) // 2, (g.shape[1] - s) // 2
    x3 = torch.from_numpy(g[y:y + s, x:x + s]).float().div(255).expand(3, -1, -1)
    x3 = (x3 - torch.tensor(cfg["image_mean"]).view(3, 1, 1)) / torch.tensor(cfg["image_std"]).view(3, 1, 1)
    o = image_tower(pixel_values=x3[None])
    if cfg["image_pooling"] == "pooler":
        feats = o.pooler_output.flatten(1)
    else:                                                    # "first" / "mean" of the final hidden states
        h = o.last_hidden_state
        h = h.flatten(2).transpose(1, 2) if h.dim() == 4 else h
        feats = h[:, 0] if cfg["image_pooling"] == "first" else h.mean(1)
    return F.normalize(feats @ proj["image_proj.weight"].T + proj.get("image_proj.bias", 0), dim=-1)

def embed_text(texts):
    t = tok(texts, padding=True, truncation=True, max_length=cfg["max_text_len"], return_tensors="pt")
    h = text_tower(**t).last_hidden_state
    if cfg["text_pooling"] == "mean":
        m = t["attention_mask"][..., None].float(); feats = (h * m).sum(1) / m.sum(1)
    elif cfg["text_pooling"] == "eos":                       # the last real (non-padding) token
        feats = h[torch.arange(h.shape[0]), t["attention_mask"].sum(1) - 1]
    else:
        feats = h[:, 0]                                      # cls
    return F.normalize(feats @ proj["text_proj.weight"].T + proj.get("text_proj.bias", 0), dim=-1)

with torch.no_grad():
    img = embed_image("chest.jpg")
    txt = embed_text(["There is a pleural effusion.", "No pleural effusion."])
    probs = (proj["logit_scale"].exp() * img @ txt.T).softmax(-1)
print(probs)   # P(effusion), P(no effusion)
```
"""


def export(checkpoint: str | Path, out: str | Path) -> Path:
    from safetensors.torch import save_file

    from cxrtrain.checkpoint import load_checkpoint, resolve_checkpoint

    ck = resolve_checkpoint(checkpoint)
    model, conf = load_checkpoint(ck)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.image_tower.save_pretrained(out / "image_encoder")
    model.text_tower.save_pretrained(out / "text_encoder")
    model.tokenizer.save_pretrained(out / "text_encoder")
    proj = {
        "image_proj.weight": model.image_proj.weight,
        "text_proj.weight": model.text_proj.weight,
        "logit_scale": model.logit_scale.reshape(1),
    }
    if model.config.proj_bias:
        proj.update({"image_proj.bias": model.image_proj.bias, "text_proj.bias": model.text_proj.bias})
    save_file({k: v.detach().contiguous() for k, v in proj.items()}, str(out / "projections.safetensors"))
    (out / "cxrkit.json").write_text(
        json.dumps(
            dict(asdict(model.config), image_kind=model.image_kind, text_kind=model.text_kind, source=str(ck)),
            indent=2,
            default=list,
        )
        + "\n"
    )
    (out / "README.md").write_text(README.format(checkpoint=ck, preset=model.config.preset, out=out))
    return out


class ExportedModel:
    """Loads an export with plain transformers (what the README snippet does), for checking round trips."""

    def __init__(self, d: str | Path) -> None:
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPVisionModel

        d = Path(d)
        self.cfg = json.loads((d / "cxrkit.json").read_text())
        vis = CLIPVisionModel if self.cfg["image_kind"] == "clip" else AutoModel
        txt = CLIPTextModel if self.cfg["text_kind"] == "clip" else AutoModel
        if self.cfg["image_kind"] == "tv_resnet":  # torchvision keys; torchvision.models.resnet50 loads them too
            from cxrtrain.tv_tower import load_tv_tower

            self.image_tower = load_tv_tower(d / "image_encoder")
        else:
            self.image_tower = vis.from_pretrained(d / "image_encoder").eval()
        self.text_tower = txt.from_pretrained(d / "text_encoder").eval()
        self.tok = AutoTokenizer.from_pretrained(d / "text_encoder")
        self.proj = load_file(str(d / "projections.safetensors"))

    @torch.no_grad()
    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        from cxrtrain.model import pool_image

        f = pool_image(self.image_tower(pixel_values=pixels), self.cfg.get("image_pooling", "pooler"))
        return F.normalize(f @ self.proj["image_proj.weight"].T + self.proj.get("image_proj.bias", 0), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        t = self.tok(texts, padding=True, truncation=True, max_length=self.cfg["max_text_len"], return_tensors="pt")
        o = self.text_tower(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
        from cxrtrain.model import pool_text

        f = pool_text(o.last_hidden_state, t["attention_mask"], self.cfg["text_pooling"])
        return F.normalize(f @ self.proj["text_proj.weight"].T + self.proj.get("text_proj.bias", 0), dim=-1)


__all__ = ["export", "ExportedModel"]
