"""spaCy's tokenizer in pure Python (cxrprep.text.chunk_tokenizer) against spaCy itself, its rules file,
and the sentence splitter's fast paths against the reference (issue 25)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cxrprep.text import chunk_tokenizer as ck
from cxrprep.text import sentences as S
from cxrprep.text.sections import parse_report
from cxrprep.text.spacy_rules import EXTRA_SPECIAL_CASES, get_nlp

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tok():
    nlp = get_nlp()
    data = ck.export_rules(nlp)
    assert data is not None
    return nlp, ck.ChunkTokenizer(data)


def _corpus_blocks(data_dir: Path, tmp: Path) -> list[str]:
    """Blocks of the fixture reports, the sample data and 300 reports of bench/realistic_reports.py."""
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "examples"))
    from realistic_reports import write_corpus

    write_corpus(tmp, 300, seed=3)
    out = []
    files = sorted((data_dir / "reports").rglob("*.txt")) + sorted((ROOT / "examples" / "mimic").rglob("*.txt"))
    for p in files + sorted(tmp.rglob("*.txt")):
        rep = parse_report(p.read_text(encoding="utf-8", errors="replace"))
        for _, text in rep.sections:
            out += S.blocks(text)
    return out


def test_same_tokens_as_spacy_on_random_chunks_and_blocks(tok):
    """20,000 seeded random chunks and as many blocks of them (a different seed from the self-check the
    rules file gets), every rule string with punctuation around it, and radiology chunks."""
    nlp, ct = tok
    texts = ck.probes(ct.rules, n_random=20_000, seed=1)
    assert len(texts) > 40_000
    assert ck.mismatches(ct, nlp, texts) == []


def test_same_tokens_as_spacy_on_report_blocks(tok, data_dir, tmp_path):
    nlp, ct = tok
    blocks = _corpus_blocks(data_dir, tmp_path)
    chunks = sorted({c for b in blocks for c in b.split(" ")})
    assert len(blocks) > 500 and len(chunks) > 1000
    assert ck.mismatches(ct, nlp, blocks + chunks) == []


def test_matcher_across_spaces_is_reproduced(tok):
    """A special case matched across a space is never applied, yet blocks an overlapping one inside a
    chunk; the block path reproduces that (spaCy's ``_filter_special_spans``)."""
    nlp, ct = tok
    for text in ["): )", "x ): )", ":) :)", "( :", "a : ) .", "):"]:
        assert ct.spans(text) == [(t.idx, t.idx + len(t)) for t in nlp.tokenizer(text)], text
    assert not ct.handles("a  b") and not ct.handles("a\tb") and not ct.handles(" a") and ct.handles("a b")


def test_rules_file_written_checked_and_used(tmp_path, monkeypatch):
    """No file: built from spaCy (after the self-check) and written atomically; then loaded as is. A
    damaged file or one of another format is ignored; an unwritable folder only costs speed."""
    monkeypatch.setenv(ck.CACHE_ENV, str(tmp_path / "cache"))
    path = ck.rules_path(EXTRA_SPECIAL_CASES)
    assert path is not None and path.parent == tmp_path / "cache" and not path.exists()
    nlp = get_nlp()
    pairs = ck.cross_space_pairs(nlp)
    built = ck.build(nlp, EXTRA_SPECIAL_CASES, pairs)
    assert built is not None and path.exists()
    assert not list(path.parent.glob(".*.tmp"))
    loaded, loaded_pairs = ck.load(EXTRA_SPECIAL_CASES)
    assert set(loaded_pairs) == set(pairs) and loaded.rules == built.rules
    assert loaded.tokens("effusion.)") == ["effusion", ".", ")"]
    path.write_text("{not json")
    assert ck.load(EXTRA_SPECIAL_CASES) is None
    data = json.loads(json.dumps(ck.export_rules(nlp)))
    data.update(format=ck.FORMAT + 1, pairs=[])
    path.write_text(json.dumps(data))
    assert ck.load(EXTRA_SPECIAL_CASES) is None
    other = ck.rules_path(EXTRA_SPECIAL_CASES + ("Xyz.",))
    assert other != path  # other special cases: another file
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv(ck.CACHE_ENV, str(blocked / "sub"))  # cannot be created
    assert ck.build(nlp, EXTRA_SPECIAL_CASES, pairs) is not None


def test_rules_that_cannot_be_reproduced_get_no_file(tmp_path, monkeypatch):
    """A tokenizer with a custom (non-regex) rule is not exported: cxrkit then uses spaCy itself."""
    import spacy

    monkeypatch.setenv(ck.CACHE_ENV, str(tmp_path))
    other = spacy.blank("en")
    other.tokenizer.suffix_search = lambda s: None
    assert ck.export_rules(other) is None
    assert ck.build(other, ("custom",), []) is None
    assert not list(tmp_path.iterdir())


def test_reports_run_without_importing_spacy(tmp_path):
    """With the rules file present, ``cxrprep reports`` never imports spaCy (the ~0.5 s it cost each run)
    and writes the same shards as without it (spaCy path, in an unwritable cache folder)."""
    script = textwrap.dedent(
        """
        import hashlib, sys
        from pathlib import Path
        from cxrprep.datasets import mimic
        out = Path(sys.argv[1])
        mimic.run_reports(Path(sys.argv[2]), out, mimic.ReportsConfig(images=False, workers=1))
        h = hashlib.sha256()
        for p in sorted((out / "mimic-cxr" / "data").iterdir()):
            h.update(p.read_bytes())
        print(h.hexdigest(), "spacy" in sys.modules)
        """
    )
    blocked = tmp_path / "file"
    blocked.write_text("")
    results = []
    for k, cache in enumerate([tmp_path / "cache", tmp_path / "cache", blocked / "sub"]):
        env = dict(os.environ, **{ck.CACHE_ENV: str(cache)})
        r = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / f"o{k}"), str(ROOT / "examples" / "mimic")],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        results.append(r.stdout.split())
    (h0, s0), (h1, s1), (h2, s2) = results
    assert s0 == "True" and s1 == "False" and s2 == "True"  # built the file; used it; could not write one
    assert h0 == h1 == h2


