"""`cxrprep rsna | siim | vindr | openi | mimic-5x200`: CXR-CLIP's external benchmarks from their released files."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import NamedTuple, get_type_hints

import typer

from cxrprep.cli.edge import errors, finish, make_config, progress
from cxrprep.cli.options import (
    BENCH_OUT,
    CLAHE,
    OVERWRITE,
    SIZE,
    WORKERS,
    deprecated,
    image_settings,
    max_failed_option,
    part_option,
    renamed,
    run_options,
)

_PART = part_option("studies")
_MAXF = max_failed_option("inputs")


class _RunOpts(NamedTuple):
    """The options every image benchmark command takes, in their help order."""

    out: Path
    size: int
    clahe: bool
    workers: int
    part: str
    max_failed: str
    overwrite: bool


_RUN_DEFAULTS = (BENCH_OUT, SIZE, CLAHE, WORKERS, _PART, _MAXF, OVERWRITE)


def _run_options(fn):
    """``fn`` with its parameter ``run`` shown to Typer as the options of ``_RunOpts`` (--out --size --clahe
    --workers --part --max-failed, at that place), which reach ``fn`` together as one ``_RunOpts``."""
    sig = inspect.signature(fn, eval_str=True)
    params = list(sig.parameters.values())
    at = [p.name for p in params].index("run")
    kind, types = inspect.Parameter.POSITIONAL_OR_KEYWORD, get_type_hints(_RunOpts)
    opts = [inspect.Parameter(n, kind, default=d, annotation=types[n]) for n, d in zip(_RunOpts._fields, _RUN_DEFAULTS)]

    @functools.wraps(fn)
    def command(**kw) -> None:
        run = _RunOpts(*(kw.pop(n) for n in _RunOpts._fields))
        fn(**kw, run=run)

    command.__signature__ = sig.replace(parameters=[*params[:at], *opts, *params[at + 1 :]])
    return command


def _run(fn, out: Path, dataset: str, mf) -> None:
    from cxrprep.shards import summary_lines

    with errors({ValueError: 2}):
        m = fn()
    c = m["counts"]
    finish(summary_lines(m, out / dataset), c["failed"], c["inputs_seen"], mf)


def _checked(run: _RunOpts) -> tuple:
    """``(max_failed, part, workers, ImageSettings)`` from the run options (a bad value is a usage error)."""
    mf, part_t, nworkers = run_options(run.max_failed, run.part, run.workers)
    return mf, part_t, nworkers, image_settings(run.size, run.clahe)


def _bench(
    labels_csv: Path,
    image_root: Path | None,
    dataset: str,
    reader,
    run: _RunOpts,
    readers: str = "majority",
    extra: list[Path] = (),
) -> None:
    from cxrprep.datasets.benchmarks import BenchConfig, write_items

    out = run.out
    mf, part_t, nworkers, settings = _checked(run)
    cfg = make_config(
        BenchConfig,
        image_root=str(image_root) if image_root else None,
        readers=readers,
        workers=nworkers,
        part=part_t,
        images=settings,
        overwrite=run.overwrite,
    )
    root = image_root or labels_csv.parent

    def go():
        items, names = (
            reader([labels_csv, *extra], root, readers) if extra or dataset == "vindr-cxr" else reader(labels_csv, root)
        )
        return write_items(
            items,
            names,
            out,
            dataset,
            cfg,
            dataset,
            {
                "labels": [str(labels_csv), *map(str, extra)],
                "split_method": getattr(reader, "keywords", {}).get("split_method", "hash"),
            },
            progress=lambda it, n: progress(it, n, dataset, "img"),
        )

    _run(go, out, dataset, mf)


_SPLIT_METHOD = typer.Option(
    "hash", "--split-method", help="hash (sha256 70/15/15) | gloria (GLoRIA's published split, as CXR-CLIP)"
)


def _with_split(reader, split_method: str, allowed: tuple[str, ...] = ("hash", "gloria")):
    """The reader with ``--split-method`` bound (a bad value is a usage error naming the option)."""
    from functools import partial

    if split_method not in allowed:
        raise typer.BadParameter(f"must be {' or '.join(allowed)}, got {split_method!r}", param_hint="--split-method")
    return partial(reader, split_method=split_method)


def _kaggle_command(
    name: str, reader_name: str, dataset: str, csv_help: str, root_help: str, images_dir: str, doc: str
):
    """The command for a Kaggle benchmark (RSNA, SIIM): one labels CSV, one folder of DICOMs (default
    ``images_dir`` beside the CSV), ``--split-method`` hash | gloria."""

    @_run_options
    def command(
        # fmt: off
        labels_csv: Path = typer.Argument(..., exists=True, dir_okay=False, help=csv_help),
        image_root: Path = typer.Option(None, "--image-root", help=root_help),
        run: _RunOpts = None,
        split_method: str = _SPLIT_METHOD,
        # fmt: on
    ) -> None:
        from cxrprep.datasets import benchmarks

        root = image_root or (labels_csv.parent / images_dir)
        reader = _with_split(getattr(benchmarks, reader_name), split_method)
        _bench(labels_csv, root, dataset, reader, run)

    command.__name__ = command.__qualname__ = name
    command.__doc__ = doc
    return command


rsna = _kaggle_command(
    "rsna",
    "read_rsna",
    "rsna-pneumonia",
    "stage_2_train_labels.csv (Kaggle RSNA Pneumonia)",
    "Folder of {patientId}.dcm (default: stage_2_train_images/ beside the CSV)",
    "stage_2_train_images",
    """RSNA Pneumonia -> bench/rsna-pneumonia (label Pneumonia = Target; 70/15/15 hashed split).

    Example: cxrprep rsna stage_2_train_labels.csv --image-root stage_2_train_images --out bench/
    """,
)
siim = _kaggle_command(
    "siim",
    "read_siim",
    "siim-acr-pneumothorax",
    "train-rle.csv (Kaggle SIIM-ACR; header 'ImageId, EncodedPixels')",
    "Folder searched for {ImageId}.dcm (default: dicom-images-train/ beside the CSV)",
    "dicom-images-train",
    """SIIM-ACR Pneumothorax -> bench/siim-acr-pneumothorax (label Pneumothorax: -1 -> 0, a mask -> 1).

    Example: cxrprep siim train-rle.csv --image-root dicom-images-train --out bench/
    """,
)


@_run_options
def vindr(
    # fmt: off
    train_csv: Path = typer.Argument(..., exists=True, dir_okay=False, help="annotations/image_labels_train.csv"),
    test_csv: Path = typer.Option(
        None,
        "--test",
        exists=True,
        dir_okay=False,
        help="annotations/image_labels_test.csv (default: beside TRAIN_CSV if present)",
    ),
    image_root: Path = typer.Option(
        None, "--image-root", help="Folder with train/ and test/ DICOMs (default: the CSV folder's parent)"
    ),
    readers: str = typer.Option(
        "majority", "--readers", help="Combine the radiologists of a training image: majority | any (CXR-CLIP)"
    ),
    split_method: str = typer.Option(
        "hash", "--split-method", help="Validate from train: hash (20%) | cxr-clip (CXR-CLIP's seeded 20%)"
    ),
    run: _RunOpts = None,
    # fmt: on
) -> None:
    """VinDr-CXR image-level labels (28 columns) -> bench/vindr-cxr (official test; 20% of train -> validate).

    Example: cxrprep vindr vindr/annotations/image_labels_train.csv --image-root vindr/ --out bench/
    """
    from cxrprep.datasets.benchmarks import read_vindr

    test = test_csv or (train_csv.parent / "image_labels_test.csv")
    extra = [test] if test.exists() else []
    root = image_root or train_csv.parent.parent
    reader = _with_split(read_vindr, split_method, ("hash", "cxr-clip"))
    _bench(train_csv, root, "vindr-cxr", reader, run, readers, extra)


@_run_options
def openi(
    # fmt: off
    xml_dir: Path = typer.Argument(..., exists=True, file_okay=False, help="ecgen-radiology/ (NLMCXR XML reports)"),
    image_root: Path = typer.Option(
        None, "--image-root", help="NLMCXR_png/ or NLMCXR_dcm/ (images named by parentImage id)"
    ),
    split_method: str = typer.Option(
        "test", "--split-method", help="test (all of Open-I is a test set, as CXR-CLIP) | hash (70/15/15 by uId)"
    ),
    split_old: str = deprecated("--split", "--split-method", default=None),
    images: bool = typer.Option(True, "--images/--no-images"),
    run: _RunOpts = None,
    # fmt: on
) -> None:
    """Open-I / IU X-ray XML reports + images -> bench/openi (findings, impression, sentences, MeSH).

    Example: cxrprep openi NLMCXR/ecgen-radiology --image-root NLMCXR/NLMCXR_png --out bench/
    """
    from cxrprep.datasets.openi import OpenIConfig, run_openi

    out = run.out
    mf, part_t, nworkers, settings = _checked(run)
    cfg = make_config(
        OpenIConfig,
        image_root=str(image_root) if image_root else None,
        split=renamed(split_method, split_old, "--split-method", "--split", default="test"),
        images=images,
        workers=nworkers,
        part=part_t,
        image_settings=settings,
        overwrite=run.overwrite,
    )
    _run(
        lambda: run_openi(xml_dir, out, cfg, progress=lambda it, n: progress(it, n, "openi", "study")),
        out,
        "openi",
        mf,
    )


def mimic_5x200(
    # fmt: off
    root: Path = typer.Argument(
        ..., exists=True, file_okay=False, help="MIMIC-CXR-JPG root (with files/ and the CSVs)"
    ),
    out: Path = BENCH_OUT,
    per_class: int = typer.Option(200, "--per-class"),
    seed: int = typer.Option(0, "--seed"),
    from_split: str = typer.Option(
        "test", "--from-split", help="Draw from this official split: test | validate | train | any"
    ),
    list_file: Path = typer.Option(
        None, "--list", exists=True, dir_okay=False, help="A released list of image paths instead of the draw"
    ),
    metadata: Path = typer.Option(None, "--metadata"),
    split_csv: Path = typer.Option(None, "--split-csv", help="mimic-cxr-2.0.0-split.csv(.gz) (default: in ROOT)"),
    split_old: Path = deprecated("--split", "--split-csv"),
    chexpert: Path = typer.Option(None, "--chexpert"),
    images: bool = typer.Option(True, "--images/--no-images"),
    overwrite: bool = OVERWRITE,
    size: int = SIZE,
    clahe: bool = CLAHE,
    # fmt: on
) -> None:
    """MIMIC 5x200: frontal images whose study has exactly one competition finding, with reports.

    Example: cxrprep mimic-5x200 /data/mimic-cxr-jpg/2.0.0 --out bench/ --per-class 200 --seed 0
    """
    from cxrprep.datasets.mimic5x200 import DATASET, Mimic5x200Config, run_mimic_5x200

    settings = image_settings(size, clahe)
    cfg = make_config(
        Mimic5x200Config,
        per_class=per_class,
        seed=seed,
        from_split=from_split,
        list_path=str(list_file) if list_file else None,
        metadata=str(metadata) if metadata else None,
        split=str(split_csv) if (split_csv := renamed(split_csv, split_old, "--split-csv", "--split")) else None,
        chexpert=str(chexpert) if chexpert else None,
        images=images,
        image_settings=settings,
        overwrite=overwrite,
    )
    _run(lambda: run_mimic_5x200(root, out, cfg), out, DATASET, (0, None))


def register(app: typer.Typer) -> None:
    app.command()(rsna)
    app.command()(siim)
    app.command()(vindr)
    app.command()(openi)
    app.command("mimic-5x200")(mimic_5x200)
