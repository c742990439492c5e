"""Rewriting a finished dataset folder with ``findings_bt`` / ``impression_bt`` filled (``cxrprep augment``).

The new parts go to a hidden sibling folder and are swapped in atomically (cxrprep/shards/swap.py), so a kill
at any moment leaves either the old complete dataset or the new complete one."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from cxrprep.shards import ShardDataset, ShardWriter
from cxrprep.shards.swap import carried_sections, recover, staging_dir, swap_in
from cxrprep.text.translate.backend import AugmentConfig
from cxrprep.text.translate.pipeline import TranslateStats, Translator, make_translator

SECTIONS = (("findings_sentences", "findings_bt"), ("impression_sentences", "impression_bt"))
# counts the writer keeps itself; the other counts of the old manifest are carried over
_WRITER_COUNTS = {"inputs_seen", "rows_written", "images_written", "skipped", "failed", "images_failed"}


def _join(bt: dict[tuple[str, int], str], sentences: Sequence[str] | None, variants: int) -> list[str]:
    sents = [s for s in (sentences or []) if s and s.strip()]
    if not sents:
        return []
    return [" ".join(bt[(s, v)] for s in sents) for v in range(variants)]


@dataclass
class AugmentResult:
    manifest: dict
    stats: TranslateStats
    out_dir: Path


def _sentence_occurrences(ds: ShardDataset) -> list[str]:
    """Every non-blank sentence of the findings and impression sentence columns, in dataset order."""
    sent_cols = [c for c, _ in SECTIONS]
    occurrences: list[str] = []
    for b in ds.iter_batches(sent_cols):
        for c in sent_cols:
            for lst in b.column(c).to_pylist():
                occurrences.extend(s for s in (lst or []) if s and s.strip())
    return occurrences


def _translate_all(
    occurrences: list[str], cfg: AugmentConfig, translator: Translator | None, progress: Callable | None
) -> tuple[dict[tuple[str, int], str], TranslateStats, Translator]:
    stats = TranslateStats(sentences=len(occurrences), unique=len(set(occurrences)))
    own = translator is None
    translator = translator or make_translator(cfg)
    try:
        bt = translator.translate(occurrences, cfg.variants, stats, progress)
    finally:
        if own:
            translator.cache.close()
    return bt, stats, translator


def _augment_section(cfg: AugmentConfig, translator: Translator, stats: TranslateStats) -> dict:
    """The ``augment`` manifest section: models, backend, decoding and the counts of this run."""
    return dict(
        backtranslate=cfg.backtranslate,
        models=dict(forward=translator.forward.model.key, backward=translator.backward.model.key),
        backend=translator.forward.name,
        precision=translator.forward.precision,
        decoding=translator.decoding.key(),
        variants=cfg.variants,
        batch_size=translator.batch_size,
        batch_tokens=translator.batch_tokens,
        counts=dict(
            sentences=stats.sentences,
            unique_sentences=stats.unique,
            translated=stats.translated,
            cache_hits=stats.cache_hits,
            truncated=stats.truncated,
            number_fallback=stats.number_fallback,
            deid_fallback=stats.deid_fallback,
        ),
    )


def _write_rows(w: ShardWriter, ds: ShardDataset, bt: dict, variants: int, progress: Callable | None) -> None:
    groups = ds.row_groups()
    bar = progress(groups, total=len(groups), desc="rewriting parts", unit="group") if progress else groups
    for batch in (b for g in bar for b in ds.iter_batches(row_groups=[g])):
        for row in batch.to_pylist():
            for src, dst in SECTIONS:
                row[dst] = _join(bt, row[src], variants)
            w.write(row)


def _copy_rejects(w: ShardWriter, ds: ShardDataset, dataset_dir: Path) -> None:
    if not (dataset_dir / ds.manifest["rejects"]["file"]).exists():
        return
    for r in ds.rejects():
        level = r.get("level") or "study"
        w.reject(r["source"], r["study_id"], stage=r["stage"], kind=r["kind"], reason=r["reason"], level=level)


def _carry_counts(w: ShardWriter, old_counts: dict, stats: TranslateStats) -> None:
    w.counts.inputs_seen = old_counts["inputs_seen"]
    w.counts.extra.update({k: v for k, v in old_counts.items() if k not in _WRITER_COUNTS and not k.startswith("bt_")})
    w.counts.extra.update(
        bt_sentences=stats.sentences,
        bt_unique=stats.unique,
        bt_truncated=stats.truncated,
        bt_number_fallback=stats.number_fallback,
        bt_deid_fallback=stats.deid_fallback,
    )


def _rewrite(
    ds: ShardDataset, dataset_dir: Path, tmp: Path, bt: dict, augment: dict, stats: TranslateStats, cfg, progress
) -> dict:
    """Write the new parts into ``tmp`` (removed again on any failure); return the new manifest."""
    old = ds.manifest
    w = ShardWriter(
        tmp,
        ds.name,
        config=old.get("config") or {},
        label_names=ds.label_names,
        image_settings=old.get("image_settings"),
        command=old.get("command", ""),
        extra_manifest={**carried_sections(old), "augment": augment},
    )
    try:
        _write_rows(w, ds, bt, cfg.variants, progress)
        _copy_rejects(w, ds, dataset_dir)
        _carry_counts(w, old["counts"], stats)
        return w.close()
    except BaseException:
        w.abort()
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run_augment(
    dataset_dir: Path, cfg: AugmentConfig, translator: Translator | None = None, progress: Callable | None = None
) -> AugmentResult:
    """Fill ``findings_bt`` / ``impression_bt`` of every row of a finished dataset folder.

    Reads with ShardDataset, writes new parts with ShardWriter into a hidden sibling folder (same name,
    label names, image settings, config, plus an ``augment`` manifest section) and swaps it into place.
    ``translator`` defaults to ``make_translator(cfg)``. Raises ShardSchemaError for a bad dataset
    folder, ModelNotAvailable for a missing model."""
    dataset_dir = Path(dataset_dir)
    recover(dataset_dir)
    ds = ShardDataset(dataset_dir)
    bt, stats, translator = _translate_all(_sentence_occurrences(ds), cfg, translator, progress)
    augment = _augment_section(cfg, translator, stats)
    tmp = staging_dir(dataset_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    manifest = _rewrite(ds, dataset_dir, tmp, bt, augment, stats, cfg, progress)
    swap_in(tmp / ds.name, dataset_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    return AugmentResult(manifest, stats, dataset_dir)


def summary(res: AugmentResult) -> list[str]:
    """Lines printed by the command after the shard summary."""
    s = res.stats
    return [
        f"  back-translation: {s.sentences:,} sentences, {s.unique:,} distinct (de-dup ratio "
        f"{s.dedup_ratio:.2f}x); translated {s.translated:,}, cache hits {s.cache_hits:,}",
        f"  truncated {s.truncated:,}, kept source for lost number {s.number_fallback:,}, "
        f"for lost ___ {s.deid_fallback:,}",
    ]
