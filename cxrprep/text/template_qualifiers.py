"""Qualifiers a label does not carry: severity and side.

CheXpert and ChestX-ray14 labels say only positive / negative / uncertain. A template sentence that says
"small", "moderate" or "left" invents that detail. Two rules keep the invention honest:

* ``qualifiers: none`` (the template file key, or ``cxrprep prompts --qualifiers none``) drops every
  positive or uncertain sentence that names a severity or a side, so nothing is invented. This is the
  default, as in CXR-CLIP: its released training prompts (kakaobrain/cxr-clip, datasets/train_prompts_all.json
  at commit 955ab931) have no severity or side word in any positive sentence, and its paper (seed 003,
  section 3.1) contrasts them with GLoRIA's evaluation prompts, which "randomly combine a level of severity,
  location, and sub-type".
* ``qualifiers: sample`` keeps them, but a study draws one *profile* per class (one severity level and one
  side, or none) and every text of that study is rendered from the sentences that agree with it: a sentence
  agrees when each of its qualifiers is absent or equal to the profile's. "Small right pleural effusion."
  and "Large right pleural effusion." can no longer describe the same study.

Severity words fall into three levels (mild, moderate, severe: "small" is mild, "large" severe); sides are
left, right and bilateral ("bibasilar" is bilateral). Location and subtype words (apical, lobar, hiatal)
are not qualifiers here: they do not contradict one another in the same way.
"""

from __future__ import annotations

import functools
import re

QUALIFIER_MODES = ("none", "sample")
DEFAULT_QUALIFIERS = "none"  # as CXR-CLIP (see above)

#: severity word -> level
SEVERITY = {
    **dict.fromkeys("mild mildly minimal minimally small tiny trace slight slightly subtle".split(), "mild"),
    **dict.fromkeys("moderate moderately".split(), "moderate"),
    **dict.fromkeys("large severe severely massive extensive".split(), "severe"),
}
#: side word -> side
SIDE = {
    "left": "left",
    "right": "right",
    **dict.fromkeys("bilateral bilaterally bibasilar bibasal biapical".split(), "bilateral"),
}

Profile = tuple  # (severity level or None, side or None)
_SENTENCE = re.compile(r"(?<=[.!?]) (?=[A-Z])")


@functools.lru_cache(maxsize=65536)
def qualifiers_of(sentence: str) -> Profile:
    """(severity level, side) a sentence states; None where it states none. Two sides make "bilateral"."""
    words = [w.lower() for w in re.findall(r"[A-Za-z]+", sentence)]
    severity = next((SEVERITY[w] for w in words if w in SEVERITY), None)
    sides = {SIDE[w] for w in words if w in SIDE}
    side = None if not sides else (sides.pop() if len(sides) == 1 else "bilateral")
    return severity, side


def is_qualified(sentence: str) -> bool:
    return qualifiers_of(sentence) != (None, None)


def agrees(q: Profile, profile: Profile) -> bool:
    """A sentence with qualifiers ``q`` may be said of a study whose drawn profile is ``profile``."""
    return all(a is None or a == b for a, b in zip(q, profile))


def profiles(pool: list[str]) -> list[Profile]:
    """The distinct qualifier profiles of a pool's sentences, in first-seen order: the profiles a study may
    draw (each has at least its own sentence)."""
    return list(dict.fromkeys(qualifiers_of(s) for s in pool))


def agreeing(pool: list[str], profile: Profile | None) -> list[str]:
    """The sentences of ``pool`` that agree with ``profile`` (all of them for None)."""
    if profile is None:
        return pool
    return [s for s in pool if agrees(qualifiers_of(s), profile)]


def check_mode(mode: str, where: str) -> str:
    if mode not in QUALIFIER_MODES:
        raise ValueError(f"{where} must be one of {', '.join(QUALIFIER_MODES)}, got {mode!r}")
    return mode


def load_file_options(t, doc: dict) -> None:
    """Set ``t.verbatim`` and ``t.qualifiers`` from a template file's keys ``verbatim: SOURCE`` and
    ``qualifiers: none|sample``."""
    if "verbatim" in doc:
        val, vsrc = doc["verbatim"]
        if not isinstance(val, tuple) or not str(val[0]).strip():
            raise vsrc.error("verbatim must name the source the file transcribes, e.g. 'CXR-CLIP appendix, Table 7'")
        t.verbatim = str(val[0]).strip()
    if "qualifiers" in doc:
        val, qsrc = doc["qualifiers"]
        mode = val[0] if isinstance(val, tuple) else val
        if mode not in QUALIFIER_MODES:
            raise qsrc.error(f"qualifiers must be one of {', '.join(QUALIFIER_MODES)}, got {mode!r}")
        t.qualifiers = mode


def apply_mode(t, override: str | None = None):
    """Apply the qualifier mode (``override``, e.g. ``--qualifiers``, or the file's) to a loaded Templates:
    under ``none`` the positive and uncertain pools keep only the sentences that state no severity or side."""
    if override is not None:
        t.qualifiers = check_mode(override, "--qualifiers")
    if t.qualifiers == "none":
        for c in t.classes.values():
            for state in ("positive", "uncertain"):
                c.sentences[state] = [x for x in c.sentences[state] if not is_qualified(x)]
    return t


def contradictions(texts: list[str], owner: dict[str, str]) -> list[tuple[str, str, str]]:
    """Qualifier contradictions between the texts of one study: [(class, sentence, other sentence)] where two
    sentences of the same class (``owner``: sentence -> class) state different severities or sides."""
    seen: dict[tuple[str, int], tuple[str, str]] = {}  # (class, axis) -> (value, sentence)
    out = []
    for text in texts:
        for s in _SENTENCE.split(text):
            cls = owner.get(s)
            if cls is None:
                continue
            q = qualifiers_of(s)
            if q == (None, None):
                continue
            for axis, value in enumerate(q):
                if value is None:
                    continue
                first = seen.setdefault((cls, axis), (value, s))
                if first[0] != value:
                    out.append((cls, first[1], s))
    return out
