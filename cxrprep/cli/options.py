"""CLI options shared by every cxrprep dataset command (reports, prompts, images, chexpert-5x200, ...):
the image settings and --max-failed / --part / --workers. Parsing only; bad values exit 2 naming the
option."""

from __future__ import annotations

import typer

from cxrprep.cli.edge import make_config, parse_max_failed


def image_settings(
    size: int, clahe: bool, clahe_clip: float, clahe_tiles: int, fmt: str, quality: int, max_image_pixels: int
):
    """Build ImageSettings from the shared image options (used by every command that writes images)."""
    from cxrprep.image.process import ImageSettings

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
