"""The prompt template language (prompts/*.yaml): parse, validate, expand, render.

Grammar (a superset of the one in the CXR-CLIP appendix)::

    expr  := term (['+'] term)*        concatenation ('+' or juxtaposition), joined with one space
    term  := '[' alts ']' | text
    alts  := expr (',' expr)*          alternatives; '( )' or '()' is the empty option
    text  := any characters but [ ] , +   ('{}' is the slot for a class expression; '{a}' the same with
                                           "a"/"an" before a countable singular noun: cxrprep/text/template_articles.py)

``[There is, ( )] + [no {}., no evidence of {}.]`` expands to ``There is no {}.``, ``There is no evidence
of {}.``, ``no {}.``, ``no evidence of {}.``; rendering fills the slot and capitalises the first letter.

A template file (YAML)::

    version: 1
    qualifiers: none               # none (default, as CXR-CLIP) | sample: cxrprep/text/template_qualifiers.py
    verbatim: "CXR-CLIP appendix"  # optional: the file is a paper's words; exempt from the style lint
    defaults:                      # sentence templates; each must contain exactly one {} or {a}
      positive: ["..."]
      negative: ["..."]
      uncertain: ["..."]
    aliases: {Effusion: Pleural Effusion}      # dataset spelling -> class
    classes:
      Nodule:
        expressions: ["[( ), pulmonary] + [nodule, nodular opacity, nodular density]"]   # no {} here
        qualified: ["[small, large] [( ), pulmonary] nodule"]   # optional: positive/uncertain only
        negative: ["The lungs are clear of nodules."]   # optional per-class override ({} optional)
        use_defaults: false        # optional: states without an override get no sentences (No Finding)
    binary:                        # eval.yaml only: zero-shot prompt pairs per class
      Pneumonia: {positive: [...], negative: [...]}
    multiclass:                    # eval.yaml only: class prompt sets, e.g. severity x subtype x location
      chexpert-5x200:
        Atelectasis: ["[( ), mild, minimal] + [subsegmental, linear] + atelectasis + [at the left base, ...]"]

Negative sentences use only ``expressions``: a negative never qualifies the finding ("No pneumothorax.",
never "No apical left pneumothorax."); ``qualified`` expressions (severity, side, location, subtype) add
variety to positive and uncertain sentences. Pools never hold a sentence twice. ``lint`` reports sentences
a radiologist would not write (see ``DEFECT_KINDS``); ``cxrprep templates check`` fails on them.

Modules: template_syntax.py (expand, render, caps, TemplateError), template_yaml.py (YAML with positions),
this module (validation and the Templates object), template_lint.py (lint), template_articles.py ({a}),
template_qualifiers.py (qualifiers none|sample, per-study profiles), template_coverage.py (a dataset's
classes). User documentation: docs/templates.md.

Errors (``TemplateError``) carry file, line and column: YAML syntax, unknown keys or classes,
unbalanced brackets, an expansion that is empty, a ``{}`` slot where it cannot be (in an expression, twice
in a sentence, missing from a default sentence), a file that is not UTF-8, ``version`` other than 1, and
the resource caps below (MAX_*): expansion is counted before it is materialised, YAML aliases are followed
with a node budget, nesting is bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cxrprep.labels import ALIASES, CHEXPERT_LABELS, NIH_LABELS
from cxrprep.text.template_lint import DEFECT_KINDS, QUALIFIERS, Defect, sentence_defects
from cxrprep.text.template_qualifiers import DEFAULT_QUALIFIERS, agreeing, apply_mode, load_file_options, profiles
from cxrprep.text.template_syntax import (
    MAX_DEPTH,
    MAX_EXPANSIONS,
    MAX_SENTENCES,
    MAX_TOTAL_SENTENCES,
    MAX_YAML_NODES,
    STATES,
    Src,
    TemplateError,
    expand,
    file_budget,
    render,
)
from cxrprep.text.template_syntax import cap as _cap
from cxrprep.text.template_yaml import compose, read_text, string_items, to_python

#: every class a template file may name (canonical names; aliases map dataset spellings onto them)
KNOWN_CLASSES = tuple(sorted({ALIASES.get(c, c) for c in CHEXPERT_LABELS + NIH_LABELS}))


@dataclass
class ClassTemplates:
    name: str
    expressions: list[str]  # used in every state (the seed-003 expression table)
    sentences: dict[str, list[str]]  # state -> fully rendered sentences (slot filled), capitalised, no duplicates
    qualified: list[str] = field(default_factory=list)  # positive/uncertain only (severity, side, location, subtype)
    # state -> every rendered sentence before de-duplication, with the template's and the expression's source
    origins: dict[str, list[tuple[str, Src, Src | None]]] = field(default_factory=dict)


@dataclass
class Templates:
    """A validated template file, expanded."""

    path: str
    classes: dict[str, ClassTemplates] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    binary: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    multiclass: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # evaluation prompts before de-duplication: (section, set, class, state, prompt, source)
    eval_origins: list[tuple[str, str, str, str, str, Src]] = field(default_factory=list)
    verbatim: str | None = None  # the source a file transcribes word for word (exempt from the style lint)
    qualifiers: str = DEFAULT_QUALIFIERS  # none | sample: see cxrprep/text/template_qualifiers.py

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, ALIASES.get(name, name))

    def sentences(self, class_name: str, state: str, profile: tuple | None = None) -> list[str]:
        """Rendered sentences of a class (dataset spelling accepted) for state positive|negative|uncertain;
        with a ``profile`` (severity, side) drawn by ``draw_profile``, only the sentences that agree with it."""
        c = self.classes.get(self.canonical(class_name))
        if c is None:
            raise KeyError(f"{self.path}: no templates for class {class_name!r}")
        return agreeing(c.sentences[state], profile)

    def profiles(self, class_name: str, state: str) -> list[tuple]:
        """The qualifier profiles a study may draw for this class and state (one: nothing to agree on)."""
        return profiles(self.sentences(class_name, state))

    def draw_profile(self, class_name: str, state: str, rng) -> tuple | None:
        """One study's profile for a class (``rng``: a random.Random of that study and epoch), or None when the
        pool has a single profile. Render every text of the study with ``sentences(..., profile)``."""
        ps = self.profiles(class_name, state)
        return rng.choice(ps) if len(ps) > 1 else None


def _strings(value, what: str, src: Src) -> list[tuple[str, Src]]:
    if isinstance(value, tuple):  # a single scalar
        value = [value]
    if not isinstance(value, list) or not value:
        raise src.error(f"{what} must be a non-empty list of strings")
    return string_items(value, what, src)


def _has_slot(s: str) -> bool:
    return "{}" in s or "{a}" in s


def _check_slots(s: str, src: Src, required: bool) -> None:
    n = s.count("{}") + s.count("{a}")
    if n > 1:
        raise src.error(f"a sentence may contain one {{}} slot, found {n} (counting {{a}}): {s!r}")
    if required and n == 0:
        raise src.error(f"default sentence has no {{}} slot for the class expression: {s!r}")
    if re.search(r"\{(?!a\})[^}]+\}", s):
        raise src.error(f"only an empty {{}} slot is allowed (or {{a}}, the slot with its article): {s!r}")


def load_templates(path: str | Path, qualifiers: str | None = None) -> Templates:
    """Parse and validate a template file. Raises TemplateError (file:line:col: message). ``qualifiers``
    (none | sample) overrides the file's ``qualifiers:`` key (default none, as CXR-CLIP)."""
    with file_budget(MAX_TOTAL_SENTENCES):
        t = _load_templates(path)
    return apply_mode(t, qualifiers)


