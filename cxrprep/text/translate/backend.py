"""Marian models for back-translation: the decoding and augment settings, resolving a model (local folder
or Hugging Face cache), and the two backends (transformers, CTranslate2) that batch-translate sentences."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

DEFAULT_MODELS = {"it": ("Helsinki-NLP/opus-mt-en-it", "Helsinki-NLP/opus-mt-it-en")}
METHODS = ("greedy", "beam", "sample")
BACKENDS = ("transformers", "ct2")
COMPUTE_TYPES = ("auto", "float32", "float16", "bfloat16", "int8")


class ModelNotAvailable(RuntimeError):
    """A model is neither a local directory nor available offline."""


# -- configuration ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decoding:
    """How both directions decode.

    method: ``greedy``, ``beam`` (``beams`` >= 2) or ``sample`` (multinomial with ``temperature`` > 0,
    restricted to the ``top_k`` most likely tokens, 0 = all; what CXR-CLIP used). ``max_new_tokens``
    caps every output (tokens). ``seed`` seeds sampling. ``force_length``: every output of a batch is
    exactly as many tokens as the longest input of the batch (benchmarks only, so two approaches do the
    same work per token)."""

    method: str = "greedy"
    beams: int = 4
    temperature: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    seed: int = 0
    force_length: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"--decoding must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "beam" and self.beams < 2:
            raise ValueError(f"--beams must be >= 2 for beam search, got {self.beams}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top-k must be >= 0, got {self.top_k}")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")

    def key(self) -> dict:
        """Only the settings that change the output (beams mean nothing to greedy decoding, ...)."""
        d: dict = dict(method=self.method, max_new_tokens=self.max_new_tokens)
        if self.method == "beam":
            d["beams"] = self.beams
        if self.method == "sample":
            d.update(temperature=self.temperature, top_k=self.top_k, seed=self.seed)
        if self.force_length:
            d["force_length"] = True
        return d


@dataclass(frozen=True)
class AugmentConfig:
    """Options of ``cxrprep augment`` (see its --help). ``cache_dir`` holds the translation cache and
    converted CTranslate2 models; ``variants`` back-translations per section (> 1 needs sampling);
    ``batch_size`` the most sentences per batch and ``batch_tokens`` the most padded tokens per batch
    (sentences are sorted by token length, so short ones go in big batches); ``threads`` CPU threads
    (0 = library default)."""

    backtranslate: str = "it"
    forward_model: str | None = None
    backward_model: str | None = None
    backend: str = "transformers"
    device: str = "auto"
    compute_type: str = "auto"
    decoding: Decoding = field(default_factory=Decoding)
    variants: int = 1
    batch_size: int = 256
    batch_tokens: int = 2048
    cache_dir: Path = Path("~/.cache/cxrkit/translate")
    threads: int = 0
    check_numbers: bool = True

    def __post_init__(self) -> None:
        if self.backtranslate not in DEFAULT_MODELS and not (self.forward_model and self.backward_model):
            raise ValueError(
                f"--backtranslate {self.backtranslate!r} has no default models (known: "
                f"{', '.join(DEFAULT_MODELS)}); give --forward-model and --backward-model"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.compute_type not in COMPUTE_TYPES:
            raise ValueError(f"--compute-type must be one of {', '.join(COMPUTE_TYPES)}, got {self.compute_type!r}")
        if self.backend == "transformers" and self.compute_type == "int8":
            raise ValueError("--compute-type int8 needs --backend ct2")
        if self.backend == "ct2" and self.compute_type == "bfloat16":
            raise ValueError("--compute-type bfloat16 needs --backend transformers (CTranslate2: int8 on CPU)")
        if self.variants < 1:
            raise ValueError(f"--variants must be >= 1, got {self.variants}")
        if self.variants > 1 and self.decoding.method != "sample":
            raise ValueError(
                f"--variants {self.variants} needs --decoding sample (greedy and beam search "
                "give the same output every time)"
            )
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.batch_tokens < 1:
            raise ValueError(f"--batch-tokens must be >= 1, got {self.batch_tokens}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")

    @property
    def models(self) -> tuple[str, str]:
        fwd, bwd = DEFAULT_MODELS.get(self.backtranslate, (None, None))
        return self.forward_model or fwd, self.backward_model or bwd


# -- models -------------------------------------------------------------------------------------
_MODEL_FILES = ("config.json", "vocab.json", "source.spm", "target.spm", "model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class ModelRef:
    """A resolved Marian model: local ``path``, a readable ``id`` and the sha256 of its files."""

    path: Path
    id: str
    sha256: str

    @property
    def key(self) -> str:
        return f"{self.id}@{self.sha256[:16]}"


def _hash_model(path: Path) -> str:
    from cxrprep.shards import sha256_file

    h = hashlib.sha256()
    for name in _MODEL_FILES:
        f = path / name
        if f.exists():
            h.update(f"{name}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


def resolve_model(name: str, option: str) -> ModelRef:
    """A local Marian directory, or a hub name found in the local Hugging Face cache (downloaded when
    the network is allowed). Raises ModelNotAvailable with how to provide the model."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists() or not (p / "vocab.json").exists():
            raise ModelNotAvailable(
                f"{option} {p}: not a Marian model folder (needs config.json, vocab.json, "
                "source.spm, target.spm and the weights)"
            )
        return ModelRef(p.resolve(), p.resolve().name, _hash_model(p))
    if p.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotAvailable(
            f"{option} {name}: no such model folder; give a Marian folder "
            "(config.json, vocab.json, source.spm, target.spm, weights) or a hub name"
        )
    try:
        from huggingface_hub import snapshot_download

        patterns = [*_MODEL_FILES, "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"]
        try:
            local = snapshot_download(name, allow_patterns=patterns, local_files_only=True)
        except Exception:
            if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1":
                raise
            local = snapshot_download(name, allow_patterns=patterns)
    except Exception as e:
        raise ModelNotAvailable(
            f"{option} {name}: not in the local Hugging Face cache and it cannot be downloaded here "
            f"({type(e).__name__}). Either pass {option} DIR with a local Marian folder (e.g. from "
            f"`huggingface-cli download {name} --local-dir DIR` on a machine with network), or run once "
            f"with network access (HF_HUB_OFFLINE unset) to download {name}."
        ) from None
    local = Path(local)
    return ModelRef(local, name, _hash_model(local))


