"""TrainConfig: one frozen dataclass, loaded from YAML plus ``--set key=value`` overrides.

Keys are flat except ``model.*`` (ModelConfig fields) and ``log.*`` (LogConfig). An unknown key fails naming
the closest valid one. Every field declares what it accepts next to its default,
``lr: float = opt(5e-5, "help", lo=0, lo_open=True)``: the annotation gives the type, the :class:`Check`
the range or choices; a value outside them is a ConfigError (``--set``/``--config``: exit 2) naming the
key, the value and what is allowed. To add a key: one ``opt(...)`` line (tests/test_config.py checks that
every field declares a Check). ModelConfig's checks live in ``CHECKS`` below.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import yaml

from cxrtrain.model import PRESETS, ModelConfig, model_config
from cxrtrain.safeyaml import YamlRefused, load_yaml


class ConfigError(ValueError):
    """A config value outside its type or range; the message names the key, the value and what is allowed."""


@dataclass(frozen=True)
class Check:
    """What one config field accepts, declared next to its default with :func:`opt`.

    The field's annotation gives the type (int, float, bool, str, tuple, dict, ``X | None``); ``lo``/``hi``
    bound numbers (and the numbers inside a tuple or the values of a dict), ``lo_open``/``hi_open`` make a
    bound strict, ``choices`` lists the allowed strings, ``subset`` the allowed comma-separated items,
    ``length`` fixes a tuple's length and ``ordered`` asks for non-decreasing tuple items."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple = ()
    subset: tuple = ()
    length: int | None = None
    ordered: bool = False

    def _bounds(self) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {self.hi:g}")
        return " and ".join(parts)

    def in_range(self, x: float) -> bool:
        if self.lo is not None and (x < self.lo or (self.lo_open and x == self.lo)):
            return False
        if self.hi is not None and (x > self.hi or (self.hi_open and x == self.hi)):
            return False
        return True

    def describe(self, typ) -> str:
        """The allowed values in words, e.g. 'an integer >= 1'."""
        base, nullable = _base_type(typ)
        if self.choices:
            what = "one of " + ", ".join(map(str, self.choices))
        elif self.subset:
            what = "comma-separated names from " + ", ".join(self.subset)
        elif base is bool:
            what = "true or false"
        elif base in (int, float):
            what = ("an integer" if base is int else "a number") + (f" {self._bounds()}" if self._bounds() else "")
        elif base is tuple:
            n = f"{self.length} " if self.length else ""
            what = f"a list of {n}numbers" + (f" each {self._bounds()}" if self._bounds() else "")
            if self.ordered:
                what += ", in increasing order"
        elif base is dict:
            what = "a mapping of names to numbers" + (f" {self._bounds()}" if self._bounds() else "")
        elif base is str:
            what = "a string"
        else:
            what = getattr(base, "__name__", str(base))
        return what + (" (or null)" if nullable else "")

    def problem(self, value, typ) -> str | None:
        """None when ``value`` fits, else what is wrong (in words)."""
        base, nullable = _base_type(typ)
        if value is None:
            return None if nullable else "cannot be null"
        ok = True
        if base is bool:
            ok = isinstance(value, bool)
        elif base in (int, float):
            ok = _is_number(value) and (base is float or float(value).is_integer()) and self.in_range(float(value))
        elif base is tuple:
            ok = (
                isinstance(value, (tuple, list))
                and all(_is_number(v) and self.in_range(float(v)) for v in value)
                and (self.length is None or len(value) == self.length)
                and (not self.ordered or list(value) == sorted(value))
            )
        elif base is dict:
            ok = isinstance(value, dict) and all(
                isinstance(k, str) and _is_number(v) and self.in_range(float(v)) for k, v in value.items()
            )
        elif base is str:
            ok = isinstance(value, str)
            if ok and self.choices:
                ok = value in self.choices
            if ok and self.subset:
                ok = bool(value) and set(value.split(",")) <= set(self.subset)
        return None if ok else f"must be {self.describe(typ)}"


def opt(default, help: str = "", **check):
    """A config field: its default, its :class:`Check` (``lo``, ``hi``, ``choices``, ...) and a help line."""
    md = {"check": Check(**check), "help": help}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=md)
    return field(default=default, metadata=md)


