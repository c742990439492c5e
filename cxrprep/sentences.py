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
from functools import lru_cache

_LIST_LINE = re.compile(r"^[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]+")
_BLANK = re.compile(r"\n[ \t]*\n")
_WS = re.compile(r"\s+")

ABBREVIATIONS = (
    "approx.", "Approx.", "appx.", "Pt.", "pt.", "pts.", "Pts.", "Dr.", "dr.", "Drs.", "vs.", "Vs.", "e.g.", "i.e.",
    "E.g.", "I.e.", "a.m.", "p.m.", "A.M.", "P.M.", "etc.", "resp.", "Fig.", "fig.", "Mr.", "Mrs.", "Ms.",
    "St.", "Jr.", "incl.", "max.", "min.", "esp.", "cf.", "ca.", "Nos.", "nos.",
)
_TERMINAL = {".", "?", "!"}
#: a line at least this long that does not end a sentence was wrapped (MIMIC wraps at 79 columns), so the
#: next line continues the same list item
WRAP_MIN = 60
_CLOSERS = _TERMINAL | {'"', "'", ")"}


@lru_cache(maxsize=1)
def get_nlp():
    """A blank English spaCy pipeline with radiology abbreviations as tokenizer special cases."""
    import spacy
    from spacy.symbols import ORTH

    nlp = spacy.blank("en")
    for abbr in ABBREVIATIONS:
        nlp.tokenizer.add_special_case(abbr, [{ORTH: abbr}])
    for abbr in ("No.", "no."):  # "No. 2": keep whole; a sentence-final "no." is split by the rule below
        nlp.tokenizer.add_special_case(abbr, [{ORTH: abbr}])
    return nlp


def blocks(section: str) -> list[str]:
    """Cut a section at blank lines and before list-item lines; join wrapped lines."""
    out: list[str] = []
    for para in _BLANK.split(section):
        cur: list[str] = []
        in_item = False  # inside a list item, a line break ends the item unless the line was wrapped
        prev = ""
        for line in para.split("\n"):
            starts_item = bool(_LIST_LINE.match(line))
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
    return [_WS.sub(" ", b).strip() for b in out if b.strip()]


def _sentences_of_doc(doc) -> list[str]:
    """Apply the boundary rules to one tokenized block. Works on token offsets (``doc.to_array``) rather
    than Token objects, and looks only at tokens that end in '.', '?' or '!': building a Python Token per
    word was most of the cost at 200k reports."""
    from spacy.attrs import IDX, LENGTH

    text = doc.text
    arr = doc.to_array([IDX, LENGTH]).tolist()
    n = len(arr)
    tok = lambda i: text[arr[i][0]:arr[i][0] + arr[i][1]]  # noqa: E731
    starts = [0]
    sent_first = 0  # index of the first token of the current sentence
    i = 0
    while i < n - 1:
        a, ln = arr[i]
        if text[a + ln - 1] not in "?!.":
            i += 1
            continue
        tx = text[a:a + ln]
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


def split_sections(sections: list[str | None], nlp=None) -> list[list[str]]:
    """Sentences of each section (raw text with line breaks). ``None`` or empty -> []."""
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
