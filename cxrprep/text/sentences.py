"""Sentence splitting tuned for radiology text: spaCy's blank English tokenizer plus our own rules.

No trained spaCy pipeline is needed (none can be downloaded here, and a parser is far too slow for
200k reports a minute). Rules, in order:

1. *Blocks*: a section is first cut at blank lines and before a line that starts a list item
   (``1.``, ``2)``, ``-``, ``*``): a line break that ends a line item ends its sentence even without a
   full stop, unless the line was wrapped (>= 60 characters and no final full stop: MIMIC wraps at 79).
   Inside a block, wrapped lines are joined.
2. *Boundaries* inside a block come after ``.``, ``?``, ``!`` (and ``;`` never), except:
   - after abbreviations kept whole by tokenizer special cases (``approx.``, ``Pt.``, ``a.m.``, ``p.m.``,
     ``Dr.``, ``vs.``, ``e.g.``, ``i.e.``, ``No.`` before a number ...);
   - inside decimals (``2.5 cm``: one token for spaCy);
   - after a list marker: ``1.`` at the start of a sentence stays attached to its item, so
     ``1. Stable cardiomegaly. 2. Clear lungs.`` gives ``1. Stable cardiomegaly.`` and
     ``2. Clear lungs.``
   Lower-case sentence starts are allowed (NegBio-style reports are all lower case).

One ``nlp`` object per process (``get_nlp``); spaCy's own ``n_process`` is slower than our worker
processes on small machines, so parallelism lives in cxrprep.parallel.
"""

from __future__ import annotations

import re

from cxrprep.text.chunk_tokenizer import cross_space_pairs, pair_regexes
from cxrprep.text.spacy_rules import ABBREVIATIONS, EXTRA_SPECIAL_CASES, get_nlp, shared_rules  # noqa: F401

_LIST_LINE = re.compile(r"^[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]+")
_ITEM_START = frozenset("0123456789-*\u2022")
_LIST_LINE_M = re.compile(_LIST_LINE.pattern, re.M)
_BLANK = re.compile(r"\n[ \t]*\n")
# a line break before what could start a list item or a blank line (a quick superset of both; a literal
# first character makes it several times faster to scan for than _LIST_LINE_M or _BLANK)
_MAYBE_CUT = re.compile(r"\n[ \t]*(?:\d|[-*\u2022\n])")
_WS = re.compile(r"\s+")

_TERMINAL = {".", "?", "!"}
#: a line at least this long that does not end a sentence was wrapped (MIMIC wraps at 79 columns), so the
#: next line continues the same list item
WRAP_MIN = 60
_CLOSERS = _TERMINAL | {'"', "'", ")"}


def preload() -> None:
    """Load the splitter's tables in this process, so that worker processes forked afterwards share them
    instead of each loading them. With a tokenizer rules file (cxrprep.text.chunk_tokenizer) that is a
    small JSON file; without one, spaCy is imported (as in a worker: if torch is not loaded yet, thinc in
    this process will not use it; cxrkit never does) and the file is written."""
    lazy = _LazyNLP()
    lazy.load()
    lazy.tokens("x.")  # compiles the tokenizer's regexes


def blocks(section: str) -> list[str]:
    """Cut a section at blank lines and before list-item lines; join wrapped lines."""
    if section.lstrip(" \t")[:1] not in _ITEM_START and not _MAYBE_CUT.search(section):
        # most sections: no line that could start a list item and no blank line: one block
        b = " ".join(section.split())
        return [b] if b else []
    if not _LIST_LINE_M.search(section):  # no list item: one block per paragraph
        return [b for b in (" ".join(p.split()) for p in _BLANK.split(section)) if b]
    out: list[str] = []
    for para in _BLANK.split(section):
        cur: list[str] = []
        in_item = False  # inside a list item, a line break ends the item unless the line was wrapped
        prev = ""
        for line in para.split("\n"):
            starts_item = line.lstrip(" \t")[:1] in _ITEM_START and bool(_LIST_LINE.match(line))
            wrapped = len(prev.rstrip()) >= WRAP_MIN and prev.rstrip()[-1:] not in _TERMINAL
            if cur and (starts_item or (in_item and not wrapped)):
                out.append(" ".join(cur))
                cur = []
            if starts_item:
                in_item = True
            if line.strip():
                cur.append(line.strip())
            prev = line
        if cur:
            out.append(" ".join(cur))
    return [b for b in (" ".join(x.split()) for x in out) if b]