def _is_number(v) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _base_type(typ):
    """``int | None`` -> (int, True); ``tuple[float, ...]`` -> (tuple, False)."""
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        return _base_type(inner[0])[0], type(None) in args
    if origin is not None:
        return origin, False
    return typ, False


def _show(value) -> str:
    return "null" if value is None else repr(list(value)) if isinstance(value, tuple) else repr(value)


def check_fields(obj, prefix: str = "") -> None:
    """Check every field of a config dataclass that declares a :class:`Check` (by :func:`opt` or in
    ``CHECKS``); fields without one are type-checked. Raises ConfigError naming key, value and range."""
    types = _field_types(type(obj))
    extra = CHECKS.get(type(obj).__name__, {})
    for f in fields(obj):
        typ = types[f.name]
        if is_dataclass(typ):
            continue
        chk = f.metadata.get("check") or extra.get(f.name) or Check()
        value = getattr(obj, f.name)
        msg = chk.problem(value, typ)
        if msg:
            raise ConfigError(f"{prefix}{f.name}={_show(value)}: {msg}")


@dataclass(frozen=True)
class LogConfig:
    """Optional loggers beside metrics.jsonl (which stays the source of truth); keys ``log.*``."""

    tensorboard: bool = opt(
        False, "write TensorBoard events to OUT/tensorboard/ (extra: pip install 'cxrkit[tensorboard]')"
    )
    wandb: str | None = opt(None, "a Weights & Biases project name (extra: pip install 'cxrkit[wandb]')")
    wandb_mode: str | None = opt(
        None, "online | offline (None: W&B's own default, WANDB_MODE)", choices=("online", "offline", "disabled")
    )
    rank_audit: bool = opt(False, "write OUT/ranks/rank-R.json: study ids per step, sha256 of the final weights")


