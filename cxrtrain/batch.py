"""``cxrtrain batch``: training batches, drawn through the real loader and augmentation, written out to look
at (Karpathy: "visualise just before the net"): ``batch.png``, a contact sheet of both augmented views of
every study of the first batch with its two texts under them (``--no-sheet`` skips it), and ``batch.npz``,
the uint8 images [N, 2, S, S] before normalisation plus the texts, study ids, datasets, patients and the
batch of each study (``--batches K`` draws K consecutive batches)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np

from cxrtrain.config import TrainConfig
from cxrtrain.data import StudyStream


def draw_batch(cfg: TrainConfig, roots: list[str], n: int | None = None, epoch: int = 0, batches: int = 1) -> dict:
    """The first ``batches`` training batches of ``epoch`` (``n`` studies each; default the per-step
    micro-batch) -> {"images": uint8 [N, 2, S, S], "text1", "text2", "study_id", "dataset", "subject_id",
    "batch": lists of N}."""
    from cxrprep.shards import open_datasets
    from cxrtrain.usable import check_usable

    datasets = open_datasets(roots)
    usable = check_usable(datasets, "train", cfg, roots)  # no text anywhere: exit 2 instead of a hang
    datasets = [d for d in datasets if d.name in usable.names_with_text()]
    size = n or max(1, cfg.batch_size // cfg.accum_steps)
    stream = StudyStream(datasets, "train", cfg, None, size, train=True, seed=cfg.seed)
    stream.set_epoch(epoch)
    it = iter(stream)
    out: dict = {k: [] for k in ("images", "text1", "text2", "study_id", "dataset", "subject_id", "batch")}
    for k in range(batches):
        b = next(it)
        out["images"].append(np.stack([b["images1"][:, 0].numpy(), b["images2"][:, 0].numpy()], axis=1))
        out["text1"] += list(b["texts1"])
        out["text2"] += list(b["texts2"])
        for key in ("study_id", "dataset", "subject_id"):
            out[key] += list(b[key])
        out["batch"] += [k] * len(b["study_id"])
    out["images"] = np.concatenate(out["images"]).astype(np.uint8)
    return out


def batch_summary(batch: dict) -> str:
    """Per batch: each dataset's share and the same-patient pairs (mean over the batches drawn)."""
    from cxrtrain.sampling import same_patient_pairs

    ids = np.array(batch["batch"])
    names = sorted(set(batch["dataset"]))
    shares = {d: [] for d in names}
    pairs = []
    for k in sorted(set(batch["batch"])):
        idx = np.flatnonzero(ids == k)
        ds = [batch["dataset"][i] for i in idx]
        for d in names:
            shares[d].append(ds.count(d) / len(idx))
        pairs.append(same_patient_pairs([(batch["dataset"][i], batch["subject_id"][i]) for i in idx]))
    parts = [f"{d} {np.mean(v):.2f} ({np.min(v):.2f}-{np.max(v):.2f})" for d, v in shares.items()]
    return (
        f"dataset share per batch, mean (min-max): {', '.join(parts)}; "
        f"same-patient pairs per batch {np.mean(pairs):.2f}"
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
    first = [i for i, k in enumerate(batch.get("batch") or [0] * len(batch["study_id"])) if k == 0]
    rows = [(batch["images"][i], batch["text1"][i], batch["text2"][i], batch["study_id"][i]) for i in first]
    for imgs, t1, t2, sid in rows:
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


def write_batch(batch: dict, out: Path, sheet: bool = True) -> tuple[Path | None, Path]:
    """DIR/batch.png (the first batch; ``sheet=False``: none) and DIR/batch.npz (atomic)."""
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
            dataset=np.array(batch.get("dataset") or [], dtype=str),
            subject_id=np.array(batch.get("subject_id") or [], dtype=str),
            batch=np.array(batch.get("batch") or [0] * len(batch["study_id"]), dtype=np.int32),
        )
    os.replace(tmp, npz)
    if not sheet:
        return None, npz
    contact_sheet(batch, out / "batch.png")
    return out / "batch.png", npz


__all__ = ["draw_batch", "batch_summary", "contact_sheet", "write_batch"]
