"""``cxrtrain import cxr-clip``: the released CXR-CLIP checkpoints (kakaobrain/cxr-clip, commit 955ab93).

A release ``.tar`` is a ``torch.save`` of ``{"model": state_dict, "optimizer", "scheduler", "config",
"epoch", "train_loss"}`` (``cxrclip/trainer.py``); ``config`` is the Hydra config with OmegaConf objects
inside (read through the allowlisting loader). The key layout follows ``cxrclip/model/clip.py`` and
``modules/``:

=======================================  ===============================================================
CXR-CLIP key                             cxrkit key
=======================================  ===============================================================
``image_encoder.resnet.*``               ``image_tower.resnet.*`` (torchvision ResNet-50, no ``fc``)
``image_encoder.image_encoder.*``        ``image_tower.*`` (transformers ``SwinModel``)
``text_encoder.text_encoder.*``          ``text_tower.*`` (transformers ``BertModel``, Bio_ClinicalBERT)
``image_projection.projection.*``        ``image_proj.*`` (linear head with bias, 512-d)
``text_projection.projection.*``         ``text_proj.*``
``logit_scale``                          ``logit_scale`` (never clamped by CXR-CLIP; no cap here either)
=======================================  ===============================================================

Image features: the ResNet's globally averaged 2048-d vector; for Swin the first token of the final
(layer-normed) hidden states (``CXRClip.encode_image``). Text: the hidden state of the last real token
(``pooling: eos``; ``bos`` = first token, ``mean``). Preprocessing (``cxrclip/evaluator.py``,
``data/data_utils.py:transform_image``): ImageNet mean/std for the ResNet, 0.5/0.5 for Swin, at
``base.image_size`` (224). Text up to ``base.text_max_length`` (256) tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cxrtrain.imports.common import (
    ImportUsageError,
    TowerDir,
    load_into,
    preprocessing_record,
    source_record,
    unknown,
    write_run,
)
from cxrtrain.imports.safe_load import plain, safe_load
from cxrtrain.towers.image import TORCHVISION_RESNET50

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HF_MEAN = HF_STD = (0.5, 0.5, 0.5)
DEFAULT_TEXT = "emilyalsentzer/Bio_ClinicalBERT"
DEFAULT_SWIN = "microsoft/swin-tiny-patch4-window7-224"
TEXT_POOLING = {"eos": "eos", "bos": "cls", "mean": "mean"}
DERIVED_BUFFERS = ("position_ids", "relative_position_index")


def read_release(path: Path) -> tuple[dict, dict, dict]:
    """-> (the whole object, the model state dict, the config as plain dicts); ImportUsageError when the
    file does not hold CXR-CLIP's layout."""
    obj = safe_load(path)
    sd = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not any(k.startswith("image_encoder.") for k in sd):
        flat = sd if isinstance(sd, dict) else obj if isinstance(obj, dict) else {}
        raise unknown(path, "cxr-clip", obj, flat, {}, "no 'model' state dict with image_encoder.* keys")
    sd = {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    cfg = plain(obj.get("config")) if isinstance(obj.get("config"), dict) else {}
    return obj, sd, cfg if isinstance(cfg, dict) else {}


def _sub(cfg: dict, *keys, default=None):
    for k in keys:
        cfg = cfg.get(k) if isinstance(cfg, dict) else None
    return default if cfg is None else cfg


def image_kind(sd: dict, path: Path, obj) -> str:
    if "image_encoder.resnet.conv1.weight" in sd:
        return "resnet"
    if "image_encoder.image_encoder.embeddings.patch_embeddings.projection.weight" in sd:
        return "swin"
    first = next((k for k in sd if k.startswith("image_encoder.")), None)
    raise unknown(path, "cxr-clip", obj, {first: sd[first]} if first else {}, {}, "image tower neither R50 nor Swin")


def _check_heads(sd: dict, path: Path, obj) -> None:
    extra = [k for k in sd if k.startswith(("image_projection.", "text_projection.")) and ".projection." not in k]
    if extra:
        raise ImportUsageError(
            f"{path}: an MLP projection head ({extra[0]} {tuple(sd[extra[0]].shape)}); cxrkit's model has "
            f"CXR-CLIP's linear heads (the released checkpoints' configs/model/clip_*_clinical.yaml)"
        )
    if "image_projection.projection.weight" not in sd:
        raise unknown(path, "cxr-clip", obj, sd, {}, "no image_projection.projection.weight")


def map_keys(sd: dict, kind: str) -> dict:
    out = {}
    for k, v in sd.items():
        if k.endswith(DERIVED_BUFFERS):
            continue
        if k.startswith("image_encoder.resnet."):
            k = "image_tower." + k.removeprefix("image_encoder.")
        elif k.startswith("image_encoder.image_encoder."):
            k = "image_tower." + k.removeprefix("image_encoder.image_encoder.")
        elif k.startswith("text_encoder.text_encoder."):
            k = "text_tower." + k.removeprefix("text_encoder.text_encoder.")
        elif k.startswith(("image_projection.projection.", "text_projection.projection.")):
            k = k.replace("_projection.projection.", "_proj.")
        out[k] = v.float()
    if "logit_scale" in out:
        out["logit_scale"] = out["logit_scale"].reshape(())
    return out


def _tower_source(local: Path | None, name: str, what: str, opt: str):
    from transformers import AutoConfig

    src = str(local) if local is not None else name
    try:
        return AutoConfig.from_pretrained(src), src
    except (OSError, ValueError) as e:
        raise ImportUsageError(
            f"the {what} config {src!r} is not available ({str(e).splitlines()[0]}); pass {opt} DIR, a local "
            f"copy of {name} (huggingface-cli download {name} --local-dir DIR where there is network)"
        ) from None


def write_towers(tower: Path, kind: str, cfg: dict, text_encoder: Path | None, image_encoder: Path | None) -> dict:
    """Tower configs and tokenizer into ``tower``; -> where each came from."""
    from transformers import AutoTokenizer

    from cxrtrain.towers.image import save_tower_config

    text_name = _sub(cfg, "model", "text_encoder", "name", default=DEFAULT_TEXT)
    tok_name = _sub(cfg, "tokenizer", "pretrained_model_name_or_path", default=text_name)
    tconf, tsrc = _tower_source(text_encoder, text_name, "text tower", "--text-encoder")
    tconf.save_pretrained(tower / "text")
    tok_src = str(text_encoder) if text_encoder is not None else tok_name
    try:
        AutoTokenizer.from_pretrained(tok_src).save_pretrained(tower / "text")
    except (OSError, ValueError) as e:
        raise ImportUsageError(
            f"the tokenizer {tok_src!r} is not available ({str(e).splitlines()[0]}); pass --text-encoder DIR"
        ) from None
    if kind == "resnet":
        save_tower_config(tower / "image")
        return dict(text=tsrc, tokenizer=tok_src, image="torchvision resnet50 (built in)")
    name = _sub(cfg, "model", "image_encoder", "name", default=DEFAULT_SWIN)
    iconf, isrc = _tower_source(image_encoder, name, "image tower", "--image-encoder")
    iconf.save_pretrained(tower / "image")
    return dict(text=tsrc, tokenizer=tok_src, image=isrc)


def import_cxr_clip(ckpt: Path, out: Path, text_encoder: Path | None = None, image_encoder: Path | None = None) -> Path:
    from cxrtrain.model import ModelConfig, create_model

    ckpt = Path(ckpt)
    obj, sd, cfg = read_release(ckpt)
    kind = image_kind(sd, ckpt, obj)
    _check_heads(sd, ckpt, obj)
    pooling = _sub(cfg, "model", "text_encoder", "pooling", default="eos")
    size = int(_sub(cfg, "base", "image_size", default=224))
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if kind == "resnet" else (HF_MEAN, HF_STD)
    scale = float(sd["logit_scale"].float()) if "logit_scale" in sd else math.log(1 / 0.07)
    with TowerDir() as tower:
        sources = write_towers(tower, kind, cfg, text_encoder, image_encoder)
        mc = ModelConfig(
            preset="cxr-clip-r50" if kind == "resnet" else "cxr-clip-swin",
            image_encoder=TORCHVISION_RESNET50 if kind == "resnet" else sources["image"],
            text_encoder=sources["text"],
            image_size=size,
            image_mean=mean,
            image_std=std,
            embed_dim=sd["image_projection.projection.weight"].shape[0],
            image_pooling="pooler" if kind == "resnet" else "first",
            text_pooling=TEXT_POOLING.get(pooling, "eos"),
            proj_bias="image_projection.projection.bias" in sd,
            max_text_len=int(_sub(cfg, "base", "text_max_length", default=256)),
            init_temperature=math.exp(-scale),
            min_temperature=None,
        )
        try:
            model = create_model(mc, towers_dir=tower)
        except (OSError, ValueError) as e:
            raise ImportUsageError(f"{ckpt}: cannot build the towers ({str(e).splitlines()[0]})") from None
        mapped = map_keys(sd, kind)
        if "logit_scale" not in mapped:
            mapped["logit_scale"] = torch.tensor(scale)
        load_into(model, mapped, ckpt, "cxr-clip", obj)
        record = source_record(
            "cxr-clip",
            ckpt,
            image_tower=kind,
            towers=sources,
            epoch=obj.get("epoch"),
            logit_scale=scale,
            preprocessing=preprocessing_record(
                size,
                mean,
                std,
                original=f"{'ImageNet' if kind == 'resnet' else '0.5/0.5'} normalisation at {size} px "
                "(kakaobrain/cxr-clip evaluator.py, data_utils.transform_image); resize + centre crop",
                cxrkit="shorter side to image_size, centre crop, same mean/std",
            ),
            config_model=_sub(cfg, "model"),
        )
        return write_run(out, model.eval(), record)


__all__ = ["import_cxr_clip", "read_release", "map_keys"]
