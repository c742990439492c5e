"""Batched, cached Marian back-translation (English -> pivot -> English) of report sentences.

The unit of work is the *sentence*: every sentence of ``findings_sentences`` and ``impression_sentences``
is collected over the whole dataset, de-duplicated (real reports repeat themselves a lot), sorted by
token length into batches (little padding) and translated once per variant. Results go into a
persistent SQLite cache keyed by (sentence, forward model id+hash, backward model id+hash, decoding
settings, variant index), committed after every batch: a re-run, another dataset with the same
sentences, or a run that was killed half-way reuses every finished translation.

Guarantees on every output sentence:

* ``___`` (de-identified text in MIMIC) survives: it is replaced by a placeholder before translation and
  restored after; if the model dropped or duplicated a placeholder, the source sentence is kept (counted
  as ``deid_fallback``);
* a number of the source (``2.5`` in "2.5 cm") that is missing from the back-translation means the
  meaning changed: the source sentence is kept (counted as ``number_fallback``);
* inputs longer than the model's limit (``max_position_embeddings`` tokens) are truncated and counted.

Backends: ``transformers`` (CPU in float32 or bfloat16, or CUDA in float16) and ``ct2`` (CTranslate2;
int8 on CPU, float16 on CUDA; the Marian folder is converted once into ``cache_dir/ct2/``). Greedy output is the same
from both
at the same precision.

``run_augment`` rewrites a finished dataset folder with ``findings_bt`` / ``impression_bt`` filled: the
new parts go to a hidden sibling folder and are swapped in atomically, so a kill at any moment leaves
either the old complete dataset or the new complete one.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

DEFAULT_MODELS = {"it": ("Helsinki-NLP/opus-mt-en-it", "Helsinki-NLP/opus-mt-it-en")}
METHODS = ("greedy", "beam", "sample")
BACKENDS = ("transformers", "ct2")
COMPUTE_TYPES = ("auto", "float32", "float16", "bfloat16", "int8")
SECTIONS = (("findings_sentences", "findings_bt"), ("impression_sentences", "impression_bt"))

DEID = re.compile(r"_{3,}")
PLACEHOLDER = "ZZZ"  # a token Marian copies through; digits are avoided so the number check ignores it
_PLACEHOLDER_RE = re.compile(PLACEHOLDER, re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

# cache flags, one bit each
TRUNCATED, NUMBER_FALLBACK, DEID_FALLBACK = 1, 2, 4


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
def protect(sentence: str) -> tuple[str, int]:
    """Replace every ``___`` run by the placeholder; return (text, number of placeholders)."""
    text, n = DEID.subn(PLACEHOLDER, sentence)
    return text, n


def restore(source: str, translated: str) -> str | None:
    """Put the source's ``___`` runs back in order; None if the placeholder count changed."""
    runs = DEID.findall(source)
    if len(_PLACEHOLDER_RE.findall(translated)) != len(runs):
        return None
    it = iter(runs)
    return _PLACEHOLDER_RE.sub(lambda m: next(it), translated)


def numbers(text: str) -> list[str]:
    """Numbers in ``text``, decimal commas read as points (Italian writes 2,5 cm)."""
    return sorted(n.replace(",", ".") for n in _NUMBER.findall(text))


def keeps_numbers(source: str, translated: str) -> bool:
    """True if every number of ``source`` (with multiplicity) is in ``translated``."""
    have = numbers(translated)
    for n in numbers(source):
        if n in have:
            have.remove(n)
        else:
            return False
    return True


# -- cache --------------------------------------------------------------------------------------
class CacheError(RuntimeError):
    """The translation cache cannot be used (a file where the folder should be, a corrupt database)."""