_DOT_VOCAB = [
    "the", "lungs", "are", "clear", "effusion.", "1.", "2.", "10.", "3", "2.5", "2.5.", "cm.", "approx.",
    "No.", "no.", "a.m.", "a.m..", "p.m.", "e.g.", "i.e.,", "Dr.", "x.", "A.", "ABC.", "___.", "___", ".",
    "..", "vs.", "etc.", "pt.", "U.S.", "3:15", "R/O", "1.5cm", "No.1", "left-sided.", "(___", "cf.",
    "effusion.,", "A.B", "lungs.Heart", "x.y", "2.5x3.1", "a.m.,",
    "(series", "34)", "34).", "word.)", "(___)", "2)", "(1.", "a)b", "x.)", ")", ").", "(1)", "1).", "(a.m.)",
]  # fmt: skip


def test_full_stop_fast_path_matches_reference(tok, monkeypatch):
    """Blocks of full-stop and bracket chunks (what ``_sentences_of_dots`` takes: list markers, decimals,
    abbreviations, "No.", a lone ".", "(series 2, image 34)."), through the pure-Python tokenizer with
    empty caches, give what spaCy's full tokenizer and the rules give."""
    nlp, ct = tok
    monkeypatch.setattr(S, "_TOKEN_CACHE", {})
    monkeypatch.setattr(S, "_SIMPLE_CACHE", {})
    monkeypatch.setattr(S, "_CUT_CHUNKS", set())
    lazy = S._LazyNLP()
    lazy.load()
    assert lazy.chunks is not None  # the pure-Python path
    r = random.Random(5)
    blocks = ["1. Stable. 2. Clear lungs.", "No. 2 tube. No. effusion.", "Heart size is 2.5 cm. A. B. c.", "x ."]
    for _ in range(4000):
        blocks.append(" ".join(r.choice(_DOT_VOCAB) for _ in range(r.randint(1, 14))))
    for text in blocks:
        assert S._sentences_of_block(text, lazy) == S._sentences_of_doc(nlp.tokenizer(text)), text
