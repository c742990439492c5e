"""Lower bounds of a dataset command's config values, checked when the config is made."""

from __future__ import annotations


def check_at_least(cfg, **minimum: int) -> None:
    """A ValueError naming the option (``chunk_size`` -> ``--chunk-size``) and the value of the first field of
    ``cfg`` below its ``minimum``; the fields are checked in the order given."""
    for name, low in minimum.items():
        value = getattr(cfg, name)
        if value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