class TranslationCache:
    """SQLite table (setting, sentence, variant) -> (output, flags). ``setting`` is the sha256 of the
    models' keys and the decoding settings, described in the ``settings`` table. Problems with the
    database raise CacheError naming the file and what to do."""

    def __init__(self, path: Path) -> None:
        path = Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise CacheError(
                f"--cache-dir {path.parent}: a file is in the way; the cache needs a folder (pass another --cache-dir)"
            ) from None
        except OSError as e:
            raise CacheError(f"--cache-dir {path.parent}: cannot create it ({e.strerror or e})") from None
        if path.is_dir():
            raise CacheError(
                f"{path}: is a folder; the translation cache is a SQLite file (remove the folder "
                "or pass another --cache-dir)"
            )
        self.path = path
        try:
            self.db = sqlite3.connect(str(path))
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS settings (id TEXT PRIMARY KEY, description TEXT)")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS bt (setting TEXT, sentence TEXT, variant INTEGER, "
                "output TEXT NOT NULL, flags INTEGER NOT NULL, PRIMARY KEY (setting, sentence, "
                "variant)) WITHOUT ROWID"
            )
            self.db.commit()
        except sqlite3.Error as e:
            raise self._error(e) from None

    def _error(self, e: sqlite3.Error) -> CacheError:
        return CacheError(
            f"{self.path}: the translation cache is not a usable SQLite database ({e}); it is "
            "only a cache: delete it (and its -wal/-shm files) or pass another --cache-dir"
        )

    def setting(self, description: dict) -> str:
        text = json.dumps(description, sort_keys=True)
        sid = hashlib.sha256(text.encode()).hexdigest()[:32]
        try:
            self.db.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", (sid, text))
            self.db.commit()
        except sqlite3.Error as e:
            raise self._error(e) from None
        return sid

    def get(self, setting: str, sentences: Sequence[str], variant: int) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        for i in range(0, len(sentences), 500):
            chunk = list(sentences[i : i + 500])
            q = (
                "SELECT sentence, output, flags FROM bt WHERE setting=? AND variant=? AND sentence IN "
                f"({','.join('?' * len(chunk))})"
            )
            try:
                for s, o, f in self.db.execute(q, [setting, variant, *chunk]):
                    out[s] = (o, f)
            except sqlite3.Error as e:
                raise self._error(e) from None
        return out

    def put(self, setting: str, variant: int, items: Iterable[tuple[str, str, int]]) -> None:
        """Store (sentence, output, flags) rows in one transaction."""
        try:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO bt VALUES (?, ?, ?, ?, ?)",
                    [(setting, s, variant, o, f) for s, o, f in items],
                )
        except sqlite3.Error as e:
            raise self._error(e) from None

    def close(self) -> None:
        self.db.close()


# -- the sentence pipeline ----------------------------------------------------------------------
@dataclass
class TranslateStats:
    """Counts over distinct (sentence, variant) pairs unless named otherwise."""

    sentences: int = 0  # sentence occurrences in the dataset
    unique: int = 0  # distinct sentences
    translated: int = 0  # (sentence, variant) pairs translated in this run
    cache_hits: int = 0  # pairs found in the cache
    batches: int = 0
    truncated: int = 0  # pairs whose input (either direction) was longer than the model limit
    number_fallback: int = 0  # pairs where the source was kept because a number was lost
    deid_fallback: int = 0  # pairs where the source was kept because a ___ was lost

    @property
    def dedup_ratio(self) -> float:
        return self.sentences / self.unique if self.unique else 1.0


def token_batches(items: Sequence[str], lengths: Sequence[int], max_items: int, max_tokens: int) -> list[list[str]]:
    """Consecutive batches of ``items`` (sorted by decreasing ``lengths``) with at most ``max_items``
    items and at most ``max_tokens`` padded tokens (items x longest); a single item longer than
    ``max_tokens`` is a batch of its own."""
    out: list[list[str]] = []
    cur: list[str] = []
    longest = 0
    for it, n in zip(items, lengths):
        if cur and (len(cur) >= max_items or (len(cur) + 1) * max(longest, n) > max_tokens):
            out.append(cur)
            cur, longest = [], 0
        cur.append(it)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    return out


