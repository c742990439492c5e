"""spaCy's English tokenizer on single-spaced text (a block of the sentence splitter), without importing
spaCy.

The sentence splitter (cxrprep.text.sentences) tokenizes only the chunks of text that hold ``. ? ! " ' )``
(``effusion.``, ``1.``, ``p.m.)``), and a whole block only where a special case could match across a
space. Importing spaCy to do that costs about 0.5 s of CPU per run (measured with ``python -X
importtime``; a quarter of what the official MIMIC-CXR section parser needs for 40,000 reports). This
module runs spaCy's tokenizer algorithm (``spacy/tokenizer.pyx``: special cases, the prefix/suffix loop,
infixes, URL match, then the special-case matcher over the token sequence, where a match across a space is
never applied but still blocks an overlapping one) in pure Python on spaCy's own rules, which are exported
once from the installed spaCy into a small JSON file:

* the file lives in the cache folder (``$CXRKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/cxrkit``, else
  ``~/.cache/cxrkit``) under a name that holds the spaCy version and a hash of cxrkit's own special cases,
  so another spaCy version or abbreviation list gets its own file. It holds rules only, never text, so it
  pays off on any report, repeated or not;
* it is written only after a self-check: this module and spaCy must tokenize every rule string, those
  strings with punctuation around them, radiology chunks, 2,000 seeded random chunks and 2,000 blocks of
  them identically (17,759 strings). A tokenizer this module cannot reproduce (a custom callable) gets no
  file, and cxrkit uses spaCy;
* a missing, unreadable or unwritable file only costs speed: spaCy is imported as before.

``tests/test_chunk_tokenizer.py`` compares both on 53,759 more strings (another seed), every chunk and
block of the test corpora, and the cross-space cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from functools import lru_cache
from pathlib import Path

#: bump when the file's layout or what it means changes
FORMAT = 1
CACHE_ENV = "CXRKIT_CACHE_DIR"
#: chunks whose affix tokens a ChunkTokenizer remembers
MEMO_MAX = 200_000


def cache_dir() -> Path:
    """Where cxrkit keeps files it can rebuild (``$CXRKIT_CACHE_DIR`` > ``$XDG_CACHE_HOME/cxrkit`` >
    ``~/.cache/cxrkit``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cxrkit"


def _spacy_version() -> str | None:
    """The installed spaCy's version, read from its metadata (no import of spaCy)."""
    from importlib import metadata

    try:
        return metadata.version("spacy")
    except metadata.PackageNotFoundError:
        return None


def rules_path(extra: tuple[str, ...]) -> Path | None:
    """The rules file for the installed spaCy and cxrkit's special cases ``extra``; None without spaCy."""
    version = _spacy_version()
    if version is None:
        return None
    h = hashlib.sha256(repr((FORMAT, extra)).encode()).hexdigest()[:12]
    return cache_dir() / f"spacy-{version}-en-tokenizer-{h}.json"


def _regex(fn, method: str) -> list | None:
    """(pattern, flags) of a bound ``re.Pattern`` method, or None when ``fn`` is something else."""
    pat = getattr(fn, "__self__", None)
    if fn is None:
        return []
    if not isinstance(pat, re.Pattern) or getattr(fn, "__name__", "") != method:
        return None
    return [pat.pattern, pat.flags]


def export_rules(nlp) -> dict | None:
    """The rules of ``nlp.tokenizer`` as JSON-able data; None when they are not all plain regexes."""
    from spacy.tokenizer import Tokenizer

    t = nlp.tokenizer
    parts = {
        "prefix": _regex(t.prefix_search, "search"),
        "suffix": _regex(t.suffix_search, "search"),
        "infix": _regex(t.infix_finditer, "finditer"),
        "token_match": _regex(t.token_match, "match"),
        "url_match": _regex(t.url_match, "match"),
    }
    if any(v is None for v in parts.values()) or type(t) is not Tokenizer:
        return None
    bare = bare_tokenizer(nlp)
    rules = {k: [d[65] if 65 in d else d["ORTH"] for d in v] for k, v in t.rules.items()}  # 65: spacy.symbols.ORTH
    matcher = []  # the special cases spaCy's special-case matcher looks for after affix splitting
    for s in sorted(rules):
        if not t.faster_heuristics or t.find_prefix(s) or t.find_infix(s) or t.find_suffix(s) or " " in s:
            matcher.append([x.text for x in bare(s)])
    return dict(parts, format=FORMAT, rules=rules, matcher=matcher)


class ChunkTokenizer:
    """spaCy's tokenizer for text without whitespace (a chunk of a block between two spaces), from
    :func:`export_rules` data."""

    def __init__(self, data: dict) -> None:
        def compiled(key: str):
            return re.compile(data[key][0], data[key][1]) if data[key] else None

        self.rules: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in data["rules"].items()}
        self._prefix, self._suffix, self._infix = compiled("prefix"), compiled("suffix"), compiled("infix")
        self._token_match, self._url = compiled("token_match"), compiled("url_match")
        self._memo: dict[str, tuple[str, ...]] = {}
        self.matcher: dict[str, list[tuple[str, ...]]] = {}
        for pat in data["matcher"]:
            self.matcher.setdefault(pat[0], []).append(tuple(pat))

    def _pre(self, s: str) -> int:
        m = self._prefix.search(s) if self._prefix else None
        return m.end() - m.start() if m else 0

    def _suf(self, s: str) -> int:
        m = self._suffix.search(s) if self._suffix else None
        return m.end() - m.start() if m else 0

    def _whole(self, s: str) -> bool:
        return bool((self._token_match and self._token_match.match(s)) or (self._url and self._url.match(s)))

    def affix_tokens(self, s: str) -> tuple[str, ...]:
        """Tokens of a chunk before the special-case matcher, remembered per chunk (as spaCy's tokenizer
        remembers them; at most ``MEMO_MAX`` chunks, then the memo starts over)."""
        t = self._memo.get(s)
        if t is None:
            if len(self._memo) >= MEMO_MAX:
                self._memo.clear()
            t = self._memo[s] = tuple(self._affix_tokens(s))
        return t

    def _affix_tokens(self, s: str) -> list[str]:  # long: one loop, as spaCy's
        """Tokens of ``s`` before the special-case matcher (spaCy's ``_split_affixes`` + ``_attach_tokens``)."""
        rules = self.rules
        if s in rules:
            return list(rules[s])
        pres: list[str] = []
        sufs: list[str] = []
        last = 0
        while s and len(s) != last:
            if self._token_match and self._token_match.match(s):
                break
            if s in rules:
                break
            last = len(s)
            pre = self._pre(s)
            if pre:
                prefix, minus_pre = s[:pre], s[pre:]
                if minus_pre and minus_pre in rules:
                    s = minus_pre
                    pres.append(prefix)
                    break
            suf = self._suf(s[pre:])
            if suf:
                suffix, minus_suf = s[-suf:], s[:-suf]
                if minus_suf and minus_suf in rules:
                    s = minus_suf
                    sufs.append(suffix)
                    break
            if pre and suf and pre + suf <= len(s):
                s = s[pre:-suf]
                pres.append(prefix)
                sufs.append(suffix)
            elif pre:
                s = minus_pre
                pres.append(prefix)
            elif suf:
                s = minus_suf
                sufs.append(suffix)
        out = pres
        if s:
            if s in rules:
                out.extend(rules[s])
            elif self._whole(s):
                out.append(s)
            else:
                start = 0
                for m in self._infix.finditer(s) if self._infix else ():
                    a, b = m.start(), m.end()
                    if a == 0:  # an infix at the very start is not split off
                        continue
                    if a != start:
                        out.append(s[start:a])
                    if a != b:
                        out.append(s[a:b])
                    start = b
                if s[start:]:
                    out.append(s[start:])
        out.extend(reversed(sufs))
        return out

    @staticmethod
    def handles(text: str) -> bool:
        """Whether ``text`` is what :meth:`spans` takes: words separated by single spaces, no other
        whitespace, no space at either end (a block of the sentence splitter)."""
        return text == " ".join(text.split())

    def spans(self, text: str) -> list[tuple[int, int]]:  # long: spaCy's matcher step, kept in one place
        """(start, end) of each token of ``text`` (see :meth:`handles`), as spaCy's
        ``[(t.idx, t.idx + len(t)) for t in nlp.tokenizer(text)]``: affix splitting chunk by chunk, then
        the special-case matcher over the whole token sequence (a match across a space is never replaced,
        but still keeps a match that overlaps it from being applied)."""
        toks: list[str] = []
        at: list[int] = []
        pos = 0
        for chunk in text.split(" "):
            for tok in self.affix_tokens(chunk):
                toks.append(tok)
                at.append(pos)
                pos += len(tok)
            pos += 1
        found = []  # every (first, last + 1) where a matcher pattern's tokens occur
        if self.matcher and len(toks) > 1:
            for i, tok in enumerate(toks):
                for pat in self.matcher.get(tok, ()):
                    if tuple(toks[i : i + len(pat)]) == pat:
                        found.append((i, i + len(pat)))
        if not found:
            return [(a, a + len(tok)) for a, tok in zip(at, toks)]
        found.sort(key=lambda m: (m[1] - m[0], -m[0]))  # longest first, then leftmost (taken from the end)
        seen: set[int] = set()
        keep = {}
        for a, b in reversed(found):
            if a not in seen and b - 1 not in seen:
                keep[a] = b
            seen.update(range(a, b))
        out, i = [], 0
        while i < len(toks):
            b = keep.get(i)
            rule = self.rules.get(text[at[i] : at[b - 1] + len(toks[b - 1])]) if b else None
            if rule is None:
                out.append((at[i], at[i] + len(toks[i])))
                i += 1
                continue
            c = at[i]
            for tok in rule:
                out.append((c, c + len(tok)))
                c += len(tok)
            i = b
        return out

    def tokens(self, text: str) -> list[str]:
        """``[t.text for t in nlp.tokenizer(text)]`` for ``text`` that :meth:`handles`."""
        return [text[a:b] for a, b in self.spans(text)]