@dataclass(frozen=True)
class TrainConfig:
    # data
    dataset_weights: dict = opt({}, "dataset name -> share of its rows per epoch (1.0)", lo=0)
    shuffle_buffer: int = opt(512, "studies held for shuffling per loader worker, shared by the datasets", lo=1)
    avoid_same_patient: bool = opt(True, "keep two studies of one patient out of one batch when the data allows")
    prompt_render: str = opt(
        "offline",
        "label datasets' prompt reports: offline = the variants rendered by cxrprep | online = a fresh one per draw",
        choices=("offline", "online"),
    )
    prompt_templates: str | None = opt(None, "prompt_render online: template file (None: each manifest's own)")
    num_workers: int = opt(0, "DataLoader worker processes (0: in the training process)", lo=0, hi=256)
    watchdog_s: float = opt(
        600.0, "stop with an error naming where when no training batch arrives for this long (0: never)", lo=0
    )
    clahe: str = opt(
        "offline",
        "offline: the shards' CLAHE copy (fast) | online: CXR-CLIP's, after the crop | off",
        choices=("offline", "online", "off"),
    )
    clahe_prob: float = opt(0.5, "apply CLAHE to a view with this probability (CXR-CLIP: 0.5)", lo=0, hi=1)
    clahe_clip: tuple = opt(
        (1.0, 4.0),
        "online CLAHE clip limit ~ U(lo, hi) (CXR-CLIP: albumentations CLAHE(4.0))",
        lo=0,
        lo_open=True,
        hi=100,
        length=2,
        ordered=True,
    )
    bt_prob: float = opt(0.5, "replace a report section by its back-translation with this probability", lo=0, hi=1)
    crop_scale: tuple = opt(
        (0.8, 1.1),
        "random resized crop: area fraction range (CXR-CLIP), box inside the image",
        lo=0,
        hi=4,
        lo_open=True,
        length=2,
        ordered=True,
    )
    brightness: float = opt(0.1, "brightness factor ~ U(1-b, 1+b) (CXR-CLIP: 0.1)", lo=0, hi=1, hi_open=True)
    contrast: float = opt(0.2, "contrast factor ~ U(1-c, 1+c) (CXR-CLIP: 0.2)", lo=0, hi=1, hi_open=True)
    sentence_sampling: bool = opt(False, "Jang et al.: each text is a random subset of its sentences")
    sentences_min: int = opt(1, "fewest sentences sampled", lo=1)
    sentences_max: int = opt(3, "most sentences sampled", lo=1)
    sentence_sections: str = opt(
        "findings,impression", "sections the sampled sentences come from", subset=("findings", "impression")
    )
    shuffle_sentences: bool = opt(False, "shuffle the order of sentences within each text")
    # model
    model: ModelConfig = field(default_factory=lambda: model_config("tiny"))
    train_image_blocks: int | None = opt(None, "partial fine-tuning: last N image blocks (None: all)", lo=0)
    train_text_blocks: int | None = opt(None, "last N text blocks (None: all; 0: frozen)", lo=0)
    train_frozen_norms: bool = opt(False, "with train_*_blocks: 0, still train that tower's norm layers")
    sync_bn: bool = opt(True, "BatchNorm -> SyncBatchNorm under multi-GPU DDP on CUDA (CXR-CLIP's ResNet-50)")
    # loss
    loss: str = opt(
        "cxr-clip",
        "clip: one pair (open_clip) | cxr-clip-mvs: CXR-CLIP's 'clip' config, 4 pairs | cxr-clip: MVS+ICL+TCL",
        choices=("clip", "cxr-clip-mvs", "cxr-clip"),
    )
    icl_weight: float = opt(1.0, "weight of the image-image term (cxr-clip)", lo=0)
    tcl_weight: float = opt(0.5, "weight of the text-text term (cxr-clip)", lo=0)
    relax_threshold: float | None = opt(
        None, "positive-pair loss relaxation, formula ours (docs/batches.md) (None: off)", lo=-1, hi=1
    )
    # optimisation
    epochs: int = opt(15, "passes over the train split", lo=1)
    max_steps: int | None = opt(
        None, "stop after this many optimizer steps (the schedule still spans all epochs)", lo=1
    )
    batch_size: int = opt(64, "studies per optimizer step per rank (CXR-CLIP: 128 studies = 256 pairs)", lo=2)
    accum_steps: int = opt(1, "micro-batches per optimizer step", lo=1)
    lr: float = opt(5e-5, "peak learning rate", lo=0, lo_open=True, hi=10)
    weight_decay: float = opt(1e-4, "AdamW weight decay", lo=0)
    decay_norms_biases: bool = opt(False, "also decay norms, biases and the temperature (CXR-CLIP: decays everything)")
    warmup_steps: int | None = opt(None, "None: one epoch, as CXR-CLIP", lo=0)
    grad_clip: float = opt(1.0, "max gradient norm (0: off)", lo=0)
    precision: str = opt("fp32", "fp16 only on CUDA, with a grad scaler", choices=("fp32", "bf16", "fp16"))
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    seed: int = opt(0, "seed of sampling, augmentation and initialisation", lo=0)
    init_from: str | None = opt(
        None, "start from a run's weights (a run or checkpoint folder, e.g. from cxrtrain import); its model.* is used"
    )
    patience: int = opt(3, "early stopping: epochs without validation improvement", lo=1)
    log_every: int = opt(10, "print a log line every N steps", lo=1)
    threads: int | None = opt(None, "torch CPU threads (torch.set_num_threads); null: torch's default", lo=1, hi=1024)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        check_fields(self)
        check_fields(self.model, "model.")
        check_fields(self.log, "log.")
        if self.batch_size % self.accum_steps:
            raise ConfigError(f"batch_size={self.batch_size} must be divisible by accum_steps={self.accum_steps}")
        if self.sentences_min > self.sentences_max:
            raise ConfigError(f"sentences_min={self.sentences_min} must be <= sentences_max={self.sentences_max}")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            raise ConfigError(f"device={self.device!r}: must be auto, cpu, cuda or cuda:N")


