"""cxrtrain: CLIP-style training and evaluation on cxrprep shards.

The Python API (docs/api.md) is importable from here and loads on first use::

    from cxrtrain import load_model, encode_images, encode_texts, zero_shot, ShardImages
"""

from cxrprep import __version__

_API = {"Preprocess", "ShardImages", "encode_images", "encode_texts", "load_model", "zero_shot"}


def __getattr__(name: str):
    if name in _API:
        from cxrtrain import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxrtrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)


__all__ = ["__version__", *sorted(_API)]
