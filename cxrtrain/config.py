"""TrainConfig: one frozen dataclass, loaded from YAML plus ``--set key=value`` overrides.

Keys are flat except ``model.*`` (ModelConfig fields). An unknown key fails naming the closest valid one.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import yaml

from .model import ModelConfig, model_config


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset_weights: dict = field(default_factory=dict)  # dataset name -> share of its row groups per epoch (1.0)
    shuffle_buffer: int = 512  # studies held for shuffling, per loader worker
    num_workers: int = 0  # DataLoader worker processes (0: in the training process)
    clahe: str = "offline"  # offline: the shards' CLAHE copy (fast) | online: CXR-CLIP's, after the crop | off
    clahe_prob: float = 0.5  # apply CLAHE to a view with this probability (CXR-CLIP: 0.5)
    clahe_clip: tuple = (1.0, 4.0)  # online CLAHE clip limit ~ U(lo, hi) (CXR-CLIP: albumentations CLAHE(4.0))
    bt_prob: float = 0.5  # replace a report section by its back-translation with this probability
    crop_scale: tuple = (0.8, 1.1)  # random resized crop: area fraction range (CXR-CLIP), box inside the image
    brightness: float = 0.1  # brightness factor ~ U(1-b, 1+b) (CXR-CLIP: 0.1)
    contrast: float = 0.2  # contrast factor ~ U(1-c, 1+c) (CXR-CLIP: 0.2)
    sentence_sampling: bool = False  # Jang et al.: each text is a random subset of its sentences
    sentences_min: int = 1
    sentences_max: int = 3
    sentence_sections: str = "findings,impression"  # sections the sampled sentences come from
    shuffle_sentences: bool = False  # shuffle the order of sentences within each text
    # model
    model: ModelConfig = field(default_factory=lambda: model_config("tiny"))
    train_image_blocks: int | None = None  # partial fine-tuning: last N image blocks (None: all)
    train_text_blocks: int | None = None  # last N text blocks (None: all; 0: frozen)
    # loss
    loss: str = "cxr-clip"  # clip | cxr-clip
    icl_weight: float = 1.0
    tcl_weight: float = 0.5
    relax_threshold: float | None = None  # positive-pair loss relaxation (None: off)
    # optimisation
    epochs: int = 15
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule still spans all epochs)
    batch_size: int = 64  # studies per optimizer step per rank (CXR-CLIP: 128 studies = 256 pairs)
    accum_steps: int = 1  # micro-batches per optimizer step
    lr: float = 5e-5
    weight_decay: float = 1e-4
    decay_norms_biases: bool = False  # also decay norms, biases and the temperature (CXR-CLIP: decays everything)
    warmup_steps: int | None = None  # None: one epoch, as CXR-CLIP
    grad_clip: float = 1.0
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 only on CUDA, with a grad scaler)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    patience: int = 3  # early stopping: epochs without validation improvement
    log_every: int = 10
    threads: int | None = None  # torch CPU threads (torch.set_num_threads); null: torch's default

    def __post_init__(self) -> None:
        if self.loss not in ("clip", "cxr-clip"):
            raise ValueError(f"loss must be clip or cxr-clip, got {self.loss!r}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (contrastive loss needs negatives), got {self.batch_size}")
        if self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size {self.batch_size} must be divisible by accum_steps {self.accum_steps}")
        if not 1 <= self.sentences_min <= self.sentences_max:
            raise ValueError("need 1 <= sentences_min <= sentences_max")
        if self.clahe not in ("offline", "online", "off"):
            raise ValueError(f"clahe must be offline, online or off, got {self.clahe!r}")
        if not 0 <= self.clahe_prob <= 1:
            raise ValueError(f"clahe_prob must be in [0, 1], got {self.clahe_prob}")
        if len(self.clahe_clip) != 2 or not 0 < self.clahe_clip[0] <= self.clahe_clip[1]:
            raise ValueError(f"clahe_clip must be [lo, hi] with 0 < lo <= hi, got {list(self.clahe_clip)}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1]:
            raise ValueError(f"crop_scale must be [lo, hi] with 0 < lo <= hi, got {list(self.crop_scale)}")
        if not (0 <= self.brightness < 1 and 0 <= self.contrast < 1):
            raise ValueError(f"brightness and contrast must be in [0, 1), got {self.brightness}, {self.contrast}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or null: the torch default), got {self.threads}")
        bad = set(self.sentence_sections.split(",")) - {"findings", "impression"}
        if bad:
            raise ValueError(f"sentence_sections may name findings and impression, got {sorted(bad)}")


def _field_types(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def _coerce(value, typ, key: str):
    """Convert a YAML/CLI value to the field's type."""
    if isinstance(value, str) and typ is not str:
        value = yaml.safe_load(value)  # "3" -> 3, "null" -> None, "[0.8, 1.1]" -> list
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if value is None:
        if type(None) in args:
            return None
        raise ValueError(f"{key} cannot be null")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)][0]
        return _coerce(value, inner, key)
    if typ is tuple or origin is tuple:
        return tuple(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if typ in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        if typ is int and float(value) != int(value):
            raise ValueError(f"{key} must be an integer, got {value!r}")
        return typ(value)
    if typ is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key} must be a mapping, got {value!r}")
        return value
    return value


