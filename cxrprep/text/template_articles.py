"""Articles in template sentences: which class expressions need "a"/"an" (the ``{a}`` slot of a template, see
cxrprep/text/templates.py) and which one. Shared by rendering (template_syntax.render) and the lint
(template_lint)."""

from __future__ import annotations

import re

#: singular countable head nouns of chest radiograph findings: after a frame below they need an article
#: ("There is a nodule.", never "There is nodule."); mass nouns (atelectasis, edema, consolidation,
#: cardiomegaly, emphysema, fibrosis, thickening) stand alone. The ``{a}`` slot of a template uses this list.
COUNT_NOUNS = frozenset(
    """nodule mass lesion effusion opacity density fracture hernia infiltrate pneumothorax silhouette tube
    catheter line pacemaker cyst cavity tumor granuloma abnormality""".split()
)
DETERMINERS = {"a", "an", "the", "no", "any", "this", "that", "these", "those", "one", "some", "its", "their"}
NP_STOP = {"is", "are", "was", "were", "in", "at", "on", "with", "which", "that", "and", "or", "of", "may", "to"}
NP_STOP |= {"within", "since", "cannot", "without", "from", "for", "by", ",", ";", "."}
#: "an" before these although they start with a consonant letter, "a" before these vowel letters
_AN_LETTERS = set("AEFHILMNORSX")  # initialisms read letter by letter: "an ILD", "an MRI"
_A_PREFIXES = ("uni", "use", "usu", "ura", "ure", "uro", "one", "eu")


def indefinite(word: str) -> str:
    """ "a" or "an" before ``word`` (by its sound: "an acute", "a unilateral", "an ILD", "a PICC")."""
    w = word.strip("([")
    if len(w) > 1 and w.isupper():
        return "an" if w[0] in _AN_LETTERS else "a"
    low = w.lower()
    if low.startswith(("hour", "honest", "heir")):
        return "an"
    if low[:1] in "aeiou" and not low.startswith(_A_PREFIXES):
        return "an"
    return "a"


def noun_phrase(words: list[str]) -> list[str]:
    out = []
    for w in words:
        if w.lower() in NP_STOP:
            break
        out.append(w)
    return out


def needs_article(expression: str) -> bool:
    """Whether a bare noun phrase (a class expression) needs "a"/"an" after "There is": its head (last word
    before a preposition) is a countable singular noun and it has no determiner of its own."""
    words = noun_phrase(re.findall(r"[A-Za-z][A-Za-z-]*|[,;.]", expression))
    return bool(words) and words[0].lower() not in DETERMINERS and words[-1].lower() in COUNT_NOUNS


def with_article(expression: str) -> str:
    """``expression`` with "a"/"an" in front when :func:`needs_article` (the ``{a}`` slot)."""
    return f"{indefinite(expression.split()[0])} {expression}" if needs_article(expression) else expression
