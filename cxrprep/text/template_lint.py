"""Lint of a loaded template file: sentences a radiologist would not write (``cxrprep templates check``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cxrprep.text.template_syntax import STATES, Src

if TYPE_CHECKING:
    from cxrprep.text.templates import Templates

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
DEFECT_KINDS = ("double-verb", "qualified-negative", "article-after-modifier", "duplicate", "agreement", "malformed")


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
    there = _THERE_IS_OF.search(sentence)
    if any(not m.group(1).lower().endswith(_SINGULAR_S) for m in _PLURAL_IS.finditer(sentence)) or (
        there and not there.group(1).lower().endswith(_SINGULAR_S)
    ):
        out.append("agreement")
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


def lint(t: Templates) -> list[Defect]:
    """Every defect of a loaded template file, in file order: malformed sentences, double verbs ("There is
    X is seen."), negatives that qualify the finding, an article after a hedge or modifier ("Possible a
    PICC line."), plural subject with "is", and duplicates inside a pool (which double a sentence's
    sampling weight). Training sentences must end with a full stop; evaluation multi-class prompts (GLoRIA's
    severity x subtype x location grids) need not, and are positives, so qualifiers are expected there."""
    found: list[Defect] = []

    def check(items, pool: str, negative: bool, terminal: bool, allowed: frozenset = frozenset()) -> None:
        seen: set[str] = set()
        for sentence, src, xsrc in items:
            note = f"expression at line {xsrc.line}, column {xsrc.column}" if xsrc is not None else ""
            for kind in sentence_defects(sentence, negative, terminal, allowed):
                found.append(Defect(src, kind, sentence, pool, note))
            if sentence in seen:
                found.append(Defect(src, "duplicate", sentence, pool, note))
            seen.add(sentence)

    for name, c in t.classes.items():
        for state in STATES:
            check(c.origins.get(state, []), f"{name}/{state}", state == "negative", True)
    pools: dict[tuple, list] = {}
    for section, set_name, cname, state, prompt, src in t.eval_origins:
        pools.setdefault((section, set_name, cname, state), []).append((prompt, src, None))
    for (section, set_name, cname, state), items in pools.items():
        pool = f"binary {cname}/{state}" if section == "binary" else f"multiclass {set_name}/{cname}"
        # a binary negative may repeat the qualifiers of its own positive prompts, never add new ones
        allowed = (
            frozenset(
                w.lower()
                for p, _, _ in pools.get((section, set_name, cname, "positive"), [])
                for w in re.findall(r"[A-Za-z][A-Za-z-]*", p)
            )
            & QUALIFIERS
        )
        check(items, pool, section == "binary" and state == "negative", section == "binary", allowed)
    return sorted(found, key=lambda d: (d.src.file, d.src.line, d.src.column, d.kind, d.sentence))
