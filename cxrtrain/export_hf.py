"""``cxrtrain export --format hf``: a folder that ``transformers`` loads as one model, scoring as cxrkit does.

What the Hugging Face classes compute (transformers 5.x, ``modeling_vision_text_dual_encoder.py`` and
``modeling_clip.py``): ``image_embeds = visual_projection(vision_model(...).pooler_output)`` and
``text_embeds = text_projection(text_model(...).pooler_output)``, both projections ``nn.Linear(..., bias=False)``,
both embeddings L2-normalised, ``logits_per_image = logit_scale.exp() * image_embeds @ text_embeds.T`` with no cap
on the scale. A cxrkit model is written in that form only where every step is the same:

* ``CLIPModel`` when both towers are CLIP towers (``clip-b32``, an imported CheXzero run): the image pooling must
  be ``pooler`` (the post-layernormed CLS) and the text pooling ``eos`` (CLIP's pooled EOS token);
* ``VisionTextDualEncoderModel`` otherwise: the image tower's ``pooler_output`` must be what cxrkit pools (ViT's
  pooler, Swin's average; ``image_pooling: pooler``) and be a flat vector (transformers' ResNet gives
  ``[B, C, 1, 1]`` and has no ``hidden_size``; torchvision's ResNet-50 is not a transformers model), and the text
  tower's ``pooler_output`` must be what cxrkit pools: only a CLIP text tower (its EOS token) qualifies; BERT's
  pooler is ``tanh(dense(CLS))``, which none of cxrkit's ``cls``/``mean``/``eos`` poolings is;
* no projection bias. The temperature is written as the scale cxrkit applies (clamped at ``1/min_temperature``).

Anything else is refused with a ``NotRepresentable`` naming what differs; ``--format cxrkit`` exports it.
After writing, the loaded-back model's logits are compared with cxrkit's on a probe batch (``PROBE_ATOL``) and the
folder is only put in place when they agree.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

PROBE_ATOL = 1e-5
PROBE_TEXTS = ["There is a small left pleural effusion.", "No acute cardiopulmonary process.", "Cardiomegaly."]


class NotRepresentable(ValueError):
    """The model computes something the Hugging Face class cannot hold exactly (exit 2: pick another format)."""


def hf_class_for(model) -> str:
    """'CLIPModel' or 'VisionTextDualEncoderModel' for a cxrkit model, or NotRepresentable naming the difference."""
    cfg = model.config
    problems = []
    if cfg.proj_bias:
        problems.append("the projections have biases (model.proj_bias: true; the HF classes' projections have none)")
    clip_pair = model.image_kind == model.text_kind == "clip"
    if model.image_kind in ("resnet", "tv-resnet"):
        problems.append(
            f"the image tower is a ResNet ({cfg.image_encoder or model.image_kind}), which "
            "VisionTextDualEncoderModel cannot hold (its pooler_output is [B, C, 1, 1], its config has no "
            "hidden_size)"
        )
    elif cfg.image_pooling != "pooler":
        problems.append(
            f"model.image_pooling is {cfg.image_pooling!r} but the HF classes use the image tower's pooler_output"
        )
    if model.text_kind != "clip":
        problems.append(
            f"the text tower is {model.text_kind.upper()} with model.text_pooling {cfg.text_pooling!r}, "
            "but the HF classes use its pooler_output (BERT's is tanh(dense(CLS)), which no cxrkit text pooling equals)"
        )
    elif cfg.text_pooling != "eos":
        problems.append(
            f"model.text_pooling is {cfg.text_pooling!r} but a CLIP text tower's pooler_output is its EOS token"
        )
    if problems:
        raise NotRepresentable(
            "cannot export as a Hugging Face model without changing its scores: "
            + "; ".join(problems)
            + ". Use --format cxrkit instead"
        )
    return "CLIPModel" if clip_pair else "VisionTextDualEncoderModel"


def effective_logit_scale(model) -> float:
    """log of the scale cxrkit multiplies similarities by (the learnable one, clamped where capped)."""
    return float(model.scale().detach().log())


def build_hf_model(model):
    """The transformers model holding the cxrkit model's weights (after ``hf_class_for`` accepted it)."""
    import transformers

    kind = hf_class_for(model)
    vis, txt = model.image_tower.config, model.text_tower.config
    common = dict(projection_dim=model.config.embed_dim, logit_scale_init_value=effective_logit_scale(model))
    if kind == "CLIPModel":
        conf = transformers.CLIPConfig(text_config=txt.to_dict(), vision_config=vis.to_dict(), **common)
    else:
        conf = transformers.VisionTextDualEncoderConfig.from_vision_text_configs(vis, txt, **common)
    hf = getattr(transformers, kind)(conf).eval()
    with torch.no_grad():
        hf.vision_model.load_state_dict(model.image_tower.state_dict(), strict=True)
        hf.text_model.load_state_dict(model.text_tower.state_dict(), strict=True)
        hf.visual_projection.weight.copy_(model.image_proj.weight)
        hf.text_projection.weight.copy_(model.text_proj.weight)
        hf.logit_scale.fill_(effective_logit_scale(model))
    return hf