def _read_document(path: str | Path) -> tuple[Path, yaml.MappingNode, dict]:
    """The file's path, its YAML root mapping and that mapping as (value, Src) pairs."""
    from cxrprep.text.promptfiles import resolve_prompt_file

    try:
        path = resolve_prompt_file(path, "prompt file")  # "default" / "eval" (packaged) or a path
    except ValueError as e:
        raise TemplateError(str(path), 0, 0, str(e)) from None
    file = str(path)
    if path.is_dir():
        raise TemplateError(file, 0, 0, "is a folder, not a template file")
    node = compose(read_text(path, file), file)
    if node is None or not isinstance(node, yaml.MappingNode):
        raise TemplateError(file, 1, 1, "a template file is a YAML mapping (version, defaults, classes, ...)")
    return path, node, to_python(node, file)


def _check_top_level(file: str, node: yaml.MappingNode, doc: dict) -> None:
    if "version" in doc:  # written as the plain number 1 (not 0x1, "1", 1.0 or a list)
        vnode = next(v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == "version")
        if not (isinstance(vnode, yaml.ScalarNode) and vnode.tag.endswith(":int") and vnode.value == "1"):
            shown = vnode.value if isinstance(vnode, yaml.ScalarNode) else f"a YAML {vnode.id}"
            raise TemplateError(
                file,
                vnode.start_mark.line + 1,
                vnode.start_mark.column + 1,
                f"version must be 1 (the only template format), got {shown!r}",
            )
    allowed = {"version", "defaults", "classes", "aliases", "binary", "multiclass", "verbatim", "qualifiers", "grids"}
    for k, (_, ksrc) in doc.items():
        if k not in allowed:
            raise ksrc.error(f"unknown key {k!r}; expected one of {sorted(allowed)}")


