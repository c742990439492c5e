"""`cxrprep prompts`: CheXpert / ChestX-ray14 labels into prompt-report shards."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import errors, finish_dataset, path_str, progress
from cxrprep.cli.options import (
    allow_outside_root_option,
    dataset_config,
    image_options,
    image_root_option,
    prompts_option,
    run_block,
)

_TEMPLATES = prompts_option("default", "Template file: a path, or a packaged name (default, eval)", "--templates")
_IMAGE_ROOT = image_root_option(
    "Folder the CSV's image paths are relative to (default: the CSV's folder); every path must resolve inside it"
)
_ALLOW_OUTSIDE_ROOT = allow_outside_root_option("image paths")
_SPLIT_LISTS = typer.Option(
    None,
    "--split-lists",
    help="ChestX-ray14: folder with train_val_list.txt and test_list.txt (default: beside the CSV)",
)
_EXCLUDE_PATIENTS = typer.Option(
    None, "--exclude-patients", exists=True, help="Patient ids to keep out (e.g. shards/chexpert-5x200/patients.txt)"
)


@image_options
@run_block("patients", "studies")
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
    qualifiers: str = typer.Option(
        None,
        "--qualifiers",
        help="Invent severity/side the labels lack? none | sample (one draw per study); default: the file's, else none",
    ),
    split_lists: Path = _SPLIT_LISTS,
    exclude_patients: Path = _EXCLUDE_PATIENTS,
    image: dict = None,  # the image block: see image_options
    run: dict = None,  # --workers --overwrite --part --max-failed: see run_block
    # fmt: on
) -> None:
    """Render K radiologist-style prompt reports per study from CheXpert or ChestX-ray14 labels.

    Example: cxrprep prompts CheXpert-v1.0/train.csv --image-root /data --templates prompts/default.yaml --out
    shards/
    """
    from cxrprep.datasets.prompts import PromptsConfig, run_prompts

    cfg, mf = dataset_config(
        PromptsConfig,
        image,
        run,
        templates=templates,  # a PromptFile: the name as given, resolved once
        dataset=dataset,
        images=images,
        allow_outside_root=allow_outside_root,
        image_root=path_str(image_root),
        variants=variants,
        negatives=negatives,
        split_lists=path_str(split_lists),
        uncertain=uncertain,
        seed=seed,
        qualifiers=qualifiers,
        exclude_patients=path_str(exclude_patients),
    )
    with errors({ValueError: 2}):
        m = run_prompts(labels_csv, out, cfg, progress=lambda it, n: progress(it, n, "study chunks", "chunk"))
    finish_dataset(m, out / m["dataset"], mf)


def register(app: typer.Typer) -> None:
    app.command()(prompts)