def _batch_seed(seed: int, variant: int, batch: Sequence[str]) -> int:
    """Sampling seed from the settings and the batch's content (not its position), so a resumed run
    seeds a batch the same way as far as possible."""
    h = hashlib.sha256(f"{seed}\0{variant}\0".encode() + "\0".join(batch).encode()).digest()
    return int.from_bytes(h[:4], "little")


@dataclass
class Translator:
    """Back-translation with two loaded backends, a cache and decoding settings."""

    forward: Backend
    backward: Backend
    cache: TranslationCache
    decoding: Decoding = field(default_factory=Decoding)
    batch_size: int = 256
    check_numbers: bool = True
    batch_tokens: int = 2048

    def __post_init__(self) -> None:
        self.description = dict(
            forward=self.forward.model.key,
            backward=self.backward.model.key,
            decoding=self.decoding.key(),
            precision=f"{self.forward.name}:{self.forward.precision}",
        )
        self.setting = self.cache.setting(self.description)

    def _one_batch(self, batch: Sequence[str], variant: int) -> list[tuple[str, str, int]]:
        prot = [protect(s)[0] for s in batch]
        seed = _batch_seed(self.decoding.seed, variant, batch)
        flags = [TRUNCATED if n > self.forward.limit else 0 for n in self.forward.token_lengths(prot)]
        pivot = self.forward.translate(prot, self.decoding, seed)
        for i, n in enumerate(self.backward.token_lengths(pivot)):
            if n > self.backward.limit:
                flags[i] |= TRUNCATED
        back = self.backward.translate(pivot, self.decoding, seed + 1)
        rows = []
        for src, out, f in zip(batch, back, flags):
            out = " ".join(out.split())
            restored = restore(src, out)
            if restored is None:
                out, f = src, f | DEID_FALLBACK
            elif self.check_numbers and not keeps_numbers(DEID.sub(" ", src), restored):
                out, f = src, f | NUMBER_FALLBACK
            else:
                out = restored
            rows.append((src, out, f))
        return rows

    def translate(
        self,
        sentences: Sequence[str],
        variants: int = 1,
        stats: TranslateStats | None = None,
        progress: Callable | None = None,
    ) -> dict[tuple[str, int], str]:
        """Back-translate distinct ``sentences``; return {(sentence, variant): text}. Every finished
        batch is committed to the cache before the next starts."""
        stats = stats if stats is not None else TranslateStats()
        uniq = sorted({s for s in sentences if s and s.strip()})
        result: dict[tuple[str, int], str] = {}
        todo: list[tuple[int, list[str]]] = []
        for v in range(variants):
            hit = self.cache.get(self.setting, uniq, v)
            for s, (o, f) in hit.items():
                result[(s, v)] = o
                self._count(stats, f)
            stats.cache_hits += len(hit)
            miss = [s for s in uniq if s not in hit]
            if not miss:
                continue
            lengths = self.forward.token_lengths([protect(s)[0] for s in miss])
            # length-sorted batches: little padding, and the longest first so memory trouble shows early;
            # a batch ends at batch_size sentences or batch_tokens padded tokens, so short sentences go in
            # large batches (per-step overhead is shared) and long ones in small ones (memory stays flat)
            order = sorted(range(len(miss)), key=lambda i: (-lengths[i], miss[i]))
            todo.extend(
                (v, b)
                for b in token_batches(
                    [miss[i] for i in order], [lengths[i] for i in order], self.batch_size, self.batch_tokens
                )
            )
        bar = progress(todo, total=len(todo), desc="back-translating", unit="batch") if progress else todo
        for v, batch in bar:
            rows = self._one_batch(batch, v)
            self.cache.put(self.setting, v, rows)
            for s, o, f in rows:
                result[(s, v)] = o
                self._count(stats, f)
            stats.translated += len(rows)
            stats.batches += 1
        return result

    @staticmethod
    def _count(stats: TranslateStats, flags: int) -> None:
        stats.truncated += bool(flags & TRUNCATED)
        stats.number_fallback += bool(flags & NUMBER_FALLBACK)
        stats.deid_fallback += bool(flags & DEID_FALLBACK)


