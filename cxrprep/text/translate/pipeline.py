"""The sentence pipeline: protect ``___`` and numbers, batch by token length, translate both ways through
two backends, check the output, and cache every finished batch."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from cxrprep.text.translate.backend import AugmentConfig, Backend, Decoding, load_backend, resolve_model
from cxrprep.text.translate.cache import TranslationCache

DEID = re.compile(r"_{3,}")
PLACEHOLDER = "ZZZ"  # a token Marian copies through; digits are avoided so the number check ignores it
_PLACEHOLDER_RE = re.compile(PLACEHOLDER, re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

# cache flags, one bit each
TRUNCATED, NUMBER_FALLBACK, DEID_FALLBACK = 1, 2, 4


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
