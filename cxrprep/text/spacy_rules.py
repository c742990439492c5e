"""The spaCy side of sentence splitting: cxrkit's special cases for spaCy's blank English tokenizer, the
pipeline itself (imported only when needed), and the tokenizer rules every process shares
(cxrprep.text.chunk_tokenizer runs them without importing spaCy)."""

from __future__ import annotations

from functools import lru_cache

from cxrprep.text.chunk_tokenizer import cross_space_pairs

#: tokenizer special cases: abbreviations that stay one token (their full stop never ends a sentence)
ABBREVIATIONS = (
    "approx.",
    "Approx.",
    "appx.",
    "Pt.",
    "pt.",
    "pts.",
    "Pts.",
    "Dr.",
    "dr.",
    "Drs.",
    "vs.",
    "Vs.",
    "e.g.",
    "i.e.",
    "E.g.",
    "I.e.",
    "a.m.",
    "p.m.",
    "A.M.",
    "P.M.",
    "etc.",
    "resp.",
    "Fig.",
    "fig.",
    "Mr.",
    "Mrs.",
    "Ms.",
    "St.",
    "Jr.",
    "incl.",
    "max.",
    "min.",
    "esp.",
    "cf.",
    "ca.",
    "Nos.",
    "nos.",
)

#: the special cases cxrkit adds to spaCy's English tokenizer (one token each)
EXTRA_SPECIAL_CASES = ABBREVIATIONS + ("No.", "no.")


@lru_cache(maxsize=1)
def get_nlp():
    """A blank English spaCy pipeline with radiology abbreviations as tokenizer special cases."""
    spacy = _import_spacy()
    from spacy.symbols import ORTH

    nlp = spacy.blank("en")
    for abbr in ABBREVIATIONS:
        nlp.tokenizer.add_special_case(abbr, [{ORTH: abbr}])
    for abbr in ("No.", "no."):  # "No. 2": keep whole; a sentence-final "no." is split by the rule below
        nlp.tokenizer.add_special_case(abbr, [{ORTH: abbr}])
    return nlp


def _import_spacy(block_torch: bool = False):
    """``import spacy``. In a worker process (or with ``block_torch``) that has not loaded torch, thinc's
    optional probe for torch is answered "not installed": importing torch there took over half of spaCy's
    import time and ~180 MB per worker, and the blank tokenizer never uses it. Other processes import
    spaCy as usual."""
    import multiprocessing
    import sys

    if "spacy" in sys.modules or "torch" in sys.modules:
        import spacy

        return spacy
    if not block_torch and multiprocessing.parent_process() is None:
        import spacy

        return spacy
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` raise ImportError
    try:
        import spacy
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return spacy


@lru_cache(maxsize=1)
def shared_rules() -> tuple:
    """(ChunkTokenizer or None, cross-space pairs) for this process: from the rules file of
    cxrprep.text.chunk_tokenizer when there is one (no spaCy import), else from spaCy, writing the file
    for the next run. None as tokenizer: spaCy itself tokenizes chunks."""
    from cxrprep.text import chunk_tokenizer

    found = chunk_tokenizer.load(EXTRA_SPECIAL_CASES)
    if found is not None:
        return found
    _import_spacy(block_torch=True)
    nlp = get_nlp()
    pairs = cross_space_pairs(nlp)
    return chunk_tokenizer.build(nlp, EXTRA_SPECIAL_CASES, pairs), pairs
