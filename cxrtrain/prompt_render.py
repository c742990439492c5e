"""``prompt_render: online``: a fresh prompt report each time a label study is drawn (CXR-CLIP).

CXR-CLIP composes a label study's prompt report from its labels every time the study is drawn
(kakaobrain/cxr-clip ``cxrclip/data/datasets/imagetext.py`` with ``cxrclip/prompt/prompts.py``). cxrprep
renders ``--variants`` reports at prep time (``prompt_render: offline`` uses those). Online rendering uses the
rule of ``cxrprep prompts`` with the template file and options its manifest records (``config.templates``,
``uncertain``, ``negatives``): one sentence per labelled class drawn from that class's sentences for its state
(CheXpert: 1 positive, 0 negative, -1 by the ``uncertain`` policy, blank skipped, "No Finding" only when
positive; ChestX-ray14: the positive classes plus ``negatives`` absent ones drawn afresh), in random order.
The random generator is the study's text generator of that draw (seeded by seed, epoch, stream and
position), so a resumed run renders the same texts.
"""

from __future__ import annotations

import random
from pathlib import Path

from cxrprep.labels import NIH_LABELS, resolve_no_finding
from cxrprep.text.promptfiles import resolve_prompt_file
from cxrprep.text.templates import Templates, load_templates


class PromptRenderer:
    """Renders prompt reports for one label dataset from its manifest."""

    def __init__(self, templates: Templates, label_names: list[str], uncertain: str, negatives: int, nih: bool):
        self.t, self.names, self.uncertain, self.negatives, self.nih = templates, label_names, uncertain, negatives, nih
        # sentence pools per (class, state), looked up once
        self._pools: dict[tuple, list[str]] = {}
        self._profiles: dict[tuple[str, str], list[tuple]] = {}  # qualifier profiles per (class, state)

    def _pool(self, name: str, state: str, profile: tuple | None = None) -> list[str]:
        key = (name, state, profile)
        if key not in self._pools:
            self._pools[key] = list(self.t.sentences(name, state, profile))
        return self._pools[key]

    def states(self, labels: list, rng: random.Random) -> list[tuple[str, str]]:
        """[(class, positive|negative|uncertain)] of a study's stored labels."""
        if self.nih:
            pos = [n for n, v in zip(self.names, labels) if v == 1]
            absent = [n for n, v in zip(self.names, labels) if v == 0 and n != "No Finding"]
            neg = rng.sample(absent, min(self.negatives, len(absent)))
            return resolve_no_finding([(n, "positive") for n in pos] + [(n, "negative") for n in neg])
        out = []
        for name, v in zip(self.names, labels):
            if v is None or (v == -1 and self.uncertain == "drop"):
                continue
            state = {1: "positive", 0: "negative"}.get(v) or (
                "uncertain" if self.uncertain == "uncertain" else self.uncertain
            )
            if name == "No Finding" and state != "positive":
                continue
            out.append((name, state))
        return resolve_no_finding(out)  # a finding outranks "No Finding" (the rule of cxrprep prompts)

    def render(self, labels: list, rng: random.Random, profiles: dict | None = None) -> str:
        """One prompt report; '' when no labelled class has a sentence. ``profiles``: the study's qualifier
        draw per (class, state) (``qualifiers: sample``), so every text of the study agrees on severity and side."""
        profiles = {} if profiles is None else profiles
        pools = []
        for c, s in self.states(labels, rng):
            if (c, s) not in profiles:
                ps = self._profiles.get((c, s))
                if ps is None:
                    ps = self._profiles[(c, s)] = self.t.profiles(c, s)
                profiles[(c, s)] = rng.choice(ps) if len(ps) > 1 else None  # as Templates.draw_profile
            pools.append(self._pool(c, s, profiles[(c, s)]))
        pools = [p for p in pools if p]
        sents = [rng.choice(p) for p in pools]
        rng.shuffle(sents)
        return " ".join(sents)

    def two(self, labels: list, rng: random.Random, tries: int = 8) -> list[str]:
        """Two fresh reports, different whenever a second one can be found in ``tries`` draws; both use one
        qualifier draw (the same severity and side within a study and epoch)."""
        profiles: dict = {}
        a = self.render(labels, rng, profiles)
        b = a
        for _ in range(tries):
            b = self.render(labels, rng, profiles)
            if b != a:
                break
        return [t for t in (a, b) if t]


def renderer_for(dataset, templates_override: str | None = None) -> PromptRenderer | None:
    """The renderer of a ``ShardDataset`` written by ``cxrprep prompts`` (None for other datasets). Raises
    ValueError naming the manifest and the template file when that file cannot be found."""
    man = dataset.manifest
    conf = man.get("config") or {}
    if man.get("command") != "prompts" and "templates" not in conf:
        return None
    value = templates_override or conf.get("templates") or "default"
    try:
        path = resolve_prompt_file(value, "prompt_templates")
        t = load_templates(path, qualifiers=conf.get("qualifiers"))
    except (ValueError, OSError) as e:
        raise ValueError(
            f"{Path(dataset.dir) / 'manifest.json'}: prompt_render=online needs its template file {value!r} ({e}); "
            "pass one with --set prompt_templates=PATH"
        ) from None
    nih = list(dataset.label_names) == list(NIH_LABELS)
    return PromptRenderer(
        t, list(dataset.label_names), conf.get("uncertain", "uncertain"), conf.get("negatives", 3), nih
    )
