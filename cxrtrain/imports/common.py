"""What every import format shares: its usage error, the message for an unknown state dict, the tower
folders it writes, and the cxrkit run folder it ends in."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch


class ImportUsageError(ValueError):
    """A checkpoint that cannot be imported as the named format (exit 2)."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_record(fmt: str, ckpt: Path, **fields) -> dict:
    """``import.json``'s head (format, the checkpoint's path and sha256), then ``fields`` in their order."""
    return dict(format=fmt, source=str(ckpt.resolve()), source_sha256=sha256(ckpt), **fields)


def preprocessing_record(size: int, mean, std, original: str, cxrkit: str) -> dict:
    """``import.json``'s preprocessing: input size, mean/std, the source's own pipeline and cxrkit's."""
    return dict(image_size=size, mean=mean, std=std, original=original, cxrkit=cxrkit)


def shape_of(v) -> str:
    return "x".join(map(str, v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__


def unknown(path: Path, fmt: str, obj, sd: dict | None, expected: dict | None, why: str) -> ImportUsageError:
    """One line naming what was found: the top-level keys, and the first parameter that does not belong to
    (or does not fit) the expected layout, with its shape."""
    top = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    msg = f"{path}: not in the {fmt} layout ({why}); top-level keys: {top}"
    if sd and expected is not None:
        for k, v in sd.items():
            if not isinstance(v, torch.Tensor):
                continue
            if k not in expected or (isinstance(v, torch.Tensor) and tuple(v.shape) != tuple(expected[k])):
                want = f" (expected {'x'.join(map(str, expected[k]))})" if k in expected else ""
                msg += f"; first unexpected parameter: {k} {shape_of(v)}{want}"
                break
        else:
            gone = [k for k in expected if k not in sd]
            if gone:
                msg += f"; first missing parameter: {gone[0]} {'x'.join(map(str, expected[gone[0]]))}"
    return ImportUsageError(msg)


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ImportUsageError(f"--out {out}: folder exists and is not empty; pass --overwrite or another --out")


def write_run(out: Path, model, record: dict) -> Path:
    """``OUT/best/`` (model.safetensors, config.json, towers/) as ``cxrtrain run`` writes it, and
    ``OUT/import.json`` (source file, its sha256, format, preprocessing, notes). Returns OUT/best."""
    from cxrtrain.config import TrainConfig
    from cxrtrain.train import save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "best", model, TrainConfig(model=model.config))
    tmp = out / ".tmp-import.json"
    tmp.write_text(json.dumps(record, indent=2, default=list) + "\n")
    tmp.replace(out / "import.json")
    return out / "best"


class TowerDir:
    """A temporary ``towers/`` folder (image/, text/ with config.json and tokenizer), as the model reads."""

    def __enter__(self) -> Path:
        self.path = Path(tempfile.mkdtemp(prefix="cxrkit-import-"))
        (self.path / "image").mkdir()
        (self.path / "text").mkdir()
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def load_into(model, mapped: dict, path: Path, fmt: str, obj) -> None:
    """Copy ``mapped`` (cxrkit keys) into ``model``; every model parameter must be covered, nothing left."""
    derived = ("position_ids", "relative_position_index", "num_batches_tracked")  # the model computes these
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith(derived[:2])}
    bad = [k for k, v in mapped.items() if k not in expected or tuple(v.shape) != expected[k]]
    gone = [k for k in expected if k not in mapped and not k.endswith(derived)]
    if bad or gone:
        raise unknown(path, fmt, obj, mapped, expected, "its tensors do not fit the architecture read from it")
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in mapped.items():
            sd[k].copy_(v.to(sd[k].dtype))


__all__ = ["ImportUsageError", "unknown", "write_run", "check_out", "TowerDir", "load_into", "sha256"]
