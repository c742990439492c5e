"""Lint of template sentences: what a radiologist would not write (``cxrprep templates check``); ``lint`` over a
loaded file is in cxrprep/text/templates.py."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cxrprep.text.template_articles import COUNT_NOUNS, DETERMINERS, indefinite, noun_phrase
from cxrprep.text.template_syntax import Src

#: words that qualify a finding (severity, side, location, subtype); a negative sentence must not contain
#: one, or it no longer says that the finding is absent ("No apical left pneumothorax.")
QUALIFIERS = frozenset(
    """
    mild mildly minimal minimally small moderate moderately large severe severely massive tiny trace subtle
    slight slightly acute chronic old new extensive increased decreased
    left right bilateral bilaterally unilateral bibasilar bibasal biapical
    apical apex basal basilar base bases lobar lobe upper lower middle mid lingular retrocardiac perihilar
    subsegmental segmental peripheral central zone hilar subpulmonic
    patchy linear plate-like platelike interstitial focal multifocal airspace displaced rib hiatal loculated
    reticular tension""".split()
)
#: words after which an article cannot follow ("Possible a PICC line.", "No a pacemaker.")
_MODIFIERS = (
    r"possible|probable|questionable|suspected|suspicious|new|persistent|no|mild|moderate|small|large|"
    r"minimal|severe|increased|decreased"
)
_ARTICLE = re.compile(rf"\b({_MODIFIERS})\s+(a|an|the)\b", re.I)
_VERBS = {"is", "are", "was", "were", "may", "cannot", "appears", "appear", "remains", "remain"}
_JOINERS = {"and", "but", "which", "that", "while", "whereas", "although", ",", ";"}
_PLURAL_IS = re.compile(r"\b([A-Za-z]+s)\s+(is|was)\b")
_THERE_IS_OF = re.compile(r"\bthere is\b[^.]*?\b([A-Za-z]+s) of\b", re.I)  # "There is no convincing signs of"
_SINGULAR_S = ("sis", "ss", "us", "xis", "ous", "ics", "ias", "is")
_DOUBLED = re.compile(r"\b(\w+)\s+\1\b", re.I)
DEFECT_KINDS = (
    "double-verb",
    "qualified-negative",
    "article-after-modifier",
    "missing-article",
    "a-an",
    "duplicate",
    "agreement",
    "malformed",
)
#: phrases after which a noun phrase needs a determiner when its head is countable and singular
_FRAMES = re.compile(
    r"\b(there is|there are|evidence of|consistent with|compatible with|suggestive of|suggesting|represents?|"
    r"development of|presence of)\s",
    re.I,
)
_NOT_AFTER = {"no", "not", "without", "nor"}  # a negation before the frame


def _is_plural(word: str) -> bool:
    low = word.lower()
    return low.endswith("s") and not low.endswith(_SINGULAR_S) and low not in COUNT_NOUNS


def _article_defects(sentence: str) -> list[str]:
    """missing-article ("There is nodule."), agreement of "there is/are" with the noun phrase ("There are a
    effusion.", "There is nodules."), and a-an ("a effusion", "an nodule")."""
    out = []
    for m in _FRAMES.finditer(sentence):
        if {w.lower() for w in re.findall(r"[A-Za-z]+", sentence[: m.start()])} & _NOT_AFTER:
            continue  # "No convincing evidence of pneumothorax.": negated, not a claim of one
        frame = m.group(1).lower()
        np_ = noun_phrase(re.findall(r"[A-Za-z][A-Za-z-]*|[,;.]", sentence[m.end() :]))
        if not np_:
            continue
        first, head = np_[0].lower(), np_[-1].lower()
        if frame == "there are" and (first in ("a", "an", "one") or (first != "no" and head in COUNT_NOUNS)):
            out.append("agreement")
        elif frame == "there is" and _is_plural(head) and first not in ("a", "an", "one"):
            out.append("agreement")
        elif frame != "there are" and first not in DETERMINERS and head in COUNT_NOUNS:
            out.append("missing-article")
    for m in re.finditer(r"\b(a|an)\s+([A-Za-z][A-Za-z-]*)", sentence, re.I):
        if indefinite(m.group(2)) != m.group(1).lower():
            out.append("a-an")
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Defect:
    """One lint finding: where (the template string), what kind, the rendered sentence, and its pool."""

    src: Src
    kind: str
    sentence: str
    pool: str  # e.g. "Pneumothorax/negative", "binary Edema/negative", "multiclass chexpert-5x200/Edema"
    note: str = ""

    def __str__(self) -> str:
        extra = f"; {self.note}" if self.note else ""
        return f"{self.src.file}:{self.src.line}:{self.src.column}: {self.kind}: {self.sentence!r} ({self.pool}{extra})"


def sentence_defects(
    sentence: str, negative: bool = False, terminal: bool = True, allowed: frozenset = frozenset()
) -> list[str]:
    """Defect kinds of one rendered sentence (not ``duplicate``, which needs the pool). ``negative``: the text
    of a negative label, which must not qualify the finding. ``terminal``: it must end with a full stop.
    ``allowed``: qualifier words that name the finding itself (an eval pair whose positive prompts say "Rib
    fracture." is negated by "No rib fracture.", which is not narrower than its positive)."""
    out = []
    words = re.findall(r"[A-Za-z][A-Za-z-]*|[,;]", sentence)
    low = [w.lower() for w in words]
    verbs = [i for i, w in enumerate(low) if w in _VERBS]
    if any(not any(x in _JOINERS for x in low[a + 1 : b]) for a, b in zip(verbs, verbs[1:])):
        out.append("double-verb")
    if negative and any(w in QUALIFIERS and w not in allowed for w in low):
        out.append("qualified-negative")
    if _ARTICLE.search(sentence):
        out.append("article-after-modifier")
    more = _article_defects(sentence)
    if "missing-article" in more:
        out.append("missing-article")
    there = _THERE_IS_OF.search(sentence)
    if (
        any(not m.group(1).lower().endswith(_SINGULAR_S) for m in _PLURAL_IS.finditer(sentence))
        or (there and not there.group(1).lower().endswith(_SINGULAR_S))
        or "agreement" in more
    ):
        out.append("agreement")
    if "a-an" in more:
        out.append("a-an")
    bad_form = (
        not sentence
        or not (sentence[0].isupper() or sentence[0].isdigit())
        or "{" in sentence
        or "}" in sentence
        or "  " in sentence
        or re.search(r"\s[.,;:]", sentence)
        or ".." in sentence
        or _DOUBLED.search(sentence)
        or (terminal and not sentence.endswith((".", "!", "?")))
    )
    if bad_form:
        out.append("malformed")
    return out


#: the kinds a ``verbatim:`` file is exempt from (its words are a paper's); a duplicate still fails it
STYLE_KINDS = frozenset(DEFECT_KINDS) - {"duplicate"}


def enforced(defects: list[Defect], verbatim: str | None) -> list[Defect]:
    """The defects that fail a file: all of them, or for a ``verbatim`` file those outside STYLE_KINDS."""
    return [d for d in defects if not verbatim or d.kind not in STYLE_KINDS]