# ModelConfig lives in model.py; its fields' checks are declared here (a test asserts every field has one).
CHECKS: dict[str, dict[str, Check]] = {
    "ModelConfig": dict(
        preset=Check(choices=tuple(PRESETS)),
        image_encoder=Check(),
        text_encoder=Check(),
        image_size=Check(lo=16, hi=4096),
        image_mean=Check(lo=0, hi=1, length=3),
        image_pooling=Check(choices=("pooler", "mean", "first")),
        proj_bias=Check(),
        image_std=Check(lo=0, lo_open=True, hi=1, length=3),
        embed_dim=Check(lo=1, hi=65536),
        text_pooling=Check(choices=("cls", "mean", "eos")),
        max_text_len=Check(lo=1, hi=8192),
        init_temperature=Check(lo=0, lo_open=True, hi=1),
        min_temperature=Check(lo=0, lo_open=True, hi=1),  # null: no cap (CXR-CLIP)
        random_init=Check(),
        image_weights=Check(),
    ),
}

# The help of each model.* key (printed by --print-config), from ModelConfig's comments in cxrtrain/model.py.
MODEL_HELP: dict[str, str] = dict(
    preset="named architecture the other model.* keys start from: " + ", ".join(PRESETS),
    image_encoder='image tower: hub id, local dir, or "config:tiny-resnet"',
    text_encoder='text tower: hub id, local dir, "minilm", or "config:tiny-bert[-WIDTH]" (2 layers, random init)',
    image_size="square input size after augmentation / centre crop",
    image_mean="per-channel normalisation mean (of the preset's tower)",
    image_std="per-channel normalisation std (of the preset's tower)",
    embed_dim="projection size of the joint space (CXR-CLIP: 512)",
    image_pooling="pooler (the tower's pooled output) | mean (of the final hidden states) | first (first token)",
    text_pooling="cls (first token) | mean (over real tokens) | eos (last real token, as CXR-CLIP)",
    proj_bias="bias in the linear projections (CXR-CLIP: yes; CLIP: no)",
    max_text_len="longest text in tokens; longer texts are truncated",
    init_temperature="initial softmax temperature (CLIP: 0.07)",
    min_temperature="lower bound of the learnable temperature (logit scale <= 1/this); null: no cap (CXR-CLIP)",
    random_init="build the towers from default configs without pretrained weights (benchmarks)",
    image_weights="image_encoder torchvision/resnet50: a torchvision-format .pth file (default: torchvision's cache)",
)


def field_check(cls, name: str) -> Check | None:
    """The Check a config field declares (None: type only)."""
    f = {f.name: f for f in fields(cls)}[name]
    return f.metadata.get("check") or CHECKS.get(cls.__name__, {}).get(name)


def _field_types(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls)


def _coerce(value, typ, key: str):
    """Convert a YAML/CLI value towards the field's type; what still does not fit is reported by the
    field's Check (naming key, value and the allowed range)."""
    if isinstance(value, str) and _base_type(typ)[0] is not str:
        try:
            value = load_yaml(value, f"the value of {key}")  # "3" -> 3, "null" -> None, "[0.8, 1.1]" -> list
        except YamlRefused as e:
            raise ConfigError(str(e)) from None
        except yaml.YAMLError:
            pass
    base, _ = _base_type(typ)
    if value is None:
        return None
    if base is tuple and isinstance(value, list):
        return tuple(value)
    if base in (int, float) and isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
        try:
            value = float(value)
        except ValueError:
            return value
    if base is int and _is_number(value) and float(value).is_integer():
        return int(value)
    if base is float and _is_number(value):
        return float(value)
    return value


def _check_value(cls, key: str, value, prefix: str = "") -> None:
    typ = _field_types(cls)[key]
    chk = field_check(cls, key) or Check()
    msg = chk.problem(value, typ)
    if msg:
        raise ConfigError(f"{prefix}{key}={_show(value)}: {msg}")


def _closest(key: str, names) -> str:
    m = difflib.get_close_matches(key, list(names), n=1, cutoff=0.5)
    return f" (did you mean {m[0]!r}?)" if m else ""


SECTIONS = ("model", "log")  # nested keys: model.* (ModelConfig), log.* (LogConfig)


