"""CLI options shared by the commands of both CLIs, declared once (spaCy-style aliases): the image block and
--workers / --part / --max-failed of every dataset command, the scoring block of ``cxrtrain eval`` and
``bench-suite``, and deprecated spellings of renamed options. Parsing only; bad values exit 2 naming the
option."""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path

import typer

from cxrprep.cli.edge import check_option, make_config, parse_max_failed
from cxrprep.image.settings import MAX_IMAGE_PIXELS, ImageSettings

# -- images (reports, prompts, images, chexpert-5x200, the benchmarks) ----------------------------------
SIZE = typer.Option(ImageSettings.size, "--size", help="Image shorter side in pixels (never upscaled)")
CLAHE = typer.Option(ImageSettings.clahe, "--clahe/--no-clahe", help="Also store a CLAHE copy")
CLAHE_CLIP = typer.Option(ImageSettings.clahe_clip, "--clahe-clip", help="CLAHE clip limit")
CLAHE_TILES = typer.Option(ImageSettings.clahe_tiles, "--clahe-tiles", help="CLAHE tile grid: tiles x tiles")
FORMAT = typer.Option(ImageSettings.format, "--format", help="jpeg or png")
QUALITY = typer.Option(ImageSettings.quality, "--quality", help="JPEG quality")
MAX_PIXELS = typer.Option(MAX_IMAGE_PIXELS, "--max-image-pixels", help="Reject larger images (decompression bombs)")

#: The image block as (parameter name, type, option), in --help order.
IMAGE_OPTIONS = (
    ("size", int, SIZE),
    ("clahe", bool, CLAHE),
    ("clahe_clip", float, CLAHE_CLIP),
    ("clahe_tiles", int, CLAHE_TILES),
    ("fmt", str, FORMAT),
    ("quality", int, QUALITY),
    ("max_image_pixels", int, MAX_PIXELS),
)


def _block(name: str, options) -> typing.Callable:
    """A decorator that gives a command the options ``options`` ((parameter name, type, option), in --help
    order) in place of its parameter ``name``, and hands their values to it as that one dict: a block of
    options declared once for every command that has it."""

    def decorate(command):
        sig = inspect.signature(command)
        hints = typing.get_type_hints(command)
        kept = [p.replace(annotation=hints[p.name]) for p in sig.parameters.values()]
        at = [p.name for p in kept].index(name)
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        block = [inspect.Parameter(n, kind, default=o, annotation=t) for n, t, o in options]
        params = kept[:at] + block + kept[at + 1 :]

        @functools.wraps(command)
        def run(**kwargs):
            values = {n: kwargs.pop(n) for n, _, _ in options}
            return command(**{name: values}, **kwargs)

        run.__signature__ = sig.replace(parameters=params)
        run.__annotations__ = {p.name: p.annotation for p in params} | {"return": hints.get("return")}
        return run

    return decorate


def image_options(command):
    """Give a command the image block (--size ... --max-image-pixels) in place of its ``image`` parameter
    and hand the values to it as that one dict (for ``image_settings(**image)``)."""
    return _block("image", IMAGE_OPTIONS)(command)


def run_block(part_unit: str, failed_unit: str) -> typing.Callable:
    """Give a dataset command --workers, --overwrite, --part and --max-failed in place of its ``run``
    parameter, handed to it as one dict (for ``dataset_config``); ``part_unit`` and ``failed_unit`` name
    what --part splits and what --max-failed counts in --help."""
    return _block(
        "run",
        (
            ("workers", int, WORKERS),
            ("overwrite", bool, OVERWRITE),
            ("part", str, part_option(part_unit)),
            ("max_failed", str, max_failed_option(failed_unit)),
        ),
    )


# -- runs of the dataset commands ------------------------------------------------------------------------
WORKERS = typer.Option(0, "--workers", help="Worker processes (0 = all cores)")
OUT = typer.Option(Path("shards"), "--out", help="Shard root")
OVERWRITE = typer.Option(
    False,
    "--overwrite",
    help="Replace a finished dataset of the same name in --out (default: refuse; a killed run's leftovers are "
    "always replaced)",
)
# benchmark readers (issue 20): their rows have labels but no text, so they are kept out of the training root
BENCH_OUT = typer.Option(
    Path("bench"),
    "--out",
    help="Root for benchmark sets (default bench/: outside the training root shards/, as their rows have no text "
    "to train on)",
)


def file_option(flag: str, help: str, **kw) -> typer.models.OptionInfo:
    """An optional input file (default None): it must exist and not be a folder."""
    return typer.Option(None, flag, exists=True, dir_okay=False, help=help, **kw)


