"""The template expression language: ``expand`` an expression into its strings, ``render`` a sentence, the
resource caps (MAX_*), and TemplateError / Src (file, line, column of a problem). The grammar is in
cxrprep/text/templates.py."""

from __future__ import annotations

import contextlib
import contextvars
import re
from dataclasses import dataclass

from cxrprep.text.template_articles import with_article

STATES = ("positive", "negative", "uncertain")
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
#: [strings load_templates may still expand, the cap] (None outside it); see MAX_TOTAL_SENTENCES
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


@contextlib.contextmanager
def file_budget(limit: int = MAX_TOTAL_SENTENCES):
    """Within the block, every expansion counts against one cap of ``limit`` strings (one file)."""
    token = _BUDGET.set([limit, limit])
    try:
        yield
    finally:
        _BUDGET.reset(token)


# -- expression parsing/expansion ----------------------------------------------------------------
class _Parser:
    """Recursive-descent parser of one expression; ``pos`` is the offset reached in ``text``."""

    def __init__(self, text: str, src: Src) -> None:
        self.text, self.src, self.pos = text, src, 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\n":
            self.pos += 1

    def expr(self, depth: int) -> list[str]:
        text, src = self.text, self.src
        results = [""]
        while True:
            term = self.term(depth)
            if len(results) * len(term) > MAX_EXPANSIONS:  # counted before the product is built
                raise src.error(
                    f"expands to more than {MAX_EXPANSIONS:,} strings ({len(results):,} x {len(term):,} at this point)",
                    self.pos,
                )
            results = [(a + " " + b) for a in results for b in term]
            self.skip_ws()
            if self.pos < len(text) and text[self.pos] == "+":
                self.pos += 1
                continue
            if self.pos < len(text) and text[self.pos] not in ("]," if depth > 0 else "]"):
                continue  # juxtaposition ("no [visible, definite] {}.") concatenates too
            return results

    def alternatives(self, depth: int) -> list[str]:
        """``[a, b, ( )]`` starting at ``pos`` (on the ``[``)."""
        text, src = self.text, self.src
        start = self.pos
        if depth >= MAX_DEPTH:
            raise src.error(f"brackets nested more than {MAX_DEPTH} deep", self.pos)
        self.pos += 1
        out: list[str] = []
        while True:
            self.skip_ws()
            if text.startswith("( )", self.pos) or text.startswith("()", self.pos):
                self.pos += 3 if text.startswith("( )", self.pos) else 2
                out.append("")
            else:
                out.extend(self.expr(depth + 1))
            if len(out) > MAX_EXPANSIONS:
                raise src.error(f"expands to more than {MAX_EXPANSIONS:,} strings", start)
            self.skip_ws()
            if self.pos >= len(text):
                raise src.error("unbalanced brackets: '[' is never closed", start)
            if text[self.pos] == ",":
                self.pos += 1
                continue
            if text[self.pos] == "]":
                self.pos += 1
                break
            raise src.error(f"unexpected {text[self.pos]!r}", self.pos)
        if not out:
            raise src.error("empty alternatives '[]'", start)
        return out

    def term(self, depth: int) -> list[str]:
        text = self.text
        self.skip_ws()
        if self.pos < len(text) and text[self.pos] == "[":
            return self.alternatives(depth)
        start = self.pos
        stops = "[]+," if depth > 0 else "[]+"  # a top-level comma is ordinary text
        while self.pos < len(text) and text[self.pos] not in stops:
            self.pos += 1
        if self.pos < len(text) and text[self.pos] == "]" and depth == 0:
            raise self.src.error("unbalanced brackets: ']' without '['", self.pos)
        return [text[start : self.pos]]


def expand(text: str, src: Src = Src("<string>", 1, 1)) -> list[str]:
    """All strings ``text`` expands to, in order, whitespace-normalised. Raises TemplateError."""
    # YAML quoting shifts the column by one for quoted scalars; we report the scalar's start column.
    parser = _Parser(text, src)
    result = parser.expr(0)
    if parser.pos != len(text):
        raise src.error(f"unexpected {text[parser.pos]!r}", parser.pos)
    budget = _BUDGET.get()
    if budget is not None:  # inside load_templates: every expansion of the file counts against one cap
        budget[0] -= len(result)
        if budget[0] < 0:
            raise src.error(
                f"the expansions of this file pass the cap of {budget[1]:,} strings (here); use fewer alternatives"
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
    """Fill the slot and capitalise the first letter (expressions keep their own case otherwise). The slot
    ``{a}`` puts "a"/"an" before an expression whose head is a countable singular noun ("There is {a}." ->
    "There is a nodule.", "There is atelectasis."; see cxrprep/text/template_articles.py)."""
    if expression is not None:
        s = sentence.replace("{a}", with_article(expression)).replace("{}", expression)
    else:
        s = sentence
    return s[:1].upper() + s[1:] if s else s


def cap(n: int, limit: int, what: str, src: Src, detail: str = "") -> None:
    """Raise before materialising more than ``limit`` strings (``n`` is counted, not built)."""
    if n > limit:
        raise src.error(
            f"{what} would be {n:,} strings{f' ({detail})' if detail else ''}, more than the cap "
            f"of {limit:,}; split the class's templates or use fewer alternatives"
        )