def _model_limit(config) -> int:
    return int(getattr(config, "max_position_embeddings", 512) or 512)


def _quiet_transformers() -> None:
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")


class Backend:
    """One translation direction. ``translate`` returns one string per input, in order."""

    name = ""
    precision = ""

    def __init__(self, model: ModelRef) -> None:
        from transformers import MarianTokenizer

        _quiet_transformers()
        self.model = model
        self.tok = MarianTokenizer.from_pretrained(str(model.path))
        self.limit = 512

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """Input length in tokens (with </s>), before truncation."""
        return [len(ids) for ids in self.tok(list(texts), truncation=False)["input_ids"]]

    def translate(self, texts: Sequence[str], dec: Decoding, seed: int) -> list[str]:
        raise NotImplementedError

    def _lengths(self, n_in: int, dec: Decoding) -> tuple[int, int]:
        """(min, max) new tokens for a batch whose longest input has ``n_in`` tokens."""
        cap = min(dec.max_new_tokens, self.limit - 1)  # a pivot output must fit the next model with </s>
        if dec.force_length:
            n = min(n_in, cap)
            return n, n
        # a back-translation is about as long as its source: 2x + 8 tokens stops a degenerate output
        # (repetition) from holding its whole batch for max_new_tokens decoding steps
        return 0, min(cap, 2 * n_in + 8)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model: ModelRef, device: str = "auto", compute_type: str = "auto") -> None:
        super().__init__(model)
        import torch
        from transformers import MarianMTModel

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is available to torch")
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "float32"
        self.device = device
        self.precision = compute_type
        m = MarianMTModel.from_pretrained(str(model.path)).eval()
        self.net = m.to(device=device, dtype=getattr(torch, compute_type))
        self.limit = _model_limit(m.config)

    def translate(self, texts: Sequence[str], dec: Decoding, seed: int) -> list[str]:
        import torch

        enc = self.tok(list(texts), return_tensors="pt", padding=True, truncation=True, max_length=self.limit)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        lo, hi = self._lengths(int(enc["input_ids"].shape[1]), dec)
        # no forced </s> at the length cap: CTranslate2 does not force one either, so greedy outputs match
        kw: dict = dict(max_new_tokens=hi, min_new_tokens=lo, num_beams=1, do_sample=False, forced_eos_token_id=None)
        if dec.method == "beam":
            kw.update(num_beams=dec.beams, early_stopping=True)
        elif dec.method == "sample":
            kw.update(do_sample=True, temperature=dec.temperature, top_k=dec.top_k or None)
            torch.manual_seed(seed)
        if dec.force_length:  # never stop early, whatever the model predicts
            kw.update(eos_token_id=None)
        with torch.inference_mode():
            out = self.net.generate(**enc, **kw)
        return self.tok.batch_decode(out, skip_special_tokens=True)


