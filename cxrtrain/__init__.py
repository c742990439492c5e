"""cxrtrain: CLIP-style training and evaluation on cxrprep shards.

The Python API (docs/api.md) is importable from here and loads on first use::

    from cxrtrain import load_model, encode_images, encode_texts, zero_shot, ShardImages
"""

from cxrprep import __version__, lazy_exports

_API = {"Preprocess", "ShardImages", "encode_images", "encode_texts", "load_model", "zero_shot"}


__getattr__, __dir__ = lazy_exports(__name__, "cxrtrain.api", _API)

__all__ = ["__version__", *sorted(_API)]