def make_translator(cfg: AugmentConfig) -> Translator:
    """Resolve and load both models for ``cfg``; raises ModelNotAvailable / RuntimeError."""
    fwd_name, bwd_name = cfg.models
    fwd = resolve_model(fwd_name, "--forward-model")
    bwd = resolve_model(bwd_name, "--backward-model")
    cache = TranslationCache(Path(cfg.cache_dir).expanduser() / "translations.sqlite")
    return Translator(
        load_backend(fwd, cfg),
        load_backend(bwd, cfg),
        cache,
        cfg.decoding,
        cfg.batch_size,
        cfg.check_numbers,
        cfg.batch_tokens,
    )


# -- rewriting a dataset ------------------------------------------------------------------------
def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _tmp_root(dataset_dir: Path) -> Path:
    # hidden sibling: same filesystem (rename works) and skipped by find_datasets
    return dataset_dir.parent / f".augment-{dataset_dir.name}"


def _recover(dataset_dir: Path) -> None:
    """Finish or undo what a killed run left: if the dataset folder is gone (killed between the two
    renames of the fallback swap), put the complete copy back; then drop the temporary folder."""
    tmp = _tmp_root(dataset_dir)
    if not tmp.exists():
        return
    if not dataset_dir.exists():
        for cand in (tmp / dataset_dir.name, tmp / "old"):  # the new copy is complete too
            if (cand / "manifest.json").exists():
                os.replace(cand, dataset_dir)
                break
    shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(new: Path, dataset_dir: Path) -> None:
    if not _exchange(new, dataset_dir):
        old = new.parent / "old"
        os.replace(dataset_dir, old)  # a kill right here is undone by _recover on the next run
        os.replace(new, dataset_dir)


# manifest keys the writer fills itself; anything else another command added (say a statistics section)
# is carried over unchanged. merged_from no longer applies: the new parts are one run's parts.
_WRITER_KEYS = {
    "schema_version",
    "dataset",
    "cxrkit_version",
    "command",
    "invocation",
    "part",
    "config",
    "label_names",
    "image_settings",
    "counts",
    "splits",
    "parts",
    "rejects",
    "merged_from",
    "augment",
}


def _carried_sections(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k not in _WRITER_KEYS}


def _join(bt: dict[tuple[str, int], str], sentences: Sequence[str] | None, variants: int) -> list[str]:
    sents = [s for s in (sentences or []) if s and s.strip()]
    if not sents:
        return []
    return [" ".join(bt[(s, v)] for s in sents) for v in range(variants)]


@dataclass
class AugmentResult:
    manifest: dict
    stats: TranslateStats
    out_dir: Path


