"""``cxrprep merge``: join the outputs of ``--part i/N`` pieces into one finished dataset folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cxrprep.schema import CARD, DATA_DIR, DATA_FILE_RE, MANIFEST, REJECTS, ShardSchemaError
from cxrprep.shards.card import card_text, split_order
from cxrprep.shards.files import commit_files, manifest_bytes, read_rejects, rejects_bytes, sha256_file
from cxrprep.shards.lock import DatasetLock


def merge_parts(dataset_dir: str | Path) -> dict:
    """Join the manifests and rejects of ``--part i/N`` runs into manifest.json + rejects.jsonl +
    README.md (the data files stay where the pieces put them).

    Holds the folder's lock exclusively (DatasetBusy, naming the pieces, while any piece still runs).
    Checks that all N pieces are present, that they ran with the same options, and that every data file
    exists with its recorded sha256. Returns the merged manifest."""
    d = Path(dataset_dir)
    with DatasetLock(d, action="merge"):
        return _merge(d)


def _merge(d: Path) -> dict:
    found = sorted(d.glob("manifest-*of*.json"))
    if not found:
        raise ShardSchemaError(f"{d}: no manifest-iofN.json files to merge (did the --part runs finish?)")
    mans = []
    for p in found:
        try:
            mans.append(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise ShardSchemaError(f"{p}: not valid JSON ({e})") from e
    totals = {m["part"][1] for m in mans}
    if len(totals) != 1:
        raise ShardSchemaError(
            f"{d}: part manifests disagree on N: {sorted(totals)}; remove the stale "
            f"manifest-*of*.json files of the other N"
        )
    n = totals.pop()
    have = sorted(m["part"][0] for m in mans)
    missing = sorted(set(range(n)) - set(have))
    if missing:
        raise ShardSchemaError(f"{d}: parts {missing} of {n} are missing; run them with --part i/{n}")
    mans.sort(key=lambda m: m["part"][0])
    ref = {k: mans[0].get(k) for k in ("dataset", "label_names", "image_settings", "command", "schema_version")}
    cfg0 = {k: v for k, v in mans[0]["config"].items() if k != "part"}
    for m in mans[1:]:
        cfg = {k: v for k, v in m["config"].items() if k != "part"}
        if cfg != cfg0 or any(m.get(k) != v for k, v in ref.items()):
            raise ShardSchemaError(f"{d}: part {m['part'][0]} ran with different options than part 0")
    parts, counts, rejects, splits = [], {}, [], {}
    for m in mans:
        for p in m["parts"]:
            f = d / p["file"]
            if not f.exists() or sha256_file(f) != p["sha256"]:
                raise ShardSchemaError(f"{f}: missing or changed since part {m['part'][0]} wrote it")
            parts.append(p)
        for k, v in m["counts"].items():
            counts[k] = counts.get(k, 0) + v
        for k, v in (m.get("splits") or {}).items():
            splits[k] = splits.get(k, 0) + v
        rejects.extend(read_rejects(d / m["rejects"]["file"]))
    listed = {p["file"] for p in parts}
    for f in sorted((d / DATA_DIR).glob("*.parquet")):  # left by an earlier run with another N
        if re.fullmatch(DATA_FILE_RE, f.name) and f"{DATA_DIR}/{f.name}" not in listed:
            f.unlink()
    merged = dict(mans[0])
    merged.update(
        part=None,
        merged_from=[p.name for p in found],
        counts=counts,
        splits={k: splits[k] for k in split_order(splits)},
        parts=parts,
        rejects=dict(file=REJECTS, rows=len(rejects)),
    )
    merged["config"] = dict(cfg0, part=None)
    mbytes = manifest_bytes(merged)
    # all three or none: written to temporary names, then renamed with Ctrl-C held back (the manifest last)
    files = [
        (d / REJECTS, rejects_bytes(rejects)),
        (d / CARD, card_text(merged, mbytes).encode()),
        (d / MANIFEST, mbytes),
    ]
    commit_files(files, remove_first=d / MANIFEST)
    return merged