def _load_templates(path: str | Path) -> Templates:
    path, node, doc = _read_document(path)
    file = str(path)
    _check_top_level(file, node, doc)
    t = Templates(path=file)
    load_file_options(t, doc)
    if "aliases" in doc:
        _load_aliases(t, *doc["aliases"])
    defaults = _load_defaults(*doc["defaults"]) if "defaults" in doc else {}
    if "classes" in doc:
        _load_classes(t, defaults, *doc["classes"])
    if "binary" in doc:
        _load_binary(t, *doc["binary"])
    if "multiclass" in doc:
        _load_multiclass(t, *doc["multiclass"])
    if "grids" in doc:  # word-list grids (cxrprep/text/grids.py): verbatim prompts, duplicates kept as weight
        from cxrprep.text.grids import load_grids

        for set_name, classes in load_grids(
            doc["grids"], lambda n, s, any_name: _class_name(t, n, s, any_name)
        ).items():
            t.multiclass.setdefault(set_name, {}).update(classes)
    return t


def _load_aliases(t: Templates, amap, asrc: Src) -> None:
    if not isinstance(amap, dict):
        raise asrc.error("aliases must map a dataset spelling to a class name")
    for k, (v, ksrc) in amap.items():
        if not isinstance(v, tuple) or v[0] not in KNOWN_CLASSES:
            raise (v[1] if isinstance(v, tuple) else ksrc).error(
                f"alias {k!r} points to unknown class {v[0] if isinstance(v, tuple) else v!r}"
            )
        t.aliases[k] = v[0]