def _closest(key: str, names) -> str:
    m = difflib.get_close_matches(key, list(names), n=1, cutoff=0.5)
    return f" (did you mean {m[0]!r}?)" if m else ""


def build_config(values: dict) -> TrainConfig:
    """Flat dict (``model.x`` keys or a nested ``model:`` mapping; ``model.preset`` first) -> TrainConfig."""
    values = dict(values)
    nested = values.pop("model", None) or {}
    if isinstance(nested, str):
        nested = {"preset": nested}
    model_over = {k[6:]: v for k, v in list(values.items()) if k.startswith("model.")}
    for k in list(values):
        if k.startswith("model."):
            values.pop(k)
    model_over = {**nested, **model_over}
    mtypes = _field_types(ModelConfig)
    for k in model_over:
        if k not in mtypes:
            raise ValueError(f"unknown config key 'model.{k}'{_closest(k, mtypes)}")
    preset = model_over.pop("preset", "tiny")
    mc = model_config(preset, **{k: _coerce(v, mtypes[k], f"model.{k}") for k, v in model_over.items()})
    types = _field_types(TrainConfig)
    kw = {}
    for k, v in values.items():
        if k not in types:
            raise ValueError(f"unknown config key {k!r}{_closest(k, list(types) + ['model.preset'])}")
        kw[k] = _coerce(v, types[k], k)
    return TrainConfig(model=mc, **kw)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (optional) + ``key=value`` overrides -> TrainConfig. Raises ValueError naming the key."""
    values: dict = {}
    if path:
        try:
            values = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config is a YAML mapping of keys to values")
    for o in overrides:
        if "=" not in o:
            raise ValueError(f"--set expects key=value, got {o!r}")
        k, v = o.split("=", 1)
        k = k.strip()
        if k.startswith("model.") and isinstance(values.get("model"), dict):
            values["model"] = {**values["model"], k[6:]: v}
        else:
            values[k] = v
    return build_config(values)


def config_to_dict(cfg: TrainConfig) -> dict:
    return asdict(cfg)


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML (``cxrtrain run --print-config``); feeding it back as ``--config`` gives
    the same config."""
    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    d = plain(asdict(cfg))
    model = d.pop("model")
    return ("# resolved cxrtrain config (cxrtrain run --print-config); use it as --config\n"
            + yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
            + yaml.safe_dump({"model": model}, sort_keys=False, default_flow_style=None))


def config_from_dict(d: dict) -> TrainConfig:
    from .model import config_from_dict as model_from

    d = dict(d)
    m = model_from(d.pop("model"))
    names = {f.name for f in fields(TrainConfig)}
    d = {k: (tuple(v) if k in ("crop_scale", "clahe_clip") else v) for k, v in d.items() if k in names}
    return replace(TrainConfig(model=m), **d)
