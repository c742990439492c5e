"""YAML of a template file with positions: every string comes back as (str, Src), aliases are followed with a
node budget and nesting is bounded, so every error names FILE:LINE:COL."""

from __future__ import annotations

from pathlib import Path

import yaml

from cxrprep.text.template_syntax import MAX_DEPTH, MAX_YAML_NODES, Src, TemplateError


def to_python(node, file: str, budget: list[int] | None = None, depth: int = 0):
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
        return [to_python(n, file, budget, depth + 1) for n in node.value]
    if isinstance(node, yaml.MappingNode):
        out = {}
        for k, v in node.value:
            key = to_python(k, file, budget, depth + 1)
            if not isinstance(key, tuple):
                raise TemplateError(
                    file, k.start_mark.line + 1, k.start_mark.column + 1, "a mapping key must be a plain string"
                )
            key, ksrc = key
            if str(key) in out:  # YAML keeps the last one silently: a class defined twice is a mistake
                raise TemplateError(
                    file,
                    ksrc.line,
                    ksrc.column,
                    f"{str(key)!r} is defined twice (line {out[str(key)][1].line} and line {ksrc.line}); remove one",
                )
            out[str(key)] = (to_python(v, file, budget, depth + 1), ksrc)
        return out
    raise TemplateError(file, line, col, "unsupported YAML node")


def _yaml_error(file: str, e: yaml.YAMLError) -> TemplateError:
    mark = getattr(e, "problem_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
    if isinstance(e, yaml.reader.ReaderError):  # a control character, a NUL byte...
        return TemplateError(file, 0, 0, f"YAML error: {e.reason} (character {e.character!r} at position {e.position})")
    return TemplateError(file, line, col, f"YAML error: {getattr(e, 'problem', None) or e}")


def compose(text: str, file: str):
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


def read_text(path: Path, file: str) -> str:
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


def string_items(items: list, what: str, src: Src) -> list[tuple[str, Src]]:
    """The ``(text, Src)`` items of a parsed YAML list; an item that is not a string is an error naming
    ``what`` at ``src``."""
    for v in items:
        if not isinstance(v, tuple) or not isinstance(v[0], str):
            raise src.error(f"{what} must be a list of strings")
    return list(items)
