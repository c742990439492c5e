"""The dataset card: ``README.md`` in every finished dataset folder, the way hub datasets describe
themselves. Its YAML header gives Hugging Face ``datasets`` one split per data file pattern (so
``load_dataset(folder)`` returns real splits); the body gives counts, label names, the command that
built the folder, the manifest's sha256 and how to open the folder with other tools."""

from __future__ import annotations

import hashlib
import json

from cxrprep.schema import DATA_DIR, SCHEMA_VERSION, SPLITS
from cxrprep.shards.sources import card_section, hub_licence


def split_order(splits) -> list[str]:
    """train, validate, test first, then any other split alphabetically."""
    return sorted(set(splits), key=lambda s: (SPLITS.index(s) if s in SPLITS else len(SPLITS), s))


def _q(s: str) -> str:
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted scalar


def card_text(manifest: dict, manifest_bytes: bytes) -> str:
    """README.md for a dataset folder whose manifest.json will hold ``manifest_bytes``."""
    name = manifest["dataset"]
    rows = manifest.get("splits") or {}
    splits = split_order(rows)
    c = manifest["counts"]
    licence, link = hub_licence(name)
    yaml = [
        "---",
        f"pretty_name: {_q(name + ' (cxrkit study shards)')}",
        f"license: {licence}",
        *([f"license_link: {_q(link)}"] if link else []),
        "tags:",
        "- medical",
        "- chest-x-ray",
        "- cxrkit",
        "configs:",
        "- config_name: default",
        "  data_files:",
    ]
    for s in splits:
        yaml += [f"  - split: {s}", f"    path: {_q(f'{DATA_DIR}/{s}-*.parquet')}"]
    # no dataset_info.splits: datasets wants num_bytes (the decoded Arrow size) beside num_examples and
    # warns without it; the counts are in the body
    yaml += ["---", ""]
    rejects = c["skipped"] + c["failed"]
    body = [
        f"# {name}",
        "",
        f"Chest X-ray study shards written by cxrkit {manifest.get('cxrkit_version', '')} "
        f"(shard schema v{SCHEMA_VERSION}): one row per study with its report text or prompt reports, "
        "labels and images.",
        "",
        "| split | studies |",
        "|---|---:|",
        *[f"| {s} | {rows[s]:,} |" for s in splits],
        "",
        f"Inputs seen {c['inputs_seen']:,} = rows written {c['rows_written']:,} + rejects {rejects:,} "
        f"(skipped {c['skipped']:,}, failed {c['failed']:,}); images written {c['images_written']:,}, "
        f"image failures {c['images_failed']:,}. Every reject is a line of `{manifest['rejects']['file']}` "
        "with its reason.",
        "",
    ]
    names = manifest.get("label_names") or []
    if names:
        body += [
            "Labels (`labels.<name>`: 1 positive, 0 negative, -1 uncertain, null not mentioned): "
            + ", ".join(f"`{n}`" for n in names)
            + ".",
            "",
        ]
    body += card_section(name)
    built = manifest.get("invocation") or manifest.get("command") or ""
    body += ["Built by:", "", "```", built, "```", ""]
    if manifest.get("merged_from"):
        body += [f"in {len(manifest['merged_from'])} `--part` pieces joined by `cxrprep merge`.", ""]
    body += [
        f"`manifest.json` sha256: `{hashlib.sha256(manifest_bytes).hexdigest()}` (the resolved options, "
        "counts and every data file's sha256).",
        "",
        "Open it with any Parquet reader:",
        "",
        "```python",
        "datasets.load_dataset(FOLDER)                       # splits; images decode as PIL images",
        "duckdb.sql(\"SELECT * FROM read_parquet('FOLDER/**/*.parquet')\")",
        "pyarrow.dataset.dataset('FOLDER/data')",
        "polars.scan_parquet('FOLDER/data')",
        "```",
        "",
    ]
    return "\n".join(yaml + body)