def probes(rules: dict, n_random: int = 2000, seed: int = 0) -> list[str]:
    """Texts that exercise every rule: the rule strings, with punctuation around them, radiology chunks,
    ``n_random`` seeded random chunks of letters, digits and punctuation, and as many blocks of 2 to 4 of
    those chunks joined by spaces."""
    out = []
    for s in rules:
        out += [s, f"({s}", f"{s})", f"{s}.", f"{s},", f'"{s}"', f"{s}'s", f"({s}).", f"x{s}", f"{s}x"]
    out += [
        "effusion.",
        "1.",
        "2)",
        "2.5",
        "2.5.",
        "p.m.)",
        "(e.g.",
        "No.",
        "no.",
        "x-ray.",
        "U.S.",
        "Dr.Smith.",
        "3/4.",
        "10:30.",
        "___.",
        "(___).",
        "cm.",
        "CT.",
        "A.",
        "a.",
        "I.",
        "Mr.",
        "pm.",
        "?",
        "!",
        "...",
        "'",
        '"',
        ")",
        ").",
        '."',
        "mm-Hg.",
        "L5-S1.",
        "4-5.",
        "approx.",
        "vs.",
        "i.e.,",
        "e.g.)",
        "etc.)",
        "http://x.org.",
        "www.example.com.",
        "x@y.com.",
        ":).",
        ":-)",
        "n't.",
        "can't.",
        "10.5cm.",
        "$5.",
        "5%.",
        "25°C.",
        "C.",
        "R.",
        "U.K.",
        "a.m..",
        "p.m.,",
        "l.",
        "II.",
        "IV.",
        "T.V.",
        "Nos.",
        "No.1",
    ]
    rng = random.Random(seed)
    alphabet = "aAbBcCeEiImMnNpPsStTxXyZ0123456789.,;:!?'\"()[]-/%$&*+=_@#°~`^<>|\\"
    for _ in range(n_random):
        k = rng.randint(1, 9)
        out.append("".join(rng.choice(alphabet) for _ in range(k)))
    out = [c for c in out if not any(ch.isspace() for ch in c)]  # chunks never hold whitespace
    # blocks: chunks side by side, where special cases can match across a space
    blocks = [" ".join(rng.sample(out, rng.randint(2, 4))) for _ in range(n_random)]
    return out + blocks + ["): )", ": ) x", "( : (", "x ' s", "x ( :", "(: -)", "a : ) .", ":) :)"]


