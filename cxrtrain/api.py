"""cxrtrain's Python API, open_clip style: a model and the preprocessing it was trained with in one call, then
encode, score and classify. Importable from the package too (``from cxrtrain import load_model``); docs/api.md.

    model, preprocess = load_model("runs/tiny")
    probs = zero_shot(model, [preprocess("chest.png")], {"effusion": ["Pleural effusion."],
                                                          "none": ["No pleural effusion."]})
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from cxrtrain.checkpoint import load_checkpoint
from cxrtrain.model import CLIPModel
from cxrtrain.transforms import decode_gray, eval_transform


class Preprocess:
    """The evaluation transform of one model: an 8-bit grey image (numpy HxW, a PIL image, or a PNG/JPEG path
    or bytes) -> float tensor [3, S, S], shorter side to the model's input size, centre crop, the model's
    mean/std. Images should be what cxrprep writes: MONOCHROME2 (bone bright); read DICOMs with
    ``cxrprep.read_image`` first."""

    def __init__(self, config) -> None:
        self.config = config

    def __call__(self, image) -> torch.Tensor:
        return eval_transform(self._gray(image), self.config)

    @staticmethod
    def _gray(image) -> np.ndarray:
        if isinstance(image, (str, Path)):
            a = cv2.imread(str(image), cv2.IMREAD_GRAYSCALE)
            if a is None:
                raise ValueError(f"{image}: not a readable PNG/JPEG (DICOM: use cxrprep.read_image first)")
            return a
        if isinstance(image, (bytes, bytearray)):
            return decode_gray(bytes(image))
        if hasattr(image, "convert"):  # PIL
            image = np.asarray(image.convert("L"))
        a = np.asarray(image)
        if a.ndim == 3:
            a = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) if a.shape[2] == 3 else a[..., 0]
        if a.dtype != np.uint8 or a.ndim != 2:
            raise ValueError(f"expected an 8-bit grey image (HxW uint8), got {a.dtype} with shape {a.shape}")
        return a


def load_model(path: str | Path, device: str = "cpu") -> tuple[CLIPModel, Preprocess]:
    """A cxrtrain run folder (its best/, else last/) or checkpoint folder -> (model in eval mode, preprocess).
    Built from the checkpoint's own tower configs: no hub access. Raises FileNotFoundError / ValueError naming
    the folder."""
    model, _ = load_checkpoint(path)
    return model.to(device).eval(), Preprocess(model.config)


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def encode_images(model: CLIPModel, images: Sequence, preprocess: Callable | None = None, batch_size: int = 32):
    """Images (tensors from ``preprocess``, or anything ``preprocess`` takes) -> [N, D] L2-normalised
    embeddings (float32, CPU)."""
    prep = preprocess or Preprocess(model.config)
    out = []
    for i in range(0, len(images), batch_size):
        chunk = [x if isinstance(x, torch.Tensor) else prep(x) for x in images[i : i + batch_size]]
        out.append(model.encode_image(torch.stack(chunk).to(_device(model))).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


@torch.no_grad()
def encode_texts(model: CLIPModel, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Texts -> [N, D] L2-normalised embeddings (float32, CPU)."""
    out = []
    for i in range(0, len(texts), batch_size):
        tok = {k: v.to(_device(model)) for k, v in model.tokenize(list(texts[i : i + batch_size])).items()}
        out.append(model.encode_text(**tok).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


@torch.no_grad()
def zero_shot(
    model: CLIPModel, images: Sequence, classes: dict[str, Sequence[str]], preprocess: Callable | None = None
) -> tuple[list[str], torch.Tensor]:
    """Zero-shot classification: each class is a set of prompts whose embeddings are averaged and re-normalised
    (prompt ensembling, as ``cxrtrain eval``'s ``mean`` ensemble); -> (class names, [N, C] softmax
    probabilities at the model's own temperature)."""
    if not classes or any(not p for p in classes.values()):
        raise ValueError("zero_shot needs at least one class, each with at least one prompt")
    names = list(classes)
    protos = torch.stack([F.normalize(encode_texts(model, list(classes[n])).mean(0), dim=-1) for n in names])
    img = encode_images(model, images, preprocess)
    logits = model.scale().float().cpu() * img @ protos.T
    return names, logits.softmax(-1)


class ShardImages(torch.utils.data.Dataset):
    """One split of a shard dataset folder as a torch Dataset of (image tensor [3,S,S], labels, study id): the
    study's first frontal image (else its first image), preprocessed for ``model`` (or a ``Preprocess``).
    ``labels`` is a float tensor in the manifest's label order (NaN where not mentioned)."""

    def __init__(self, dataset_dir: str | Path, preprocess: Preprocess, split: str | None = "test") -> None:
        from cxrprep.shards.reader import ShardDataset

        ds = ShardDataset(dataset_dir)
        self.label_names = list(ds.manifest.get("label_names") or [])
        self.rows = list(ds.iter_rows(["study_id", "labels", "images"], split=split))
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        r = self.rows[i]
        imgs = r["images"] or []
        if not imgs:
            raise ValueError(f"study {r['study_id']}: no image")
        frontal = [im for im in imgs if (im.get("view") or "").upper() in ("PA", "AP", "FRONTAL")]
        img = (frontal or imgs)[0]
        lab = torch.tensor([np.nan if v is None else float(v) for v in (r["labels"] or [])], dtype=torch.float32)
        return self.preprocess(img["image"]), lab, r["study_id"]


__all__ = ["Preprocess", "ShardImages", "encode_images", "encode_texts", "load_model", "zero_shot"]