def _doc_spans(doc) -> list[tuple[int, int]]:
    """(start, end) of each token of a spaCy ``Doc``."""
    from spacy.attrs import IDX, LENGTH

    return [(a, a + ln) for a, ln in doc.to_array([IDX, LENGTH]).tolist()]


def _sentences_of_doc(doc) -> list[str]:
    """Apply the boundary rules to one tokenized block (a spaCy ``Doc``): the reference implementation,
    kept for tests; ``split_sections`` uses ``_sentences_of_block``, which gives the same result."""
    return _sentences_of_spans(doc.text, _doc_spans(doc))


def _sentences_of_spans(text: str, spans: list[tuple[int, int]]) -> list[str]:
    """The boundary rules on a block given as its text and its tokens' (start, end)."""
    arr = [(a, b - a) for a, b in spans]
    n = len(arr)
    tok = lambda i: text[arr[i][0] : arr[i][0] + arr[i][1]]  # noqa: E731
    starts = [0]
    sent_first = 0  # index of the first token of the current sentence
    i = 0
    while i < n - 1:
        a, ln = arr[i]
        if text[a + ln - 1] not in "?!.":
            i += 1
            continue
        tx = text[a : a + ln]
        boundary = False
        if set(tx) <= _TERMINAL:  # ".", "?", "..", "?!"
            prev = tok(i - 1) if i > 0 else ""
            # "1." / "2)" list marker at the start of a sentence: attached to its item
            boundary = not (i - 1 == sent_first and prev.isdigit() and len(prev) <= 2)
        elif tx in ("No.", "no."):
            boundary = not tok(i + 1)[:1].isdigit()
        elif len(tx) > 1 and tx[-2].isalpha() and tx not in ABBREVIATIONS and tx.count(".") == 1:
            boundary = True  # tokenizer left "word." whole (rare): still a sentence end
        if boundary:
            j = i + 1
            while j < n and set(tok(j)) <= _CLOSERS:  # "p.m.." or '." ' stay in the sentence
                j += 1
            if j < n:
                starts.append(arr[j][0])
                sent_first = j
            i = j
            continue
        i += 1
    starts.append(len(text))
    return [text[a:b].strip() for a, b in zip(starts, starts[1:]) if text[a:b].strip()]


# -- the fast path -------------------------------------------------------------------------------------
# spaCy splits text on spaces first and then tokenizes each space-free chunk on its own (prefixes,
# suffixes, infixes, special cases), so a block's tokens are the concatenation of its chunks' tokens.
# The rules above only look at tokens that end in '.', '?' or '!', at the token before and after such a
# token and at closing punctuation after a boundary. A chunk without any of . ? ! " ' ) can hold none of
# those, so only the chunks that do ("effusion.", "1.", "p.m.)") are tokenized, once per distinct chunk
# (cached per process); the runs of other chunks between them stand for "some ordinary tokens".
# ``tests/test_reports.py`` checks this against the reference on every block of the test corpora.
_SPECIAL = re.compile(r"(?<![^ ])[^ .?!\"')]*+[.?!\"')][^ ]*")  # a whole chunk (possessive: no backtracking)
_TOKEN_CACHE: dict[str, tuple] = {}
_SIMPLE_CACHE: dict[str, bool] = {}
_CLOSER_CHARS = ".?!\"')"
_CUT_CHUNKS: set[str] = set()  # chunks of kind _CUT that end in a full stop (filled as they are met)
_INNER = re.compile(r"\.(?=[^ ])|\)")  # a full stop inside a chunk, or a closing bracket
_CACHE_MAX = 500_000


_PLAIN, _TERM, _NO, _WORDEND, _OTHER = 0, 1, 2, 3, 4


def _token_info(chunk: str, spans) -> tuple:
    """(start, end, code, all closers?, short number?) per token of a chunk; ``code`` says what the rules
    do with a token ending in . ? ! (_TERM: only terminal characters, _NO: "No."/"no.", _WORDEND: a
    "word." left whole, _OTHER: never a boundary) or _PLAIN (does not end in one)."""
    out = []
    for a, b in spans:
        tx = chunk[a:b]
        if tx[-1] not in "?!.":
            code = _PLAIN
        elif set(tx) <= _TERMINAL:
            code = _TERM
        elif tx in ("No.", "no."):
            code = _NO
        elif len(tx) > 1 and tx[-2].isalpha() and tx not in ABBREVIATIONS and tx.count(".") == 1:
            code = _WORDEND
        else:
            code = _OTHER
        out.append((a, b, code, set(tx) <= _CLOSERS, tx.isdigit() and len(tx) <= 2))
    return tuple(out)


