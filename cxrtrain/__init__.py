"""cxrtrain: CLIP-style training and evaluation on cxrprep shards."""

from cxrprep import __version__

__all__ = ["__version__"]
