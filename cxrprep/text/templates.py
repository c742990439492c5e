"""The prompt template language (prompts/*.yaml): parse, validate, expand, render.

Grammar (a superset of the one in the CXR-CLIP appendix)::

    expr  := term (['+'] term)*        concatenation ('+' or juxtaposition), joined with one space
    term  := '[' alts ']' | text
    alts  := expr (',' expr)*          alternatives; '( )' or '()' is the empty option
    text  := any characters but [ ] , +   ('{}' is the slot for a class expression)

``[There is, ( )] + [no {}., no evidence of {}.]`` expands to ``There is no {}.``, ``There is no evidence
of {}.``, ``no {}.``, ``no evidence of {}.``; rendering fills the slot and capitalises the first letter.

A template file (YAML)::

    version: 1
    defaults:                      # sentence templates; each must contain exactly one {}
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

Errors (``TemplateError``) carry file, line and column: YAML syntax, unknown keys or classes,
unbalanced brackets, an expansion that is empty, a ``{}`` slot where it cannot be (in an expression, twice
in a sentence, missing from a default sentence), a file that is not UTF-8, ``version`` other than 1, and
the resource caps below (MAX_*): expansion is counted before it is materialised, YAML aliases are followed
with a node budget, nesting is bounded.
"""

from __future__ import annotations

import contextvars
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cxrprep.labels import ALIASES, CHEXPERT_LABELS, NIH_LABELS

STATES = ("positive", "negative", "uncertain")
#: every class a template file may name (canonical names; aliases map dataset spellings onto them)
KNOWN_CLASSES = tuple(sorted({ALIASES.get(c, c) for c in CHEXPERT_LABELS + NIH_LABELS}))
#: Resource caps (each error names the file, line and class): one expression may expand to at most
#: MAX_EXPANSIONS strings, counted before the strings are built; one class and state may have at most
#: MAX_SENTENCES sentences (sentence templates x expressions, also counted first) and a file at most
#: MAX_TOTAL_SENTENCES in all; YAML may nest MAX_DEPTH levels (brackets in an expression too) and
#: expand to MAX_YAML_NODES nodes once aliases are followed (a "billion laughs" file fails at once).
MAX_EXPANSIONS = 100_000
MAX_SENTENCES = 100_000
MAX_TOTAL_SENTENCES = 1_000_000
MAX_DEPTH = 32
MAX_YAML_NODES = 50_000
_WS = re.compile(r"\s+")
#: strings load_templates may still expand (None outside it); see MAX_TOTAL_SENTENCES
_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("template_budget", default=None)