def _section(values: dict, name: str) -> dict:
    """Pop ``name: {...}`` and ``name.key`` entries from ``values`` into one dict of overrides."""
    nested = values.pop(name, None)
    if nested is None:
        nested = {}
    if name == "model" and isinstance(nested, str):
        nested = {"preset": nested}
    if not isinstance(nested, dict):
        hint = "a preset name (" + ", ".join(PRESETS) + ") or " if name == "model" else ""
        raise ConfigError(f"{name}={_show(nested)}: must be {hint}a mapping of {name}.* keys")
    dotted = {k[len(name) + 1 :]: values.pop(k) for k in list(values) if k.startswith(f"{name}.")}
    return {**nested, **dotted}


def build_config(values: dict) -> TrainConfig:
    """Flat dict (``model.x`` / ``log.x`` keys or nested ``model:`` / ``log:`` mappings; ``model.preset``
    first) -> TrainConfig. Raises ConfigError (a ValueError) naming the key, the value and what is allowed."""
    values = dict(values)
    model_over, log_over = _section(values, "model"), _section(values, "log")
    mtypes = _field_types(ModelConfig)
    for k in model_over:
        if k not in mtypes:
            raise ConfigError(f"unknown config key 'model.{k}'{_closest(k, mtypes)}")
    model_over = {k: _coerce(v, mtypes[k], f"model.{k}") for k, v in model_over.items()}
    for k, v in model_over.items():
        if k != "preset" or not isinstance(v, str):  # a preset name: model_config names the closest preset
            _check_value(ModelConfig, k, v, "model.")
    preset = model_over.pop("preset", "tiny")
    mc = model_config(preset, **model_over)
    ltypes = _field_types(LogConfig)
    for k in log_over:
        if k not in ltypes:
            raise ConfigError(f"unknown config key 'log.{k}'{_closest(k, ltypes)}")
    lc = LogConfig(**{k: _coerce(v, ltypes[k], f"log.{k}") for k, v in log_over.items()})
    types = {k: t for k, t in _field_types(TrainConfig).items() if k not in SECTIONS}
    kw = {}
    for k, v in values.items():
        if k not in types:
            raise ConfigError(f"unknown config key {k!r}{_closest(k, list(types) + ['model.preset'])}")
        kw[k] = _coerce(v, types[k], k)
    return TrainConfig(model=mc, log=lc, **kw)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file (optional) + ``key=value`` overrides -> TrainConfig. Raises ValueError naming the key."""
    from cxrtrain.configlines import locate, yaml_error

    values: dict = {}
    text = ""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
            values = load_yaml(text, str(path)) or {}
        except YamlRefused as e:
            raise ConfigError(str(e)) from None
        except yaml.YAMLError as e:
            raise ConfigError(yaml_error(path, e)) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot read ({e})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config is a YAML mapping of keys to values")
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"--set expects key=value, got {o!r}")
        k, v = o.split("=", 1)
        k = k.strip()
        sec = k.split(".", 1)[0]
        if sec in SECTIONS and "." in k and isinstance(values.get(sec), dict):
            values[sec] = {**values[sec], k[len(sec) + 1 :]: v}
        else:
            values[k] = v
    try:
        return build_config(values)
    except ConfigError as e:  # a key the file sets: name the file and its line
        set_keys = {o.split("=", 1)[0].strip() for o in overrides}
        msg = str(e)
        raise ConfigError(
            msg if not path or any(msg.startswith(f"{k}=") for k in set_keys) else locate(msg, path, text)
        ) from None


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

    from cxrtrain.confighelp import commented_yaml

    d = plain(asdict(cfg))
    d["model"] = d.pop("model")  # last, as before
    return "# resolved cxrtrain config (cxrtrain run --print-config); use it as --config\n" + commented_yaml(
        d, TrainConfig, LogConfig, MODEL_HELP
    )


def config_from_dict(d: dict) -> TrainConfig:
    from cxrtrain.model import config_from_dict as model_from

    d = dict(d)
    m = model_from(d.pop("model"))
    lg = d.pop("log", None) or {}
    lg = LogConfig(**{k: v for k, v in lg.items() if k in {f.name for f in fields(LogConfig)}})
    names = {f.name for f in fields(TrainConfig)}
    types = _field_types(TrainConfig)
    d = {
        k: (tuple(v) if _base_type(types[k])[0] is tuple and isinstance(v, list) else v)
        for k, v in d.items()
        if k in names
    }
    return replace(TrainConfig(model=m, log=lg), **d)