_COMPLEX, _CUT, _INERT, _MARKER = 0, 1, 2, 3


def _chunk_kind(chunk: str, t: tuple) -> int:
    """How a chunk acts in the common case (see _sentences_of_block): _CUT: one terminal token, followed
    in the chunk only by closing tokens, whose previous token (same chunk) is not a short number, e.g.
    "effusion." "___." "34)." "word.)" -> a sentence ends right after the chunk; _MARKER: a short number
    + terminal ("1.") -> ends a sentence unless it starts one; _INERT: no token that can end a sentence
    ("2.5", "approx.", "34)": a closing token ends nothing unless it follows a sentence end, which no token
    of this chunk is, and the chunk does not start with one); _COMPLEX: anything else, and every chunk
    that starts with a closing character (it may close the previous chunk's sentence)."""
    if chunk[0] in _CLOSER_CHARS:
        return _COMPLEX
    ends = [i for i, tok in enumerate(t) if tok[2] != _PLAIN and tok[2] != _OTHER]
    if not ends:
        return _INERT
    i = ends[0]
    if len(ends) > 1 or t[i][2] != _TERM or not all(tok[3] for tok in t[i + 1 :]):
        return _COMPLEX
    if t[i - 1][4]:  # i >= 1: a chunk that starts with a terminal starts with a closing character
        return _MARKER if len(t) == 2 else _COMPLEX
    return _CUT