def run_augment(
    dataset_dir: Path, cfg: AugmentConfig, translator: Translator | None = None, progress: Callable | None = None
) -> AugmentResult:
    """Fill ``findings_bt`` / ``impression_bt`` of every row of a finished dataset folder.

    Reads with ShardDataset, writes new parts with ShardWriter into a hidden sibling folder (same name,
    label names, image settings, config, plus an ``augment`` manifest section) and swaps it into place.
    ``translator`` defaults to ``make_translator(cfg)``. Raises ShardSchemaError for a bad dataset
    folder, ModelNotAvailable for a missing model."""
    from cxrprep.shards import ShardDataset, ShardWriter

    dataset_dir = Path(dataset_dir)
    _recover(dataset_dir)
    ds = ShardDataset(dataset_dir)
    old = ds.manifest
    sent_cols = [c for c, _ in SECTIONS]
    occurrences: list[str] = []
    for b in ds.iter_batches(sent_cols):
        for c in sent_cols:
            for lst in b.column(c).to_pylist():
                occurrences.extend(s for s in (lst or []) if s and s.strip())
    stats = TranslateStats(sentences=len(occurrences), unique=len(set(occurrences)))
    own = translator is None
    translator = translator or make_translator(cfg)
    try:
        bt = translator.translate(occurrences, cfg.variants, stats, progress)
    finally:
        if own:
            translator.cache.close()

    augment = dict(
        backtranslate=cfg.backtranslate,
        models=dict(forward=translator.forward.model.key, backward=translator.backward.model.key),
        backend=translator.forward.name,
        precision=translator.forward.precision,
        decoding=translator.decoding.key(),
        variants=cfg.variants,
        batch_size=translator.batch_size,
        batch_tokens=translator.batch_tokens,
        counts=dict(
            sentences=stats.sentences,
            unique_sentences=stats.unique,
            translated=stats.translated,
            cache_hits=stats.cache_hits,
            truncated=stats.truncated,
            number_fallback=stats.number_fallback,
            deid_fallback=stats.deid_fallback,
        ),
    )
    tmp = _tmp_root(dataset_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    old_counts = old["counts"]
    known = {"inputs_seen", "rows_written", "images_written", "skipped", "failed", "images_failed"}
    w = ShardWriter(
        tmp,
        ds.name,
        config=old.get("config") or {},
        label_names=ds.label_names,
        image_settings=old.get("image_settings"),
        command=old.get("command", ""),
        extra_manifest={**_carried_sections(old), "augment": augment},
    )
    try:
        groups = ds.row_groups()
        bar = progress(groups, total=len(groups), desc="rewriting parts", unit="group") if progress else groups
        for batch in (b for g in bar for b in ds.iter_batches(row_groups=[g])):
            for row in batch.to_pylist():
                for src, dst in SECTIONS:
                    row[dst] = _join(bt, row[src], cfg.variants)
                w.write(row)
        rejects_path = dataset_dir / old["rejects"]["file"]
        if rejects_path.exists():
            for r in ds.rejects():
                w.reject(
                    r["source"],
                    r["study_id"],
                    stage=r["stage"],
                    kind=r["kind"],
                    reason=r["reason"],
                    level=r.get("level") or "study",
                )
        w.counts.inputs_seen = old_counts["inputs_seen"]
        w.counts.extra.update({k: v for k, v in old_counts.items() if k not in known and not k.startswith("bt_")})
        w.counts.extra.update(
            bt_sentences=stats.sentences,
            bt_unique=stats.unique,
            bt_truncated=stats.truncated,
            bt_number_fallback=stats.number_fallback,
            bt_deid_fallback=stats.deid_fallback,
        )
        manifest = w.close()
    except BaseException:
        w.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _swap_in(tmp / ds.name, dataset_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    return AugmentResult(manifest, stats, dataset_dir)


def summary(res: AugmentResult) -> list[str]:
    """Lines printed by the command after the shard summary."""
    s = res.stats
    return [
        f"  back-translation: {s.sentences:,} sentences, {s.unique:,} distinct (de-dup ratio "
        f"{s.dedup_ratio:.2f}x); translated {s.translated:,}, cache hits {s.cache_hits:,}",
        f"  truncated {s.truncated:,}, kept source for lost number {s.number_fallback:,}, "
        f"for lost ___ {s.deid_fallback:,}",
    ]


__all__ = [
    "AugmentConfig",
    "AugmentResult",
    "Backend",
    "CT2Backend",
    "Decoding",
    "ModelNotAvailable",
    "ModelRef",
    "TransformersBackend",
    "TranslateStats",
    "TranslationCache",
    "Translator",
    "convert_ct2",
    "keeps_numbers",
    "load_backend",
    "make_translator",
    "protect",
    "resolve_model",
    "restore",
    "run_augment",
    "summary",
]
