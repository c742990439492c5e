"""cxrprep: chest X-ray datasets into Parquet study shards for vision-language pre-training."""

__version__ = "0.1.0"
