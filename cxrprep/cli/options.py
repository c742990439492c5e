"""CLI options shared by the commands of both CLIs, declared once (spaCy-style aliases): the image block and
--workers / --part / --max-failed of every dataset command, the scoring block of ``cxrtrain eval`` and
``bench-suite``, and deprecated spellings of renamed options. Parsing only; bad values exit 2 naming the
option."""

from __future__ import annotations

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

# -- runs of the dataset commands ------------------------------------------------------------------------
WORKERS = typer.Option(0, "--workers", help="Worker processes (0 = all cores)")
OUT = typer.Option(Path("shards"), "--out", help="Shard root")


def part_option(unit: str = "patients") -> typer.models.OptionInfo:
    return typer.Option(None, "--part", help=f"i/N: a deterministic 1/N of the {unit}; join with cxrprep merge")


def max_failed_option(unit: str = "inputs") -> typer.models.OptionInfo:
    return typer.Option("1%", "--max-failed", help=f"Exit 1 if more {unit} fail (count, or percent like 1%)")


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
