"""The two texts of a study for the training stream: prompt variants, report sections and their
back-translations, sentence shuffles and random sentence subsets (the rules are in ``pick_texts``)."""

from __future__ import annotations

import random
import re

_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A prompt report (template sentences joined by spaces) -> its sentences."""
    return [x for x in _SENT_END.split(text.strip()) if x]


def _distinct_pair(options: list[str], rng: random.Random) -> tuple[str, str]:
    """Two different strings out of ``options`` when there are two different ones, else one twice."""
    uniq = list(dict.fromkeys(o for o in options if o))
    if len(uniq) >= 2:
        a, b = rng.sample(range(len(uniq)), 2)
        return uniq[a], uniq[b]
    return (uniq[0], uniq[0]) if uniq else ("", "")


def _shuffled_text(sentences: list[str], rng: random.Random, avoid: str | None = None) -> str:
    """Sentences in a random order; when ``avoid`` is given and another order exists, never exactly ``avoid``."""
    s = list(sentences)
    for _ in range(8):
        rng.shuffle(s)
        t = " ".join(s)
        if avoid is None or t != avoid or len(set(s)) < 2:
            return t
    return " ".join(s[1:] + s[:1])  # a rotation differs from the original when two sentences differ


def _sample_sentences(pool: list[str], rng: random.Random, cfg) -> str:
    k = rng.randint(min(cfg.sentences_min, len(pool)), min(cfg.sentences_max, len(pool)))
    idx = sorted(rng.sample(range(len(pool)), k))
    if cfg.shuffle_sentences:
        rng.shuffle(idx)
    return " ".join(pool[i] for i in idx)


def _two_samples(pool: list[str], rng: random.Random, cfg) -> tuple[str, str]:
    """Jang et al.: two random sentence subsets, different from each other whenever the pool allows."""
    a = _sample_sentences(pool, rng, cfg)
    b = a
    for _ in range(8):
        b = _sample_sentences(pool, rng, cfg)
        if b != a:
            break
    return a, b


def _prompt_texts(prompts: list[str], rng: random.Random, cfg, train: bool) -> tuple[str, str]:
    """Two prompt variants of a label study (see ``pick_texts``)."""
    if not train:
        uniq = list(dict.fromkeys(prompts))
        return uniq[0], uniq[1] if len(uniq) > 1 else uniq[0]
    a, b = _distinct_pair(prompts, rng)
    if cfg.sentence_sampling:
        sa, sb = split_sentences(a), split_sentences(b)
        ta, tb = _sample_sentences(sa, rng, cfg), _sample_sentences(sb, rng, cfg)
        for _ in range(8):
            if ta != tb:
                break
            tb = _sample_sentences(sb, rng, cfg)
        return ta, tb
    if cfg.shuffle_sentences:
        a = _shuffled_text(split_sentences(a), rng)
        b = _shuffled_text(split_sentences(b), rng, avoid=a)
    return a, b


def pick_texts(row: dict, rng: random.Random, cfg, train: bool = True) -> tuple[str, str] | None:
    """Two texts of a study, or None when it has no usable text.

    Training (CXR-CLIP study-level sampling; the two texts are never the same string when the study has
    any alternative):

    * prompt reports (label datasets): two distinct prompt variants; with ``sentence_sampling`` each is a
      random subset of its variant's sentences, with ``shuffle_sentences`` its sentences are shuffled;
    * reports with findings and impression: the two sections, in random order, each replaced by one of its
      back-translations with probability ``bt_prob``;
    * one section only: the original and one of its back-translations (CXR-CLIP), else the original and a
      sentence shuffle of it;
    * ``sentence_sampling`` (Jang et al.): two random subsets of the sentences of ``sentence_sections``.

    Validation (``train=False``) is deterministic, so validation losses of two epochs compare: the first two
    distinct prompt variants; findings and impression as written (no back-translation, no shuffling); one
    section: the original and its first back-translation, else the section twice."""
    prompts = [p for p in (row.get("prompts") or []) if p]
    if prompts:
        return _prompt_texts(prompts, rng, cfg, train)
    secs = {sec: (row.get(sec) or "").strip() for sec in ("findings", "impression")}
    sents = {sec: list(row.get(f"{sec}_sentences") or []) for sec in secs}
    bts = {sec: [t for t in (row.get(f"{sec}_bt") or []) if t and t != secs[sec]] for sec in secs}
    if cfg.sentence_sampling and train:
        pool: list[str] = []
        for sec in cfg.sentence_sections.split(","):
            pool += sents.get(sec) or []
        if not pool:
            return None
        return _two_samples(pool, rng, cfg)
    present = [sec for sec in secs if secs[sec]]
    if not present:
        return None
    if not train:
        if len(present) == 2 and secs["findings"] != secs["impression"]:
            return secs["findings"], secs["impression"]
        sec = present[0]
        return secs[sec], (bts[sec][0] if bts[sec] else secs[sec])

    def one(sec: str) -> str:
        if bts[sec] and rng.random() < cfg.bt_prob:
            return rng.choice(bts[sec])
        if cfg.shuffle_sentences and len(sents[sec]) > 1:
            return _shuffled_text(sents[sec], rng)
        return secs[sec]

    if len(present) == 2 and secs["findings"] != secs["impression"]:
        texts = [one("findings"), one("impression")]
        if texts[0] == texts[1]:  # a back-translation can equal the other section: take the originals
            texts = [secs["findings"], secs["impression"]]
        if rng.random() < 0.5:
            texts.reverse()
        return texts[0], texts[1]
    sec = present[0]  # one section: the original and its back-translation (CXR-CLIP), else a sentence shuffle
    orig = _shuffled_text(sents[sec], rng) if cfg.shuffle_sentences and len(sents[sec]) > 1 else secs[sec]
    if bts[sec]:
        other = rng.choice(bts[sec])
    elif len(set(sents[sec])) > 1:
        other = _shuffled_text(sents[sec], rng, avoid=orig)
    else:
        other = secs[sec]
    if other == orig and orig != secs[sec]:
        orig = secs[sec]
    pair = [orig, other]
    if rng.random() < 0.5:
        pair.reverse()
    return pair[0], pair[1]