def mismatches(ct: ChunkTokenizer, nlp, chunks: list[str]) -> list[tuple[str, list, list]]:
    """[(text, ours, spaCy's)] where the two tokenizers disagree, as (start, end) of each token."""
    bad = []
    for c in chunks:
        ours, theirs = ct.spans(c), [(t.idx, t.idx + len(t)) for t in nlp.tokenizer(c)]
        if ours != theirs:
            bad.append((c, ours, theirs))
    return bad


def load(extra: tuple[str, ...]) -> tuple[ChunkTokenizer, list] | None:
    """(tokenizer, cross-space pairs) from the rules file, or None when there is none (or it is unreadable)."""
    path = rules_path(extra)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    return ChunkTokenizer(data), [tuple(p) for p in data["pairs"]]


def build(nlp, extra: tuple[str, ...], pairs: list) -> ChunkTokenizer | None:
    """Export ``nlp``'s rules, check them against spaCy, and write the rules file (atomically). Returns
    the tokenizer, or None when the rules cannot be reproduced. A file that cannot be written is skipped."""
    data = export_rules(nlp)
    if data is None:
        return None
    ct = ChunkTokenizer(data)
    if mismatches(ct, nlp, probes(data["rules"])):
        return None
    path = rules_path(extra)
    if path is not None:
        data["pairs"] = [list(p) for p in sorted(pairs)]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, sort_keys=True))
            os.replace(tmp, path)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass
    return ct


