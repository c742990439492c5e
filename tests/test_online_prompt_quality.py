"""``prompt_render: online`` (issue 21) follows the prompt rules of issue 24: one qualifier draw per study and
draw (its two texts agree on severity and side), the No Finding conflict rule, the manifest's qualifiers mode."""

from __future__ import annotations

import random

from cxrprep.labels import CHEXPERT_LABELS
from cxrprep.text.template_qualifiers import contradictions, is_qualified
from cxrprep.text.templates import load_templates
from cxrtrain.prompt_render import PromptRenderer


def _owner(t) -> dict[str, str]:
    return {s: name for name, c in t.classes.items() for st in ("positive", "uncertain") for s in c.sentences[st]}


def _labels(rng: random.Random) -> list:
    return [rng.choice([1, 0, -1, None]) for _ in CHEXPERT_LABELS]


def test_online_texts_of_a_study_never_contradict():
    t = load_templates("default", qualifiers="sample")
    r = PromptRenderer(t, list(CHEXPERT_LABELS), "uncertain", 3, nih=False)
    owner, rng, qualified, bad = _owner(t), random.Random(0), 0, []
    for _ in range(3000):
        texts = r.two(_labels(rng), rng)
        qualified += sum(is_qualified(s) for x in texts for s in x.split(". "))
        if c := contradictions(texts, owner):
            bad.append(c)
    assert bad == [] and qualified > 100  # qualifiers are drawn, and agree within each study


def test_online_no_finding_conflict_rule():
    t = load_templates("default")
    r = PromptRenderer(t, list(CHEXPERT_LABELS), "uncertain", 3, nih=False)
    labels = [None] * len(CHEXPERT_LABELS)
    labels[CHEXPERT_LABELS.index("No Finding")] = 1
    labels[CHEXPERT_LABELS.index("Edema")] = 1
    assert [c for c, _ in r.states(labels, random.Random(0))] == ["Edema"]
    nf = t.sentences("No Finding", "positive")
    assert not any(s in text for text in r.two(labels, random.Random(1)) for s in nf)