def _import_ct2():
    try:
        import ctranslate2
    except ImportError:
        raise RuntimeError(
            "--backend ct2 needs CTranslate2: pip install 'cxrkit[ct2]' (or pip install "
            "ctranslate2), or use --backend transformers"
        ) from None
    return ctranslate2


class CT2Backend(Backend):
    name = "ct2"

    def __init__(
        self, model: ModelRef, cache_dir: Path, device: str = "auto", compute_type: str = "auto", threads: int = 0
    ) -> None:
        super().__init__(model)
        ct2 = _import_ct2()
        from transformers import AutoConfig

        if device == "auto":
            device = "cuda" if ct2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        self.device, self.precision = device, compute_type
        self.limit = _model_limit(AutoConfig.from_pretrained(str(model.path)))
        self.ct2_dir = convert_ct2(model, cache_dir, compute_type)
        self.tr = ct2.Translator(str(self.ct2_dir), device=device, compute_type=compute_type, intra_threads=threads)
        self._ct2 = ct2

    def translate(self, texts: Sequence[str], dec: Decoding, seed: int) -> list[str]:
        ids = self.tok(list(texts), truncation=True, max_length=self.limit)["input_ids"]
        src = [self.tok.convert_ids_to_tokens(x) for x in ids]
        lo, hi = self._lengths(max(len(x) for x in ids), dec)
        kw: dict = dict(max_decoding_length=hi, min_decoding_length=lo, beam_size=1, max_batch_size=0)
        if dec.method == "beam":
            kw["beam_size"] = dec.beams
        elif dec.method == "sample":
            kw.update(sampling_topk=dec.top_k, sampling_temperature=dec.temperature)
            self._ct2.set_random_seed(seed)
        if dec.force_length:
            kw["end_token"] = []  # no token ends a hypothesis: outputs are exactly max_decoding_length
        res = self.tr.translate_batch(src, **kw)
        out = []
        for r in res:
            toks = [t for t in r.hypotheses[0] if t not in self.tok.all_special_tokens]
            out.append(self.tok.convert_tokens_to_string(toks))
        return out


def convert_ct2(model: ModelRef, cache_dir: Path, compute_type: str) -> Path:
    """Convert a Marian folder to CTranslate2 once (``cache_dir/ct2/<id>-<hash>-<type>``); atomic."""
    ct2 = _import_ct2()
    quant = {"float32": None, "float16": "float16", "int8": "int8"}[compute_type]
    out = Path(cache_dir).expanduser() / "ct2" / f"{model.id}-{model.sha256[:16]}-{compute_type}"
    if (out / "model.bin").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ct2.converters.TransformersConverter(str(model.path)).convert(str(tmp), quantization=quant, force=True)
    try:
        os.replace(tmp, out)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _check_weights(model: ModelRef) -> None:
    """Only weights are ever loaded: ``model.safetensors`` (no code), or a ``pytorch_model.bin`` that
    ``torch.load(weights_only=True)`` accepts. A .bin pickle that holds anything else (it could run code
    when unpickled) is refused here, before transformers or CTranslate2 see it."""
    if (model.path / "model.safetensors").exists():
        return
    binary = model.path / "pytorch_model.bin"
    if not binary.exists():
        raise ModelNotAvailable(f"{model.path}: no model.safetensors (or pytorch_model.bin) weights file")
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol before refusing it
            torch.load(binary, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelNotAvailable(
            f"{binary}: refusing to load it: the pickle holds more than tensors and could "
            f"run code (only weights are loaded); use a model.safetensors file"
        ) from None
    except (OSError, RuntimeError, ValueError, EOFError) as e:
        raise ModelNotAvailable(f"{binary}: not a readable weights file ({type(e).__name__}: {e})") from None


def load_backend(model: ModelRef, cfg: AugmentConfig) -> Backend:
    """Load one direction. A model folder whose files cannot be loaded raises ModelNotAvailable naming
    the folder and the reason (no traceback for a broken download)."""
    _check_weights(model)
    try:
        if cfg.backend == "ct2":
            return CT2Backend(model, cfg.cache_dir, cfg.device, cfg.compute_type, cfg.threads)
        return TransformersBackend(model, cfg.device, cfg.compute_type)
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ModelNotAvailable(
            f"{model.path}: cannot load the Marian model ({type(e).__name__}: {' '.join(str(e).split())[:300]})"
        ) from None
    except Exception as e:
        if type(e).__name__ in ("SafetensorError", "HeaderTooLarge", "UnpicklingError"):
            raise ModelNotAvailable(f"{model.path}: broken weights file ({type(e).__name__}: {e})") from None
        raise


# -- text guards --------------------------------------------------------------------------------
