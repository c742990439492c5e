"""``cxrtrain run --print-config``: the resolved config as YAML with each key's help as a comment above it.

The help of a TrainConfig / LogConfig key is the text of its ``opt(...)`` declaration in cxrtrain/config.py;
a ``model.*`` key's help is ``MODEL_HELP`` there. Comments do not change the YAML: the output still loads back
as ``--config`` to the same config."""

from __future__ import annotations

from dataclasses import fields

import yaml


def _one(key: str, value, indent: str) -> list[str]:
    flow = None if isinstance(value, (list, dict)) else False  # lists inline, a scalar as `key: value`
    text = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=flow).rstrip("\n")
    return [indent + line for line in text.splitlines()]


def _helps(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}


def commented_yaml(d: dict, train_cls, log_cls, model_help: dict[str, str]) -> str:
    """``d``: the plain dict of a TrainConfig (nested ``log`` and ``model``) -> YAML text with help comments."""
    helps = _helps(train_cls)
    nested = {"log": _helps(log_cls), "model": model_help}
    lines: list[str] = []
    for key, value in d.items():
        if key in nested and isinstance(value, dict):
            lines.append(
                f"# {key}.*: " + ("optional loggers" if key == "log" else "the two towers and their joint space")
            )
            lines.append(f"{key}:")
            for k2, v2 in value.items():
                if nested[key].get(k2):
                    lines.append(f"  # {nested[key][k2]}")
                lines += _one(k2, v2, "  ")
            continue
        if helps.get(key):
            lines.append(f"# {helps[key]}")
        lines += _one(key, value, "")
    return "\n".join(lines) + "\n"