def _class_name(t: Templates, name: str, src: Src, any_name: bool = False) -> str:
    """The canonical class of ``name``; ``any_name``: eval sections (binary/multiclass) may name any class an
    eval dataset defines, the others only KNOWN_CLASSES."""
    c = t.aliases.get(name, ALIASES.get(name, name))
    if any_name:
        if not name.strip() or any(ch in name for ch in "[]{}"):
            raise src.error(f"eval class name {name!r} must be non-empty, without brackets or braces")
        return c
    if c not in KNOWN_CLASSES:
        import difflib

        close = difflib.get_close_matches(c, KNOWN_CLASSES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise src.error(f"unknown class {name!r}{hint}; known: {', '.join(KNOWN_CLASSES)}")
    return c


def _load_defaults(dmap, dsrc: Src) -> dict[str, list[tuple[str, Src]]]:
    if not isinstance(dmap, dict):
        raise dsrc.error("defaults must map positive/negative/uncertain to lists of sentences")
    defaults: dict[str, list[tuple[str, Src]]] = {}
    for state, (val, ssrc) in dmap.items():
        if state not in STATES:
            raise ssrc.error(f"unknown sentence state {state!r}; expected {STATES}")
        out: list[tuple[str, Src]] = []
        for s, src in _strings(val, f"defaults.{state}", ssrc):
            for e in expand(s, src):
                _check_slots(e, src, required=True)
                out.append((e, src))
            _cap(len(out), MAX_SENTENCES, f"defaults.{state}", src)
        defaults[state] = out
    return defaults


def _load_classes(t: Templates, defaults: dict, cmap, csrc: Src) -> None:
    if not isinstance(cmap, dict):
        raise csrc.error("classes must be a mapping of class name -> {expressions, ...}")
    total = 0
    for name, (body, nsrc) in cmap.items():
        cname = _class_name(t, name, nsrc)
        ct = _load_class(name, cname, body, nsrc, defaults)
        total += sum(len(v) for v in ct.sentences.values())
        _cap(total, MAX_TOTAL_SENTENCES, "the sentences of all classes so far", nsrc, f"at class {name!r}")
        t.classes[cname] = ct


def _class_options(name: str, body, nsrc: Src) -> bool:
    """Check a class's keys; return its use_defaults."""
    if not isinstance(body, dict) or "expressions" not in body:
        raise nsrc.error(f"class {name!r} needs 'expressions'")
    for key, (_val, ksrc) in body.items():
        if key not in ("expressions", "qualified", "use_defaults") + STATES:
            raise ksrc.error(
                f"unknown key {key!r} in class {name!r}; expected expressions, qualified, "
                f"use_defaults, {', '.join(STATES)}"
            )
    if "use_defaults" not in body:
        return True
    given, ksrc = body["use_defaults"]
    if not isinstance(given, tuple):  # a list or a mapping, not a scalar
        raise ksrc.error(
            f"use_defaults must be true or false, got {'a list' if isinstance(given, list) else 'a mapping'}"
        )
    val, vsrc = given
    if str(val).lower() not in ("true", "false"):
        raise vsrc.error(f"use_defaults must be true or false, got {val!r}")
    return str(val).lower() == "true"


def _class_expressions(name: str, body: dict) -> dict[str, list[tuple[str, Src]]]:
    lists: dict[str, list[tuple[str, Src]]] = {"expressions": [], "qualified": []}
    for key in lists:
        if key not in body:
            continue
        for s, src in _strings(body[key][0], f"{name}.{key}", body[key][1]):
            for e in expand(s, src):
                if "{" in e or "}" in e:
                    raise src.error(f"a slot {{}} cannot appear in an expression: {s!r}")
                lists[key].append((e, src))
            _cap(len(lists[key]), MAX_SENTENCES, f"class {name!r} {key}", src)
    return lists


def _state_sentences(name: str, state: str, body: dict, xs: list) -> list[tuple[str, Src, Src | None]]:
    """The sentences of a class's own ``state`` override, rendered with every expression of ``xs``."""
    rendered: list[tuple[str, Src, Src | None]] = []
    for s, src in _strings(body[state][0], f"{name}.{state}", body[state][1]):
        for e in expand(s, src):
            _check_slots(e, src, required=False)
            _cap(
                len(rendered) + (len(xs) if _has_slot(e) else 1),
                MAX_SENTENCES,
                f"class {name!r} {state} sentences",
                src,
                f"{len(xs):,} expressions per sentence",
            )
            if _has_slot(e):
                rendered.extend((render(e, x), src, xsrc) for x, xsrc in xs)
            else:
                rendered.append((render(e), src, None))
    return rendered


def _load_class(name: str, cname: str, body, nsrc: Src, defaults: dict) -> ClassTemplates:
    use_defaults = _class_options(name, body, nsrc)
    lists = _class_expressions(name, body)
    exprs, qual = lists["expressions"], lists["qualified"]
    sentences: dict[str, list[str]] = {}
    origins: dict[str, list[tuple[str, Src, Src | None]]] = {}
    for state in STATES:
        # negatives never qualify the finding: only the plain expressions are negated
        xs = exprs if state == "negative" else exprs + qual
        rendered: list[tuple[str, Src, Src | None]] = []
        if state in body:
            rendered = _state_sentences(name, state, body, xs)
        elif state in defaults and use_defaults:
            _cap(
                len(defaults[state]) * len(xs),
                MAX_SENTENCES,
                f"class {name!r} {state} sentences",
                nsrc,
                f"{len(defaults[state]):,} default sentences x {len(xs):,} expressions",
            )
            rendered = [(render(d, x), dsrc, xsrc) for d, dsrc in defaults[state] for x, xsrc in xs]
        origins[state] = rendered
        sentences[state] = list(dict.fromkeys(r[0] for r in rendered))
    return ClassTemplates(
        cname,
        list(dict.fromkeys(e for e, _ in exprs)),
        sentences,
        list(dict.fromkeys(e for e, _ in qual)),
        origins,
    )


def _eval_prompts(value, what: str, src: Src) -> list[tuple[str, Src]]:
    return [(render(e), s_src) for s, s_src in _strings(value, what, src) for e in _no_slot(expand(s, s_src), s_src)]


def _load_binary(t: Templates, smap, ssrc: Src) -> None:
    if not isinstance(smap, dict):
        raise ssrc.error("binary must be a mapping")
    for name, (body, nsrc) in smap.items():
        cname = _class_name(t, name, nsrc, any_name=True)
        if not isinstance(body, dict) or set(body) != {"positive", "negative"}:
            raise nsrc.error(f"binary.{name} needs exactly 'positive' and 'negative' prompt lists")
        t.binary[cname] = {}
        for k in ("positive", "negative"):
            got = _eval_prompts(body[k][0], f"binary.{name}.{k}", body[k][1])
            t.eval_origins += [("binary", "", cname, k, p, src) for p, src in got]
            t.binary[cname][k] = list(dict.fromkeys(p for p, _ in got))


def _load_multiclass(t: Templates, smap, ssrc: Src) -> None:
    if not isinstance(smap, dict):
        raise ssrc.error("multiclass must be a mapping")
    for set_name, (body, nsrc) in smap.items():
        if not isinstance(body, dict):
            raise nsrc.error(f"multiclass.{set_name} must map classes to prompt lists")
        t.multiclass[set_name] = {}
        for c, (v, csrc2) in body.items():
            cname = _class_name(t, c, csrc2, any_name=True)
            got = _eval_prompts(v, f"multiclass.{set_name}.{c}", csrc2)
            t.eval_origins += [("multiclass", set_name, cname, "positive", p, src) for p, src in got]
            t.multiclass[set_name][cname] = list(dict.fromkeys(p for p, _ in got))


def _no_slot(items: list[str], src: Src) -> list[str]:
    for e in items:
        if _has_slot(e):
            raise src.error(f"an evaluation prompt cannot contain a {{}} or {{a}} slot: {e!r}")
    return items


def eval_prompt_sets(path: str | Path) -> dict:
    """Zero-shot prompt sets of an eval template file:
    ``{"binary": {Class: {"positive": [...], "negative": [...]}}, "multiclass": {Set: {Class: [...]}}}``."""
    t = load_templates(path)
    return {"binary": t.binary, "multiclass": t.multiclass}


def expansion_counts(t: Templates) -> dict[str, dict[str, int]]:
    return {
        c: {"expressions": len(ct.expressions), **{s: len(ct.sentences[s]) for s in STATES}}
        for c, ct in sorted(t.classes.items())
    }


# -- lint: sentences a radiologist would write ------------------------------------------------------
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


__all__ = [
    "TemplateError",
    "Templates",
    "load_templates",
    "eval_prompt_sets",
    "expand",
    "render",
    "KNOWN_CLASSES",
    "STATES",
    "expansion_counts",
    "Defect",
    "lint",
    "sentence_defects",
    "DEFECT_KINDS",
    "QUALIFIERS",
    "MAX_DEPTH",
    "MAX_EXPANSIONS",
    "MAX_SENTENCES",
    "MAX_TOTAL_SENTENCES",
    "MAX_YAML_NODES",
    "Src",
]