def image_root_option(help: str, **kw) -> typer.models.OptionInfo:
    """``--image-root``: the folder that relative image paths resolve against (default None)."""
    return typer.Option(None, "--image-root", help=help, **kw)


def allow_outside_root_option(paths: str) -> typer.models.OptionInfo:
    """``--allow-outside-root``: read ``paths`` that resolve outside --image-root (default: they are rejects)."""
    return typer.Option(
        False,
        "--allow-outside-root",
        help=f"Read {paths} that resolve outside --image-root (default: they are rejects)",
    )


def part_option(unit: str = "patients") -> typer.models.OptionInfo:
    return typer.Option(None, "--part", help=f"i/N: a deterministic 1/N of the {unit}; join with cxrprep merge")


def max_failed_option(unit: str = "inputs") -> typer.models.OptionInfo:
    return typer.Option(
        "1%",
        "--max-failed",
        help=f"Exit 1 if more {unit} fail: a count, or a percent like 1% (a percent > 0 allows at least one)",
    )


# -- scoring (cxrtrain eval, bench-suite) -----------------------------------------------------------------
def prompts_option(default: str, help: str, flag: str = "--prompts") -> typer.models.OptionInfo:
    """A prompt file option (``--prompts``, ``--templates``), resolved and parsed once by its callback."""
    return typer.Option(default, flag, callback=lambda v: check_option(v, flag), help=help)


EVAL_SPLIT = typer.Option(
    "test", "--split", help="Rows scored: test | validate | train | all (never a silent fallback)"
)
ENSEMBLE = typer.Option(
    "mean-similarity", "--ensemble", help="Prompt-set score: mean-similarity (CXR-CLIP) | mean-embedding"
)
BOOTSTRAP = typer.Option(1000, "--bootstrap", help="Bootstrap resamples for the AUROC CI (0 = none)")
DEVICE = typer.Option("auto", "--device", help="auto (cuda if available) | cpu | cuda | cuda:N")


# -- renamed options -------------------------------------------------------------------------------------
def deprecated(old: str, new: str, default=None) -> typer.models.OptionInfo:
    """The old spelling of a renamed option, hidden from --help and kept for one release: using it prints one
    line ``warning: OLD is deprecated; use NEW`` to stderr."""

    def warn(value):
        if value is not None and value != default:
            typer.echo(f"warning: {old} is deprecated; use {new}", err=True)
        return value

    return typer.Option(default, old, hidden=True, callback=warn)


def renamed(new_value, old_value, new: str, old: str, default=None):
    """The value of a renamed option given as ``new`` or (deprecated) ``old``; both at once is bad usage."""
    if old_value is None or old_value == default:
        return new_value
    if new_value is not None and new_value != default and new_value != old_value:
        raise typer.BadParameter(f"give {new} only ({old} is its deprecated spelling)", param_hint=old)
    return old_value


# -- builders --------------------------------------------------------------------------------------------
def image_settings(
    size: int = ImageSettings.size,
    clahe: bool = ImageSettings.clahe,
    clahe_clip: float = ImageSettings.clahe_clip,
    clahe_tiles: int = ImageSettings.clahe_tiles,
    fmt: str = ImageSettings.format,
    quality: int = ImageSettings.quality,
    max_image_pixels: int = MAX_IMAGE_PIXELS,
) -> ImageSettings:
    """Build ImageSettings from the shared image options (used by every command that writes images)."""
    return make_config(
        ImageSettings,
        size=size,
        clahe=clahe,
        clahe_clip=clahe_clip,
        clahe_tiles=clahe_tiles,
        format=fmt,
        quality=quality,
        max_pixels=max_image_pixels,
    )


def run_options(max_failed: str, part: str | None, workers: int) -> tuple[tuple, tuple[int, int] | None, int]:
    """Parse --max-failed, --part and --workers (shared by every dataset command); bad values exit 2."""
    from cxrprep.parallel import parse_part, resolve_workers

    try:
        return parse_max_failed(max_failed), parse_part(part), resolve_workers(workers)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e


def dataset_config(factory, image: dict, run: dict, settings_field: str = "image_settings", **fields):
    """The config of a dataset command that writes images: the run block (``run``, from ``run_block``)
    parsed: --max-failed, --part and --workers (bad values exit 2, in that order) and --overwrite; then the
    image block (``image``, from ``image_options``) as ``settings_field``; then ``factory(workers=...,
    part=..., overwrite=..., **fields)``. -> (config, parsed --max-failed)."""
    mf, part_t, nworkers = run_options(run["max_failed"], run["part"], run["workers"])
    fields[settings_field] = image_settings(**image)
    return make_config(factory, workers=nworkers, part=part_t, overwrite=run["overwrite"], **fields), mf
