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


def __getattr__(name: str):
    if name in _API:
        from cxrprep import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxrprep' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _API)


__all__ = ["__version__", *sorted(_API)]
