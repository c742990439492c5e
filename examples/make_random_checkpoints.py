"""Write random-weight checkpoints in the original layouts and file formats of the published models, for
the demo of ``cxrtrain import`` (no real weights can be downloaded here):

* OUT/cxr-clip/r50_m.tar   CXR-CLIP release layout: torch.save({"model", "optimizer", "scheduler", "config",
                           "epoch", "train_loss"}); torchvision ResNet-50 + a small BERT (Bio_ClinicalBERT's
                           architecture shrunk), linear 512-d heads; the config pickles OmegaConf objects
                           when omegaconf is installed (as the released files do). OUT/cxr-clip/bert/ is the
                           text tower's config + tokenizer (pass it as --text-encoder).
* OUT/chexzero/best_64_5e-05_original_22000_0.864.pt   an OpenAI CLIP ViT state dict (small: 4 layers,
                           width 128, patch 16, 64 px), fp16 and fp32 tensors mixed as in the released files.
* OUT/open-clip/           an open_clip model folder: open_clip_config.json + open_clip_model.safetensors.

Usage: python examples/make_random_checkpoints.py --out DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch


def openai_vit_clip(embed=64, res=64, patch=16, vw=128, vl=4, ctx=77, vocab=49408, tw=128, tl=4) -> dict:
    """Random tensors under OpenAI CLIP's ViT state-dict keys and shapes (clip/model.py)."""
    sd = {
        "visual.conv1.weight": torch.randn(vw, 3, patch, patch) * 0.02,
        "visual.class_embedding": torch.randn(vw) * vw**-0.5,
        "visual.positional_embedding": torch.randn((res // patch) ** 2 + 1, vw) * vw**-0.5,
        "visual.proj": torch.randn(vw, embed) * vw**-0.5,
        "token_embedding.weight": torch.randn(vocab, tw) * 0.02,
        "positional_embedding": torch.randn(ctx, tw) * 0.01,
        "text_projection": torch.randn(tw, embed) * tw**-0.5,
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
    }
    for name, w in (("visual.ln_pre", vw), ("visual.ln_post", vw), ("ln_final", tw)):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.ones(w), torch.zeros(w)
    for prefix, w, n in (("visual.transformer.resblocks", vw, vl), ("transformer.resblocks", tw, tl)):
        for i in range(n):
            p = f"{prefix}.{i}"
            sd[f"{p}.attn.in_proj_weight"] = torch.randn(3 * w, w) * w**-0.5
            sd[f"{p}.attn.in_proj_bias"] = torch.zeros(3 * w)
            sd[f"{p}.attn.out_proj.weight"] = torch.randn(w, w) * w**-0.5
            sd[f"{p}.attn.out_proj.bias"] = torch.zeros(w)
            sd[f"{p}.mlp.c_fc.weight"] = torch.randn(4 * w, w) * w**-0.5
            sd[f"{p}.mlp.c_fc.bias"] = torch.zeros(4 * w)
            sd[f"{p}.mlp.c_proj.weight"] = torch.randn(w, 4 * w) * (4 * w) ** -0.5
            sd[f"{p}.mlp.c_proj.bias"] = torch.zeros(w)
            for ln in ("ln_1", "ln_2"):
                sd[f"{p}.{ln}.weight"], sd[f"{p}.{ln}.bias"] = torch.ones(w), torch.zeros(w)
    return sd


def cxr_clip_config(bert_dir: Path) -> dict:
    cfg = {
        "base": {"image_size": 224, "text_max_length": 256, "seed": 1234},
        "model": {
            "name": "clip_custom",
            "temperature": 0.07,
            "image_encoder": {"source": "torchvision", "name": "resnet", "pretrained": True},
            "text_encoder": {"source": "huggingface", "name": str(bert_dir), "pooling": "eos"},
            "projection_head": {"name": "linear", "dropout": 0.1, "proj_dim": 512},
        },
        "tokenizer": {"source": "huggingface", "pretrained_model_name_or_path": str(bert_dir)},
        "data_train": {"mimic_cxr": {"data_path": ["train.csv"], "text_max_length": 256}},
    }
    try:
        from omegaconf import DictConfig, OmegaConf
    except ImportError:
        return cfg

    def conv(c):  # cxrclip/util/utils.py:convert_dictconfig_to_dict keeps ListConfig values
        return {k: conv(v) for k, v in c.items()} if isinstance(c, DictConfig) else c

    return conv(OmegaConf.create(cfg))


def write_cxr_clip(out: Path) -> Path:
    from transformers import AutoModel, AutoTokenizer, BertConfig

    from cxrtrain.model import _minilm_path
    from cxrtrain.towers.tv_resnet import resnet50

    bert_dir = out / "bert"
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    conf = BertConfig(vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=2, num_attention_heads=2)
    conf.save_pretrained(bert_dir)
    tok.save_pretrained(bert_dir)
    bert = AutoModel.from_config(conf)
    sd = {f"image_encoder.resnet.{k}": v for k, v in resnet50(num_classes=None).state_dict().items()}
    sd |= {f"text_encoder.text_encoder.{k}": v for k, v in bert.state_dict().items()}
    for side, width in (("image", 2048), ("text", 128)):
        lin = torch.nn.Linear(width, 512)
        sd[f"{side}_projection.projection.weight"], sd[f"{side}_projection.projection.bias"] = lin.weight, lin.bias
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    ck = {"model": sd, "optimizer": {}, "scheduler": {}, "config": cxr_clip_config(bert_dir), "epoch": 1}
    ck["train_loss"] = 0.0
    torch.save(ck, out / "r50_m.tar")
    return out / "r50_m.tar"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    for sub in ("cxr-clip", "chexzero", "open-clip"):
        (a.out / sub).mkdir(parents=True, exist_ok=True)
    print("wrote", write_cxr_clip(a.out / "cxr-clip"))
    sd = openai_vit_clip()
    half = {k: (v.half() if v.dim() >= 2 else v) for k, v in sd.items()}  # the released mix of fp16/fp32
    torch.save(half, a.out / "chexzero" / "best_64_5e-05_original_22000_0.864.pt")
    print("wrote", a.out / "chexzero" / "best_64_5e-05_original_22000_0.864.pt")
    from safetensors.torch import save_file

    oc = a.out / "open-clip"
    save_file(
        {k: v.contiguous() for k, v in openai_vit_clip(embed=64, vw=64, tw=64, vl=2, tl=2).items()},
        str(oc / "open_clip_model.safetensors"),
    )
    cfg = {
        "model_cfg": {
            "embed_dim": 64,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (oc / "open_clip_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    print("wrote", oc)


if __name__ == "__main__":
    main()
