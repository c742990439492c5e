"""YAML for configs, bounded: aliases are followed against a node budget (a "billion laughs" file of a few
hundred bytes is refused at once instead of expanding to gigabytes), nesting is bounded, and a key given
twice in one mapping is refused naming both lines (PyYAML keeps the last one without a word)."""

from __future__ import annotations

import yaml

MAX_NODES = 100_000  # far above any real config (the resolved config has ~80 values)
MAX_DEPTH = 32


class YamlRefused(ValueError):
    """The file is valid YAML but is refused (alias bomb, too deep, duplicate key)."""


def _compose(text: str, file: str):
    depth = 0
    for ev in yaml.parse(text):  # scanned first, without recursion: a deep file is an error, not a RecursionError
        if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise YamlRefused(f"{file}: line {ev.start_mark.line + 1}: YAML nested more than {MAX_DEPTH} levels")
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
    return yaml.compose(text, Loader=yaml.SafeLoader)


class _Walk:
    def __init__(self, file: str) -> None:
        self.file = file
        self.budget = MAX_NODES
        self.scalars = yaml.SafeLoader("")

    def node(self, node, depth: int):
        self.budget -= 1
        if self.budget < 0:
            raise YamlRefused(
                f"{self.file}: line {node.start_mark.line + 1}: the YAML expands to more than {MAX_NODES:,} values "
                f"once its aliases (*name) are followed; is it an alias bomb?"
            )
        if depth > MAX_DEPTH:
            raise YamlRefused(
                f"{self.file}: line {node.start_mark.line + 1}: YAML nested more than {MAX_DEPTH} levels "
                f"(or a recursive alias)"
            )
        if isinstance(node, yaml.SequenceNode):
            return [self.node(n, depth + 1) for n in node.value]
        if isinstance(node, yaml.MappingNode):
            return self.mapping(node, depth)
        return self.scalars.construct_object(node, deep=True)

    def mapping(self, node, depth: int) -> dict:
        out: dict = {}
        lines: dict = {}
        for k, v in node.value:
            if k.tag.endswith(":merge"):  # <<: *base
                merged = self.node(v, depth + 1)
                for m in merged if isinstance(merged, list) else [merged]:
                    if isinstance(m, dict):
                        out.update({a: b for a, b in m.items() if a not in out})
                continue
            key = self.node(k, depth + 1)
            try:
                hash(key)
            except TypeError:
                raise YamlRefused(f"{self.file}: line {k.start_mark.line + 1}: a mapping key must be a plain value")
            line = k.start_mark.line + 1
            if key in lines:
                raise YamlRefused(
                    f"{self.file}: key {key!r} is given twice (line {lines[key]} and line {line}); "
                    f"YAML would silently keep the last one: remove one"
                )
            lines[key] = line
            out[key] = self.node(v, depth + 1)
        return out


def load_yaml(text: str, file: str = "<yaml>"):
    """``yaml.safe_load`` with the bounds above. Raises YamlRefused (a ValueError) or yaml.YAMLError."""
    try:
        root = _compose(text, file)
    except RecursionError:
        raise YamlRefused(f"{file}: YAML nested too deeply to parse") from None
    return None if root is None else _Walk(file).node(root, 0)