def bare_tokenizer(nlp):
    """``nlp``'s tokenizer without its special cases (how spaCy tokenizes a special case's own string
    for its special-case matcher)."""
    from spacy.tokenizer import Tokenizer

    t = nlp.tokenizer
    return Tokenizer(
        nlp.vocab,
        rules={},
        prefix_search=t.prefix_search,
        suffix_search=t.suffix_search,
        infix_finditer=t.infix_finditer,
        token_match=t.token_match,
        url_match=t.url_match,
    )


def cross_space_pairs(nlp) -> frozenset:
    """(char before, char after) a space for every way of writing a multi-token special case of ``nlp``
    with spaces between its tokens."""
    t = nlp.tokenizer
    bare = bare_tokenizer(nlp)
    pairs = set()
    for rule in t.rules:
        toks = [x.text for x in bare(rule)]
        for k in range(1, len(toks)):
            pairs.add((toks[k - 1][-1], toks[k][0]))
    return frozenset(pairs)


class AnyOf:
    """``search(text)``: the first match of any of some regexes (one scan each). Two regexes, each with a
    literal or a short character class to scan for, are faster than their alternation (measured: 3.2
    against 5.3 us per report on bench/realistic_reports.py's corpus)."""

    def __init__(self, *patterns: re.Pattern) -> None:
        self.patterns = patterns

    def search(self, text: str):
        for p in self.patterns:
            m = p.search(text)
            if m is not None:
                return m
        return None


@lru_cache(maxsize=4)
def pair_regexes(pairs: frozenset) -> tuple[AnyOf, re.Pattern, frozenset]:
    """(quick pre-check, regex of candidate 'x y' spots, the pairs) for cross-space ``pairs``."""
    a_all = "".join(sorted({a for a, _ in pairs}))
    b_all = "".join(sorted({b for _, b in pairs}))
    cls = lambda chars: "[" + re.escape("".join(sorted(chars))) + "]"  # noqa: E731
    body = f"{cls(a_all)} {cls(b_all)}"
    # quick pre-check (a superset of the exact pairs, cheap to scan for): one branch per left character that
    # is not a letter, each starting with that literal character; and, as a second regex, " x" for the
    # characters that can follow a letter (the letters themselves would make the scan stop everywhere)
    by_left: dict[str, set] = {}
    for a, b in pairs:
        by_left.setdefault(a, set()).add(b)
    letters = {a for a in by_left if a.isalpha()}
    branches = [f"{re.escape(a)} {cls(bs)}" for a, bs in sorted(by_left.items()) if a not in letters]
    quick = [re.compile("|".join(branches))] if branches else []
    if letters:
        quick.append(re.compile(f" {cls(set().union(*(by_left[a] for a in letters)))}"))
    return AnyOf(*quick), re.compile(f"(?=({body}))"), pairs
