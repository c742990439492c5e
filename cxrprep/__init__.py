"""cxrprep: chest X-ray datasets into Parquet study shards for vision-language pre-training.

The Python API (docs/api.md) is importable from here and loads on first use::

    from cxrprep import parse_report, split_sentences, prompts_from_labels, read_image, open_shards
"""

__version__ = "0.1.0"

_API = {
    "Report",
    "ShardDataset",
    "Templates",
    "load_templates",
    "open_shards",
    "parse_report",
    "prompts_from_labels",
    "read_image",
    "split_sentences",
}


def lazy_exports(package: str, module: str, names: set[str]):
    """``(__getattr__, __dir__)`` for ``package``: the attributes in ``names`` load from ``module`` on first use
    (so importing the package stays cheap); cxrtrain's package uses it too."""

    def __getattr__(name: str):
        if name in names:
            from importlib import import_module

            return getattr(import_module(module), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        from sys import modules

        return sorted(set(vars(modules[package])) | names)

    return __getattr__, __dir__


__getattr__, __dir__ = lazy_exports(__name__, "cxrprep.api", _API)

__all__ = ["__version__", *sorted(_API)]
