"""Where a key of a YAML train config sits (file and line), so a config error can name both."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

_KEY = re.compile(r"^(?:unknown config key '([^']+)'|([A-Za-z_][\w.]*)=)")


def key_lines(text: str) -> dict[str, int]:
    """{key: 1-based line} for the top-level keys and the keys one mapping down (``model.image_size``)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}
    if not isinstance(node, yaml.MappingNode):
        return out
    for k, v in node.value:
        name = str(k.value)
        out[name] = k.start_mark.line + 1
        if isinstance(v, yaml.MappingNode):
            for k2, _ in v.value:
                out[f"{name}.{k2.value}"] = k2.start_mark.line + 1
    return out


def locate(message: str, path: str | Path, text: str) -> str:
    """``message`` prefixed with ``PATH, line N:`` when it names a key that the file sets, else unchanged."""
    m = _KEY.match(message)
    if not m:
        return message
    key = m.group(1) or m.group(2)
    line = key_lines(text).get(key)
    return f"{path}, line {line}: {message}" if line else message


def yaml_error(path: str | Path, e: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: file, line, column and the problem."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{path}{where}: not valid YAML ({problem})"
