"""``cxrtrain import open-clip``: an open_clip model folder (``open_clip_config.json`` + weights) or file.

open_clip's own ViT CLIP towers (``vision_cfg`` with ``width``/``layers``/``patch_size``, ``text_cfg``
with ``width``/``heads``/``layers``) keep OpenAI's state-dict layout, so they import through the same
mapping as CheXzero, without open_clip installed; the config's heads, ``quick_gelu`` flag (open_clip's
default activation is exact GELU) and ``preprocess_cfg`` mean/std are used. A training checkpoint
(``{"state_dict": {"module.visual...."}}``) and a bare state dict, ``.bin``/``.pt`` or ``.safetensors``,
also load; without a config folder the sizes come from the shapes, as for CheXzero.

Towers that open_clip builds from other libraries (``vision_cfg.timm_model_name``, ``text_cfg.hf_model_name``,
for example BiomedCLIP) need the ``open_clip`` and ``timm`` packages. They cannot be installed beside
cxrkit's pinned CPU torch here (timm imports torchvision, whose wheel does not load on torch 2.13 CPU), so
such a model exits 2 with that reason.
"""

from __future__ import annotations

import json
from pathlib import Path

from cxrtrain.imports.chexzero import build_openai_clip, find_openai_state_dict
from cxrtrain.imports.common import ImportUsageError, TowerDir, sha256, unknown, write_run
from cxrtrain.imports.safe_load import safe_load

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin")
NATIVE_POOLS = {"vision": ("tok", None), "text": ("argmax", None)}


def _read_weights(path: Path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError for truncated/corrupt files
            raise ImportUsageError(f"{path}: not a readable safetensors file ({str(e).splitlines()[0]})") from None
    return safe_load(path)


def locate(path: Path) -> tuple[Path, dict]:
    """-> (weights file, open_clip_config.json contents or {})."""
    if path.is_file():
        cfg_file = path.parent / "open_clip_config.json"
        return path, json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    cfg_file = path / "open_clip_config.json"
    weights = next((path / n for n in WEIGHT_FILES if (path / n).is_file()), None)
    if weights is None:
        raise ImportUsageError(
            f"{path}: no open_clip weights here (looked for {', '.join(WEIGHT_FILES)}); found: "
            f"{sorted(p.name for p in path.iterdir())[:8]}"
        )
    try:
        return weights, json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    except json.JSONDecodeError as e:
        raise ImportUsageError(f"{cfg_file}: not valid JSON ({e})") from None


def needs_open_clip(model_cfg: dict) -> str | None:
    """Why this model cannot be mapped onto the OpenAI layout (None when it can)."""
    v, t = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    if v.get("timm_model_name"):
        return f"vision_cfg.timm_model_name={v['timm_model_name']!r} (a timm tower)"
    if t.get("hf_model_name"):
        return f"text_cfg.hf_model_name={t['hf_model_name']!r} (a Hugging Face text tower)"
    if v.get("pool_type") not in NATIVE_POOLS["vision"] or v.get("attentional_pool") or v.get("global_average_pool"):
        return "vision_cfg pools other than the class token"
    if t.get("pool_type") not in NATIVE_POOLS["text"]:
        return f"text_cfg.pool_type={t.get('pool_type')!r}"
    return None


def _refuse(path: Path, why: str) -> ImportUsageError:
    import importlib.util

    have = importlib.util.find_spec("open_clip") is not None and importlib.util.find_spec("timm") is not None
    return ImportUsageError(
        f"{path}: {why} needs the open_clip and timm packages"
        + (
            ", and cxrkit has no mapping for such towers yet"
            if have
            else ", which cannot be installed beside cxrkit's pinned torch (timm needs torchvision, whose "
            "wheel does not load on the CPU torch build); import it where they install, or export its towers"
        )
    )


def overrides(model_cfg: dict) -> dict:
    v, t = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    over = {"act": "quick_gelu" if model_cfg.get("quick_gelu") else "gelu"}
    if "width" in v:
        over["vision_heads"] = max(1, v["width"] // v.get("head_width", 64))
    if "heads" in t:
        over["text_heads"] = t["heads"]
    return over


def import_open_clip(path: Path, out: Path, text_encoder: Path | None = None) -> Path:
    path = Path(path)
    weights, cfg = locate(path)
    model_cfg = cfg.get("model_cfg", {})
    why = needs_open_clip(model_cfg) if model_cfg else None
    if why:
        raise _refuse(path, why)
    obj = _read_weights(weights)
    sd = find_openai_state_dict(obj)
    if sd is None:
        raise unknown(weights, "open-clip", obj, obj if isinstance(obj, dict) else {}, {}, "no visual.conv1.weight")
    pre = cfg.get("preprocess_cfg", {})
    mean, std = tuple(pre.get("mean", OPENAI_MEAN)), tuple(pre.get("std", OPENAI_STD))
    # without a config, the weights are OpenAI's own or a fine-tune of them: QuickGELU as OpenAI's build_model
    over = overrides(model_cfg) if model_cfg else {}
    with TowerDir() as tower:
        model, dims = build_openai_clip(sd, weights, "open-clip", obj, text_encoder, mean, std, tower, over)
        record = dict(
            format="open-clip",
            source=str(path.resolve()),
            weights=str(weights.resolve()),
            source_sha256=sha256(weights),
            dims=dims,
            model_cfg=model_cfg,
            preprocessing=dict(image_size=model.config.image_size, mean=mean, std=std, original=pre or "OpenAI's"),
        )
        return write_run(out, model, record)


__all__ = ["import_open_clip", "needs_open_clip"]