class _LazyNLP:
    """Tokens of chunks, cached per process. Chunks are tokenized by the pure-Python copy of spaCy's
    tokenizer (cxrprep.text.chunk_tokenizer) when its rules file exists, else by spaCy; spaCy itself is
    imported only for that, or for a block whose special cases could match across a space (rare)."""

    def __init__(self, nlp=None) -> None:
        self.nlp = nlp  # given: spaCy tokenizes every chunk with it (tests, custom pipelines)
        self.chunks = None  # ChunkTokenizer
        self.cross: re.Pattern | None = None
        self.quick = None  # chunk_tokenizer.AnyOf
        self.pairs: frozenset = frozenset()

    def load(self) -> None:
        if self.quick is not None:
            return
        if self.nlp is not None:
            pairs = cross_space_pairs(self.nlp)
        else:
            self.chunks, pairs = shared_rules()
            if self.chunks is None:
                self.nlp = get_nlp()
        self.quick, self.cross, self.pairs = pair_regexes(frozenset(pairs))

    def block_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of each token of a block (or chunk), as spaCy's tokenizer gives them; spaCy is
        imported only without a rules file or for text with other whitespace than single spaces."""
        self.load()
        if self.chunks is not None and self.chunks.handles(text):
            return self.chunks.spans(text)
        if self.nlp is None:
            self.nlp = get_nlp()
        return _doc_spans(self.nlp.tokenizer(text))

    def tokens(self, chunk: str) -> tuple:
        t = _TOKEN_CACHE.get(chunk)
        if t is None:
            self.load()
            t = _token_info(chunk, self.block_spans(chunk))
            if len(_TOKEN_CACHE) >= _CACHE_MAX:
                _TOKEN_CACHE.clear()
                _SIMPLE_CACHE.clear()
                _CUT_CHUNKS.clear()
            _TOKEN_CACHE[chunk] = t
            _SIMPLE_CACHE[chunk] = _chunk_kind(chunk, t)
        return t

    def context_dependent(self, text: str) -> bool:
        """Whether a special case could match across a space in ``text``. spaCy's special-case matcher
        runs over the whole block, and a match spanning two chunks (``": )"``), though never applied, can
        block a match inside a chunk (``"):"``); such blocks go through the full tokenizer."""
        if self.cross is None:
            self.load()
        if not self.quick.search(text):
            return False
        for m in self.cross.finditer(text):
            g = m.group(1)
            if (g[0], g[2]) in self.pairs:
                return True
        return False


def _sentences_of_block(text: str, lazy: _LazyNLP, check: bool = True) -> list[str]:
    """Same result as ``_sentences_of_doc(nlp.tokenizer(text))`` for a block (single spaces, stripped).
    ``check=False``: the caller knows the block is not context dependent (see split_sections_and_text)."""
    if "." not in text and "?" not in text and "!" not in text:
        return [text] if text else []
    if check and lazy.context_dependent(text):
        return _sentences_of_spans(text, lazy.block_spans(text))
    if "?" not in text and "!" not in text and '"' not in text and "'" not in text:
        out = _sentences_of_dots(text, lazy)
        if out is not None:
            return out
    # common case: every chunk with a special character is "word." (a cut after it), "1." (a cut unless
    # it starts the sentence) or inert ("2.5"); the next chunk then starts the next sentence
    kind = _SIMPLE_CACHE.get
    cuts = [0]
    for m in _SPECIAL.finditer(text):
        chunk = m.group()
        k = kind(chunk)
        if k is None:
            lazy.tokens(chunk)
            k = _SIMPLE_CACHE[chunk]
        if k == _INERT:
            continue
        if k == _CUT or (k == _MARKER and m.start() != cuts[-1]):
            cuts.append(m.end() + 1)
        elif k != _MARKER:
            break
    else:
        if cuts[-1] >= len(text):
            cuts[-1] = len(text)
        else:
            cuts.append(len(text))
        if len(cuts) == 2:
            return [text]
        return [text[a : b - 1] if b < len(text) else text[a:b] for a, b in zip(cuts, cuts[1:])]
    return _sentences_of_tokens(text, lazy)


def _sentences_of_dots(text: str, lazy: _LazyNLP) -> list[str] | None:  # long: one fast path
    """The loop of ``_sentences_of_block`` for the most common block (no ? ! " '), without scanning it
    chunk by chunk: cutting after every ". " gives the pieces between the chunks that end in a full stop,
    the only ones that can end a sentence; a chunk with a full stop inside ("2.5") or a closing bracket
    ("34)") that does not end in a full stop must be inert.
    None when a chunk is not a plain cut, marker or inert chunk (the caller then scans the block)."""
    pieces = text.replace(". ", ".\n").split("\n")  # blocks hold no line break; each piece keeps its "."
    kind = _SIMPLE_CACHE.get
    last = len(pieces) - 1
    if ")" in text or text.count(".") != last + (text[-1] == "."):  # full stops inside chunks, brackets
        end = 0
        for m in _INNER.finditer(text):
            if m.start() < end:
                continue  # the same chunk again
            a = text.rfind(" ", 0, m.start()) + 1
            e = text.find(" ", m.start())
            e = end = len(text) if e < 0 else e
            if text[e - 1] == ".":
                continue  # ends in a full stop: one of the chunks below ("a.m.", "2.5.", "34).")
            chunk = text[a:e]
            k = kind(chunk)
            if k is None:
                lazy.tokens(chunk)
                k = _SIMPLE_CACHE[chunk]
            if k != _INERT:
                return None
    if text[-1] == ".":  # the block's last chunk: only one that is not simple changes the result
        chunk = pieces[last][pieces[last].rfind(" ") + 1 :]
        if kind(chunk) is None:
            lazy.tokens(chunk)
        if _SIMPLE_CACHE[chunk] == _COMPLEX:
            return None
    if not last:
        return [text]
    if _CUT_CHUNKS.issuperset([p[p.rfind(" ") + 1 :] for p in pieces[:last]]):  # every full stop ends one
        return pieces
    out = []
    start = 0  # the current sentence's first piece
    for i in range(last):
        p = pieces[i]
        sp = p.rfind(" ")
        chunk = p[sp + 1 :]
        k = kind(chunk)
        if k is None:
            lazy.tokens(chunk)
            k = _SIMPLE_CACHE[chunk]
        if k == _CUT:
            _CUT_CHUNKS.add(chunk)
        if k == _CUT or (k == _MARKER and (i != start or sp >= 0)):  # a marker is kept with its item
            out.append(" ".join(pieces[start : i + 1]))
            start = i + 1
        elif k != _INERT and k != _MARKER or chunk == ".":
            return None
    if not out:
        return [text]
    out.append(" ".join(pieces[start:]))
    return out


def _sentences_of_tokens(text: str, lazy: _LazyNLP) -> list[str]:
    """The rules of ``_sentences_of_doc`` on a reduced token list: (start, end, code, closers, short
    number) per token of the chunks with special characters; a run of chunks without special characters
    is one _PLAIN entry (its real tokens end in none of . ? ! and are not all closers)."""
    toks: list[tuple] = []
    pos = 0
    for m in _SPECIAL.finditer(text):
        a = m.start()
        if a > pos:
            toks.append((pos, a - 1, _PLAIN, False, None))
        if a:
            toks.extend((a + s, a + e, c, cl, d) for s, e, c, cl, d in lazy.tokens(m.group()))
        else:
            toks.extend(lazy.tokens(m.group()))
        pos = m.end() + 1
    if pos < len(text):
        toks.append((pos, len(text), _PLAIN, False, None))
    n = len(toks)
    starts = [0]
    i = 0
    while i < n - 1:
        code = toks[i][2]
        if code == _PLAIN or code == _OTHER:
            i += 1
            continue
        if code == _TERM:
            if i == 0:
                boundary = True
            else:
                pa, pb, _, _, short = toks[i - 1]
                if short is None:  # a run of plain chunks: its last token
                    c = text.rfind(" ", pa, pb)
                    c = pa if c < 0 else c + 1
                    ps, _, _, _, short = lazy.tokens(text[c:pb])[-1]
                    pa = c + ps
                # "1." / "2)" list marker at the start of a sentence: attached to its item
                boundary = not (short and pa == starts[-1])
        elif code == _NO:
            boundary = not text[toks[i + 1][0] : toks[i + 1][0] + 1].isdigit()
        else:
            boundary = True
        if boundary:
            j = i + 1
            while j < n and toks[j][3]:  # "p.m.." or '." ' stay in the sentence
                j += 1
            if j < n:
                starts.append(toks[j][0])
            i = j
            continue
        i += 1
    starts.append(len(text))
    if len(starts) == 2:
        return [text]
    return [t for t in (text[a:b].strip() for a, b in zip(starts, starts[1:])) if t]


def split_sections(sections: list[str | None], nlp=None) -> list[list[str]]:
    """Sentences of each section (raw text with line breaks). ``None`` or empty -> []."""
    lazy = nlp if isinstance(nlp, _LazyNLP) else _LazyNLP(nlp)
    return [[x for b in blocks(s) for x in _sentences_of_block(b, lazy)] if s else [] for s in sections]


def split_sections_and_text(sections: list[str | None], nlp=None) -> tuple[list[list[str]], list[str | None]]:
    """(``split_sections(sections)``, ``[normalize_ws(s) for s in sections]``) from one pass: a section's
    blocks joined by single spaces are its whitespace-normalised text (blocks only cut and re-join at
    whitespace). The context check (``_LazyNLP.context_dependent``) runs once on that joined text; only
    when it could match there is each block checked on its own."""
    lazy = nlp if isinstance(nlp, _LazyNLP) else _LazyNLP(nlp)
    if lazy.quick is None:
        lazy.load()
    quick = lazy.quick.patterns
    sents: list[list[str]] = []
    texts: list[str | None] = []
    for s in sections:
        first = s[0] if s else ""
        if first == " " or first == "\t":
            first = s.lstrip(" \t")[:1]
        if first and first not in _ITEM_START and not _MAYBE_CUT.search(s):
            joined = " ".join(s.split())  # one block (as blocks() would find), inlined: most sections
            bl = [joined] if joined else []
        else:
            bl = blocks(s) if s else []
            joined = " ".join(bl)
        if not bl:
            sents.append([])
            texts.append(None)
            continue
        check = False
        for q in quick:
            if q.search(joined) is not None:
                check = True
                break
        if len(bl) == 1:
            sents.append(_sentences_of_block(joined, lazy, check))
        else:
            sents.append([x for b in bl for x in _sentences_of_block(b, lazy, check)])
        texts.append(joined)
    return sents, texts


def split_sections_reference(sections: list[str | None], nlp=None) -> list[list[str]]:
    """``split_sections`` through spaCy's full tokenizer on every block (slow; for tests and checks)."""
    nlp = nlp or get_nlp()
    flat: list[str] = []
    owners: list[int] = []
    for k, s in enumerate(sections):
        if s:
            for b in blocks(s):
                flat.append(b)
                owners.append(k)
    out: list[list[str]] = [[] for _ in sections]
    for k, doc in zip(owners, nlp.tokenizer.pipe(flat, batch_size=1024)):
        out[k].extend(_sentences_of_doc(doc))
    return out


def split_sentences(text: str | None) -> list[str]:
    """Sentences of one section."""
    return split_sections([text])[0]
