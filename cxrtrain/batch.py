"""``cxrtrain batch``: one training batch, drawn through the real loader and augmentation, written out to look
at (Karpathy: "visualise just before the net"): ``batch.png``, a contact sheet of both augmented views of
every study with its two texts under them, and ``batch.npz``, the uint8 images [N, 2, S, S] before
normalisation plus the texts and study ids."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from cxrtrain.config import TrainConfig
from cxrtrain.data import StudyStream


def draw_batch(cfg: TrainConfig, roots: list[str], n: int | None = None, epoch: int = 0) -> dict:
    """The first training batch of ``epoch`` (``n`` studies; default the per-step micro-batch) ->
    {"images": uint8 [N, 2, S, S], "text1", "text2", "study_id": lists}."""
    from cxrprep.shards import open_datasets
    from cxrtrain.usable import check_usable

    datasets = open_datasets(roots)
    usable = check_usable(datasets, "train", cfg, roots)  # no text anywhere: exit 2 instead of a hang
    datasets = [d for d in datasets if d.name in usable.names_with_text()]
    size = n or max(1, cfg.batch_size // cfg.accum_steps)
    stream = StudyStream(datasets, "train", cfg, None, size, train=True, seed=cfg.seed)
    stream.set_epoch(epoch)
    b = next(iter(stream))
    images = np.stack([b["images1"][:, 0].numpy(), b["images2"][:, 0].numpy()], axis=1)
    return dict(
        images=images.astype(np.uint8), text1=list(b["texts1"]), text2=list(b["texts2"]), study_id=list(b["study_id"])
    )


def _font(size: int):
    from PIL import ImageFont

    try:
        import matplotlib

        path = Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except Exception:  # noqa: BLE001 - any font will do
        return ImageFont.load_default(size=size)


def contact_sheet(batch: dict, png: Path, tile: int = 224, cols: int = 3, font_size: int = 13) -> None:
    """Both views of each study side by side (pixels enlarged without smoothing, so what the model sees is
    what is drawn), the study id, and the two texts wrapped underneath."""
    from PIL import Image, ImageDraw

    font, bold = _font(font_size), _font(font_size)
    gap, pad = 6, 8
    cell_w = 2 * tile + gap
    chars = max(20, int(cell_w / (font_size * 0.55)))
    line_h = font_size + 4
    cells = []
    for imgs, t1, t2, sid in zip(batch["images"], batch["text1"], batch["text2"], batch["study_id"]):
        lines = [str(sid)]
        for k, t in ((1, t1), (2, t2)):
            wrapped = textwrap.wrap(t, chars, initial_indent=f"text {k}: ", subsequent_indent="   ") or [f"text {k}:"]
            lines += wrapped[:10] + (["   ..."] if len(wrapped) > 10 else [])
        cells.append((imgs, lines))
    text_h = max(len(lines) for _, lines in cells) * line_h + pad
    cell_h = tile + text_h
    rows = (len(cells) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (cell_w + 2 * pad), rows * (cell_h + 2 * pad)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (imgs, lines) in enumerate(cells):
        x0 = (i % cols) * (cell_w + 2 * pad) + pad
        y0 = (i // cols) * (cell_h + 2 * pad) + pad
        for v in range(2):
            im = Image.fromarray(imgs[v]).resize((tile, tile), Image.NEAREST).convert("RGB")
            sheet.paste(im, (x0 + v * (tile + gap), y0))
        draw.rectangle([x0 - 1, y0 - 1, x0 + cell_w, y0 + tile], outline=(200, 0, 0))
        for j, line in enumerate(lines):
            draw.text((x0, y0 + tile + 4 + j * line_h), line, fill=(0, 0, 0), font=bold if j == 0 else font)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".tmp-{png.name}")
    sheet.save(tmp, format="PNG")
    os.replace(tmp, png)


def write_batch(batch: dict, out: Path) -> tuple[Path, Path]:
    """DIR/batch.png and DIR/batch.npz (atomic)."""
    out.mkdir(parents=True, exist_ok=True)
    npz = out / "batch.npz"
    tmp = out / ".tmp-batch.npz"
    with open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            images=batch["images"],
            text1=np.array(batch["text1"], dtype=str),
            text2=np.array(batch["text2"], dtype=str),
            study_id=np.array(batch["study_id"], dtype=str),
        )
    os.replace(tmp, npz)
    contact_sheet(batch, out / "batch.png")
    return out / "batch.png", npz


__all__ = ["draw_batch", "contact_sheet", "write_batch"]