def image_processor(cfg):
    """cxrkit's centre crop and normalisation as a CLIP-style image processor (shortest side -> image_size, centre
    crop, /255, mean/std). Its resampling is PIL's bicubic, not cxrprep's INTER_AREA: equal pixels are not promised."""
    try:
        from transformers import CLIPImageProcessorPil as proc
    except ImportError:  # transformers without the PIL/torchvision split
        from transformers import CLIPImageProcessor as proc
    s = cfg.image_size
    return proc(
        size={"shortest_edge": s},
        crop_size={"height": s, "width": s},
        image_mean=list(cfg.image_mean),
        image_std=list(cfg.image_std),
        do_convert_rgb=True,
    )


def probe(model, hf, tokenizer) -> float:
    """Largest |logit difference| between cxrkit and the HF model on a fixed probe batch."""
    g = torch.Generator().manual_seed(0)
    s = model.config.image_size
    pixels = torch.randn(2, 3, s, s, generator=g)
    t = tokenizer(PROBE_TEXTS, padding=True, truncation=True, max_length=model.config.max_text_len, return_tensors="pt")
    with torch.no_grad():
        ours = model.scale() * model.encode_image(pixels) @ model.encode_text(t["input_ids"], t["attention_mask"]).T
        theirs = hf(pixel_values=pixels, input_ids=t["input_ids"], attention_mask=t["attention_mask"]).logits_per_image
    return float((ours - theirs).abs().max())


def export_hf(checkpoint: str | Path, out: str | Path) -> tuple[Path, str, float]:
    """Write ``out`` (config.json + model.safetensors, tokenizer, preprocessor_config.json, cxrkit.json) atomically.
    -> (out, HF class name, largest logit difference on the probe batch after loading the folder back)."""
    from cxrtrain.checkpoint import load_checkpoint, resolve_checkpoint

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; choose another or remove it")
    ck = resolve_checkpoint(checkpoint)
    model, _ = load_checkpoint(ck)
    model.eval()
    kind = hf_class_for(model)
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write(model, build_hf_model(model), tmp, ck, kind)
        diff = _check_loaded(model, tmp, kind)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, kind, diff


def _write(model, hf, tmp: Path, ck: Path, kind: str) -> None:
    tmp.mkdir(parents=True)
    hf.save_pretrained(tmp)
    old_len = model.tokenizer.model_max_length
    model.tokenizer.model_max_length = model.config.max_text_len  # truncation as cxrkit's tokenize()
    try:
        model.tokenizer.save_pretrained(tmp)
    finally:
        model.tokenizer.model_max_length = old_len
    image_processor(model.config).save_pretrained(tmp)
    info = dict(
        source=str(ck),
        hf_class=kind,
        preset=model.config.preset,
        image_size=model.config.image_size,
        image_mean=list(model.config.image_mean),
        image_std=list(model.config.image_std),
        max_text_len=model.config.max_text_len,
        note="scores equal cxrkit's on the same pixel_values and token ids (probe-checked at export)",
    )
    (tmp / "cxrkit.json").write_text(json.dumps(info, indent=2) + "\n")


def _check_loaded(model, d: Path, kind: str) -> float:
    import transformers

    hf = getattr(transformers, kind).from_pretrained(d).eval()
    tok = transformers.AutoTokenizer.from_pretrained(d)
    diff = probe(model, hf, tok)
    if not diff <= PROBE_ATOL:
        raise RuntimeError(
            f"the exported {kind} scores differ from cxrkit's by {diff:.2e} (> {PROBE_ATOL}) on the probe batch; "
            "nothing was written. Use --format cxrkit instead"
        )
    return diff
