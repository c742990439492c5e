"""Import published chest X-ray CLIP checkpoints as cxrkit run folders (``cxrtrain import``)."""

from __future__ import annotations

from pathlib import Path

from cxrtrain.imports.common import ImportUsageError, check_out
from cxrtrain.imports.safe_load import CheckpointReadError, UnsafeCheckpointError


def import_checkpoint(
    fmt: str,
    ckpt: Path,
    out: Path,
    text_encoder: Path | None = None,
    image_encoder: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out/best`` (+ ``out/import.json``) from a checkpoint of format ``fmt``; returns out/best.
    Raises ImportUsageError (and its kin from safe_load) for anything that is not that format."""
    check_out(Path(out), overwrite)
    try:
        if fmt == "chexzero":
            from cxrtrain.imports.chexzero import import_chexzero

            return import_chexzero(Path(ckpt), Path(out), text_encoder)
        if fmt == "cxr-clip":
            from cxrtrain.imports.cxr_clip import import_cxr_clip

            return import_cxr_clip(Path(ckpt), Path(out), text_encoder, image_encoder)
        if fmt == "open-clip":
            from cxrtrain.imports.open_clip import import_open_clip

            return import_open_clip(Path(ckpt), Path(out), text_encoder)
    except (UnsafeCheckpointError, CheckpointReadError) as e:
        raise ImportUsageError(str(e)) from None
    raise ImportUsageError(f"FORMAT {fmt!r}: must be cxr-clip, chexzero or open-clip")


__all__ = ["import_checkpoint", "ImportUsageError"]
