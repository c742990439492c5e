"""`cxrprep prompts`: CheXpert / ChestX-ray14 labels into prompt-report shards."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors, finish, make_config, progress
from cxrprep.cli.options import (
    CLAHE,
    CLAHE_CLIP,
    CLAHE_TILES,
    FORMAT,
    MAX_PIXELS,
    QUALITY,
    SIZE,
    WORKERS,
    image_settings,
    max_failed_option,
    part_option,
    prompts_option,
    run_options,
)

_TEMPLATES = prompts_option("default", "Template file: a path, or a packaged name (default, eval)", "--templates")
_IMAGE_ROOT = typer.Option(
    None,
    "--image-root",
    help="Folder the CSV's image paths are relative to (default: the CSV's folder); every path must resolve inside it",
)
_ALLOW_OUTSIDE_ROOT = typer.Option(
    False, "--allow-outside-root", help="Read image paths that resolve outside --image-root (default: they are rejects)"
)
_SPLIT_LISTS = typer.Option(
    None,
    "--split-lists",
    help="ChestX-ray14: folder with train_val_list.txt and test_list.txt (default: beside the CSV)",
)
_EXCLUDE_PATIENTS = typer.Option(
    None, "--exclude-patients", exists=True, help="Patient ids to keep out (e.g. shards/chexpert-5x200/patients.txt)"
)


def prompts(
    # fmt: off
    labels_csv: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="CheXpert train.csv/valid.csv or ChestX-ray14 Data_Entry_2017*.csv"
    ),
    templates: str = prompts_option(
        "default", "Template file: a path, or a packaged name (default, eval)", "--templates"
    ),
    out: Path = typer.Option(Path("shards"), "--out", help="Shard root; writes OUT/chexpert/ or OUT/chestx-ray14/"),
    dataset: str = typer.Option(None, "--dataset", help="chexpert or chestx-ray14 (default: detected from the header)"),
    image_root: Path = _IMAGE_ROOT,
    allow_outside_root: bool = _ALLOW_OUTSIDE_ROOT,
    images: bool = typer.Option(True, "--images/--no-images", help="Process images (--no-images: text-only rows)"),
    variants: int = typer.Option(8, "--variants", help="Prompt reports per study"),
    negatives: int = typer.Option(3, "--negatives", help="ChestX-ray14: absent classes sampled as negative sentences"),
    uncertain: str = typer.Option(
        "uncertain", "--uncertain", help="CheXpert -1 labels: uncertain | positive | negative | drop"
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-study randomness"),
    split_lists: Path = _SPLIT_LISTS,
    exclude_patients: Path = _EXCLUDE_PATIENTS,
    size: int = SIZE,
    clahe: bool = CLAHE,
    clahe_clip: float = CLAHE_CLIP,
    clahe_tiles: int = CLAHE_TILES,
    fmt: str = FORMAT,
    quality: int = QUALITY,
    max_image_pixels: int = MAX_PIXELS,
    workers: int = WORKERS,
    part: str = part_option("patients"),
    max_failed: str = max_failed_option("studies"),
    # fmt: on
) -> None:
    """Render K radiologist-style prompt reports per study from CheXpert or ChestX-ray14 labels.

    Example: cxrprep prompts CheXpert-v1.0/train.csv --image-root /data --templates prompts/default.yaml --out
    shards/
    """
    from cxrprep.datasets.prompts import PromptsConfig, run_prompts
    from cxrprep.shards import summary_lines

    mf, part_t, nworkers = run_options(max_failed, part, workers)
    settings = image_settings(size, clahe, clahe_clip, clahe_tiles, fmt, quality, max_image_pixels)
    cfg = make_config(
        PromptsConfig,
        templates=templates,  # a PromptFile: the name as given, resolved once
        dataset=dataset,
        image_root=str(image_root) if image_root else None,
        allow_outside_root=allow_outside_root,
        images=images,
        variants=variants,
        negatives=negatives,
        uncertain=uncertain,
        seed=seed,
        split_lists=str(split_lists) if split_lists else None,
        exclude_patients=str(exclude_patients) if exclude_patients else None,
        workers=nworkers,
        part=part_t,
        image_settings=settings,
    )
    with errors({ValueError: 2}):
        m = run_prompts(labels_csv, out, cfg, progress=lambda it, n: progress(it, n, "study chunks", "chunk"))
    c = m["counts"]
    finish(summary_lines(m, out / m["dataset"]), c["failed"], c["inputs_seen"], mf, dataset_dir=out / m["dataset"])


def register(app: typer.Typer) -> None:
    app.command()(prompts)