class TemplateError(ValueError):
    """A template problem at FILE:LINE:COL."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        self.file, self.line, self.column, self.message = file, line, column, message
        super().__init__(f"{file}:{line}:{column}: {message}")


@dataclass(frozen=True)
class Src:
    """Where a string came from (1-based line and column of the YAML scalar)."""

    file: str
    line: int
    column: int

    def error(self, message: str, offset: int = 0) -> TemplateError:
        return TemplateError(self.file, self.line, self.column + offset, message)


# -- expression parsing/expansion ----------------------------------------------------------------
def expand(text: str, src: Src = Src("<string>", 1, 1)) -> list[str]:
    """All strings ``text`` expands to, in order, whitespace-normalised. Raises TemplateError."""
    # YAML quoting shifts the column by one for quoted scalars; we report the scalar's start column.
    pos = 0

    def parse_expr(depth: int) -> list[str]:
        nonlocal pos
        results = [""]
        while True:
            term = parse_term(depth)
            if len(results) * len(term) > MAX_EXPANSIONS:  # counted before the product is built
                raise src.error(
                    f"expands to more than {MAX_EXPANSIONS:,} strings ({len(results):,} x {len(term):,} at this point)",
                    pos,
                )
            results = [(a + " " + b) for a in results for b in term]
            skip_ws()
            if pos < len(text) and text[pos] == "+":
                pos += 1
                continue
            if pos < len(text) and text[pos] not in ("]," if depth > 0 else "]"):
                continue  # juxtaposition ("no [visible, definite] {}.") concatenates too
            return results

    def skip_ws() -> None:
        nonlocal pos
        while pos < len(text) and text[pos] in " \t\n":
            pos += 1

    def parse_term(depth: int) -> list[str]:
        nonlocal pos
        skip_ws()
        if pos < len(text) and text[pos] == "[":
            start = pos
            if depth >= MAX_DEPTH:
                raise src.error(f"brackets nested more than {MAX_DEPTH} deep", pos)
            pos += 1
            out: list[str] = []
            while True:
                skip_ws()
                if text.startswith("( )", pos) or text.startswith("()", pos):
                    pos += 3 if text.startswith("( )", pos) else 2
                    out.append("")
                else:
                    out.extend(parse_expr(depth + 1))
                if len(out) > MAX_EXPANSIONS:
                    raise src.error(f"expands to more than {MAX_EXPANSIONS:,} strings", start)
                skip_ws()
                if pos >= len(text):
                    raise src.error("unbalanced brackets: '[' is never closed", start)
                if text[pos] == ",":
                    pos += 1
                    continue
                if text[pos] == "]":
                    pos += 1
                    break
                raise src.error(f"unexpected {text[pos]!r}", pos)
            if not out:
                raise src.error("empty alternatives '[]'", start)
            return out
        start = pos
        stops = "[]+," if depth > 0 else "[]+"  # a top-level comma is ordinary text
        while pos < len(text) and text[pos] not in stops:
            pos += 1
        if pos < len(text) and text[pos] == "]" and depth == 0:
            raise src.error("unbalanced brackets: ']' without '['", pos)
        return [text[start:pos]]

    result = parse_expr(0)
    if pos != len(text):
        raise src.error(f"unexpected {text[pos]!r}", pos)
    budget = _BUDGET.get()
    if budget is not None:  # inside load_templates: every expansion of the file counts against one cap
        budget[0] -= len(result)
        if budget[0] < 0:
            raise src.error(
                f"the expansions of this file pass the cap of {MAX_TOTAL_SENTENCES:,} strings "
                f"(here); use fewer alternatives"
            )
    out = []
    seen = set()
    for r in result:
        r = _WS.sub(" ", r).strip()
        r = re.sub(r"\s+([.,;:])", r"\1", r)  # "no {} ." -> "no {}."
        if r and r not in seen:
            seen.add(r)
            out.append(r)
    if not out:
        raise src.error("expands to nothing (every option is empty)")
    return out


def render(sentence: str, expression: str | None = None) -> str:
    """Fill the slot and capitalise the first letter (expressions keep their own case otherwise)."""
    s = sentence.replace("{}", expression) if expression is not None else sentence
    return s[:1].upper() + s[1:] if s else s


# -- YAML with positions --------------------------------------------------------------------------
def _to_python(node, file: str, budget: list[int] | None = None, depth: int = 0):
    """yaml node -> python, with strings wrapped as (str, Src). Aliases are followed, so the nodes visited
    are counted against MAX_YAML_NODES (a "billion laughs" file stops at once) and nesting against
    MAX_DEPTH (which also stops a recursive alias)."""
    budget = [MAX_YAML_NODES] if budget is None else budget
    budget[0] -= 1
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if budget[0] < 0:
        raise TemplateError(
            file,
            line,
            col,
            f"the YAML expands to more than {MAX_YAML_NODES:,} nodes once its "
            f"aliases (*name) are followed; is it an alias bomb?",
        )
    if depth > MAX_DEPTH:
        raise TemplateError(file, line, col, f"YAML nested more than {MAX_DEPTH} levels deep (or a recursive alias)")
    if isinstance(node, yaml.ScalarNode):
        src = Src(file, line, col)
        if node.tag.endswith(":int"):
            try:
                return int(node.value.replace("_", ""), 0), src
            except ValueError:  # YAML 1.1 sexagesimal (1:30) and friends: keep the text
                return node.value, src
        return node.value, src
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(n, file, budget, depth + 1) for n in node.value]
    if isinstance(node, yaml.MappingNode):
        out = {}
        for k, v in node.value:
            key = _to_python(k, file, budget, depth + 1)
            if not isinstance(key, tuple):
                raise TemplateError(
                    file, k.start_mark.line + 1, k.start_mark.column + 1, "a mapping key must be a plain string"
                )
            key, ksrc = key
            out[str(key)] = (_to_python(v, file, budget, depth + 1), ksrc)
        return out
    raise TemplateError(file, line, col, "unsupported YAML node")


def _yaml_error(file: str, e: yaml.YAMLError) -> TemplateError:
    mark = getattr(e, "problem_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    if isinstance(e, yaml.reader.ReaderError):  # a control character, a NUL byte...
        return TemplateError(file, 0, 0, f"YAML error: {e.reason} (character {e.character!r} at position {e.position})")
    return TemplateError(file, line, col, f"YAML error: {getattr(e, 'problem', None) or e}")


def _compose(text: str, file: str):
    """yaml.compose with bounded nesting: the event stream is scanned first (no recursion), so a deeply
    nested file is an error naming its line instead of a RecursionError."""
    depth = 0
    try:
        for ev in yaml.parse(text):
            if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise TemplateError(
                        file,
                        ev.start_mark.line + 1,
                        ev.start_mark.column + 1,
                        f"YAML nested more than {MAX_DEPTH} levels deep",
                    )
            elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
        return yaml.compose(text)
    except yaml.YAMLError as e:
        raise _yaml_error(file, e) from None
    except RecursionError:
        raise TemplateError(file, 0, 0, "YAML nested too deeply to parse") from None


def _read_text(path: Path, file: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TemplateError(file, 0, 0, f"cannot read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise TemplateError(
            file, line, col, f"not UTF-8 text (byte 0x{data[e.start]:02x}: {e.reason}); save the file as UTF-8"
        ) from None


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

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, ALIASES.get(name, name))

    def sentences(self, class_name: str, state: str) -> list[str]:
        """Rendered sentences of a class (dataset spelling accepted) for state positive|negative|uncertain."""
        c = self.classes.get(self.canonical(class_name))
        if c is None:
            raise KeyError(f"{self.path}: no templates for class {class_name!r}")
        return c.sentences[state]


def _strings(value, what: str, src: Src) -> list[tuple[str, Src]]:
    if isinstance(value, tuple):  # a single scalar
        value = [value]
    if not isinstance(value, list) or not value:
        raise src.error(f"{what} must be a non-empty list of strings")
    out = []
    for v in value:
        if not isinstance(v, tuple) or not isinstance(v[0], str):
            raise src.error(f"{what} must be a list of strings")
        out.append(v)
    return out


def _check_slots(s: str, src: Src, required: bool) -> None:
    n = s.count("{}")
    if n > 1:
        raise src.error(f"a sentence may contain one {{}} slot, found {n}: {s!r}")
    if required and n == 0:
        raise src.error(f"default sentence has no {{}} slot for the class expression: {s!r}")
    if re.search(r"\{[^}]+\}", s):
        raise src.error(f"only an empty {{}} slot is allowed: {s!r}")


def load_templates(path: str | Path) -> Templates:
    """Parse and validate a template file. Raises TemplateError (file:line:col: message)."""
    token = _BUDGET.set([MAX_TOTAL_SENTENCES])
    try:
        return _load_templates(path)
    finally:
        _BUDGET.reset(token)


def _load_templates(path: str | Path) -> Templates:
    from cxrprep.text.promptfiles import resolve_prompt_file

    try:
        path = resolve_prompt_file(path, "prompt file")  # "default" / "eval" (packaged) or a path
    except ValueError as e:
        raise TemplateError(str(path), 0, 0, str(e)) from None
    file = str(path)
    if path.is_dir():
        raise TemplateError(file, 0, 0, "is a folder, not a template file")
    text = _read_text(path, file)
    node = _compose(text, file)
    if node is None or not isinstance(node, yaml.MappingNode):
        raise TemplateError(file, 1, 1, "a template file is a YAML mapping (version, defaults, classes, ...)")
    doc = _to_python(node, file)
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
    allowed = {"version", "defaults", "classes", "aliases", "binary", "multiclass", "grids"}
    for k, (_, ksrc) in doc.items():
        if k not in allowed:
            raise ksrc.error(f"unknown key {k!r}; expected one of {sorted(allowed)}")
    t = Templates(path=file)
    if "aliases" in doc:
        amap, asrc = doc["aliases"]
        if not isinstance(amap, dict):
            raise asrc.error("aliases must map a dataset spelling to a class name")
        for k, (v, ksrc) in amap.items():
            if not isinstance(v, tuple) or v[0] not in KNOWN_CLASSES:
                raise (v[1] if isinstance(v, tuple) else ksrc).error(
                    f"alias {k!r} points to unknown class {v[0] if isinstance(v, tuple) else v!r}"
                )
            t.aliases[k] = v[0]

    def cls_name(name: str, src: Src, any_name: bool = False) -> str:
        c = t.aliases.get(name, ALIASES.get(name, name))
        if any_name:  # eval sections (binary/multiclass) may name any class an eval dataset defines
            if not name.strip() or any(ch in name for ch in "[]{}"):
                raise src.error(f"eval class name {name!r} must be non-empty, without brackets or braces")
            return c
        if c not in KNOWN_CLASSES:
            import difflib

            close = difflib.get_close_matches(c, KNOWN_CLASSES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise src.error(f"unknown class {name!r}{hint}; known: {', '.join(KNOWN_CLASSES)}")
        return c

    defaults: dict[str, list[tuple[str, Src]]] = {}
    if "defaults" in doc:
        dmap, dsrc = doc["defaults"]
        if not isinstance(dmap, dict):
            raise dsrc.error("defaults must map positive/negative/uncertain to lists of sentences")
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
    if "classes" in doc:
        cmap, csrc = doc["classes"]
        if not isinstance(cmap, dict):
            raise csrc.error("classes must be a mapping of class name -> {expressions, ...}")
        total = 0
        for name, (body, nsrc) in cmap.items():
            cname = cls_name(name, nsrc)
            if not isinstance(body, dict) or "expressions" not in body:
                raise nsrc.error(f"class {name!r} needs 'expressions'")
            for key, (_val, ksrc) in body.items():
                if key not in ("expressions", "qualified", "use_defaults") + STATES:
                    raise ksrc.error(
                        f"unknown key {key!r} in class {name!r}; expected expressions, qualified, "
                        f"use_defaults, {', '.join(STATES)}"
                    )
            use_defaults = True
            if "use_defaults" in body:
                val, vsrc = body["use_defaults"][0]
                if str(val).lower() not in ("true", "false"):
                    raise vsrc.error(f"use_defaults must be true or false, got {val!r}")
                use_defaults = str(val).lower() == "true"
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
            exprs, qual = lists["expressions"], lists["qualified"]
            sentences: dict[str, list[str]] = {}
            origins: dict[str, list[tuple[str, Src, Src | None]]] = {}
            for state in STATES:
                # negatives never qualify the finding: only the plain expressions are negated
                xs = exprs if state == "negative" else exprs + qual
                rendered: list[tuple[str, Src, Src | None]] = []
                if state in body:
                    for s, src in _strings(body[state][0], f"{name}.{state}", body[state][1]):
                        for e in expand(s, src):
                            _check_slots(e, src, required=False)
                            _cap(
                                len(rendered) + (len(xs) if "{}" in e else 1),
                                MAX_SENTENCES,
                                f"class {name!r} {state} sentences",
                                src,
                                f"{len(xs):,} expressions per sentence",
                            )
                            if "{}" in e:
                                rendered.extend((render(e, x), src, xsrc) for x, xsrc in xs)
                            else:
                                rendered.append((render(e), src, None))
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
            total += sum(len(v) for v in sentences.values())
            _cap(total, MAX_TOTAL_SENTENCES, "the sentences of all classes so far", nsrc, f"at class {name!r}")
            t.classes[cname] = ClassTemplates(
                cname,
                list(dict.fromkeys(e for e, _ in exprs)),
                sentences,
                list(dict.fromkeys(e for e, _ in qual)),
                origins,
            )
    for section in ("binary", "multiclass"):
        if section not in doc:
            continue
        smap, ssrc = doc[section]
        if not isinstance(smap, dict):
            raise ssrc.error(f"{section} must be a mapping")
        if section == "binary":
            for name, (body, nsrc) in smap.items():
                cname = cls_name(name, nsrc, any_name=True)
                if not isinstance(body, dict) or set(body) != {"positive", "negative"}:
                    raise nsrc.error(f"binary.{name} needs exactly 'positive' and 'negative' prompt lists")
                t.binary[cname] = {}
                for k in ("positive", "negative"):
                    got = [
                        (render(e), src)
                        for s, src in _strings(body[k][0], f"binary.{name}.{k}", body[k][1])
                        for e in _no_slot(expand(s, src), src)
                    ]
                    t.eval_origins += [("binary", "", cname, k, p, src) for p, src in got]
                    t.binary[cname][k] = list(dict.fromkeys(p for p, _ in got))
        else:
            for set_name, (body, nsrc) in smap.items():
                if not isinstance(body, dict):
                    raise nsrc.error(f"multiclass.{set_name} must map classes to prompt lists")
                t.multiclass[set_name] = {}
                for c, (v, csrc2) in body.items():
                    cname = cls_name(c, csrc2, any_name=True)
                    got = [
                        (render(e), src)
                        for s, src in _strings(v, f"multiclass.{set_name}.{c}", csrc2)
                        for e in _no_slot(expand(s, src), src)
                    ]
                    t.eval_origins += [("multiclass", set_name, cname, "positive", p, src) for p, src in got]
                    t.multiclass[set_name][cname] = list(dict.fromkeys(p for p, _ in got))
    if "grids" in doc:  # word-list grids (cxrprep/text/grids.py): verbatim prompts, duplicates kept as weight
        from cxrprep.text.grids import load_grids

        for set_name, classes in load_grids(doc["grids"], cls_name).items():
            t.multiclass.setdefault(set_name, {}).update(classes)
    return t


def _cap(n: int, limit: int, what: str, src: Src, detail: str = "") -> None:
    """Raise before materialising more than ``limit`` strings (``n`` is counted, not built)."""
    if n > limit:
        raise src.error(
            f"{what} would be {n:,} strings{f' ({detail})' if detail else ''}, more than the cap "
            f"of {limit:,}; split the class's templates or use fewer alternatives"
        )


def _no_slot(items: list[str], src: Src) -> list[str]:
    for e in items:
        if "{}" in e:
            raise src.error(f"an evaluation prompt cannot contain a {{}} slot: {e!r}")
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
]
