"""Small helpers shared by the tests (and bench/): tiny trainer configs and runs, CLI argument lists, a
subprocess trainer to interrupt, tiny transformer layer settings. Fixtures stay in conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: The model every trainer test builds: the tiny preset at 32 pixels with 32-dim embeddings.
TINY_MODEL = {"preset": "tiny", "image_size": 32, "embed_dim": 32}


def sets(*assignments: str) -> list[str]:
    """``--set`` options for the trainer CLIs: sets("epochs=2", "batch_size=4") -> [--set, epochs=2, --set, ...]."""
    return [w for a in assignments for w in ("--set", a)]


def cli_args(*words, **options) -> list[str]:
    """A CLI argument list: the words as strings, then each option as ``--name value`` (underscores in the
    name become dashes; True gives a bare flag). cli_args("images", src, out=o, max_failed=5)."""
    out = [str(w) for w in words]
    for name, value in options.items():
        out.append("--" + name.replace("_", "-"))
        if value is not True:
            out.append(str(value))
    return out


def tiny_config(**overrides):
    """A TrainConfig for the tiny model: 1 epoch, batch 4, 1 warm-up step, no step logs; ``overrides`` win."""
    from cxrtrain.config import build_config

    base = dict(model=dict(TINY_MODEL), epochs=1, batch_size=4, log_every=100, warmup_steps=1)
    return build_config({**base, **overrides})


def train_tiny(shards: Path, out: Path, **overrides) -> Path:
    """Train the tiny model on ``shards`` into ``out`` (a real run folder; 2 steps unless overridden)."""
    from cxrtrain.train import train

    train([str(shards)], out, tiny_config(**{"max_steps": 2, **overrides}), log=lambda *_: None)
    return out


def start_trainer(shards: Path, out: Path, *args: str, **popen) -> subprocess.Popen:
    """``cxrtrain run SHARDS --out OUT ARGS`` in a subprocess (offline, one thread), returned once its
    metrics.jsonl has a line (or after 120 s), so that a test can interrupt it mid-run."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "cxrtrain.cli.app", "run", str(shards), "--out", str(out), *args]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.2)
    return p


def tiny_layers(hidden: int, **kw) -> dict:
    """A 2-layer, 2-head transformer config's sizes (intermediate = 2 x hidden) plus ``kw``."""
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2, **kw)


def cr_dataset(shape: tuple[int, int]):
    """An empty CR DICOM dataset of ``shape`` (rows, columns) with its file meta (explicit VR little endian)
    and fresh UIDs; the caller sets the pixel attributes and data."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = shape
    return ds


def write_dicom(path, px, photometric="MONOCHROME2", bits=12, signed=False, extra=None, rle=False):
    """Write ``px`` (2-D) as a CR DICOM file with a (fake) patient name and ID to check de-identification:
    ``bits`` stored of 16 allocated, ``extra`` attributes set as given, RLE-compressed when ``rle``."""
    import numpy as np
    from pydicom.uid import RLELossless

    ds = cr_dataset(px.shape)
    ds.PatientName = "Secret^Name"
    ds.PatientID = "SECRETID42"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    ds.PixelData = px.astype(np.int16 if signed else np.uint16).tobytes()
    if rle:
        ds.compress(RLELossless, encoding_plugin="pydicom")
    ds.save_as(path, enforce_file_format=True)
    return path


def run_in_parts(app, command: str, src: Path, out: Path, parts: int, dataset: str, **options) -> None:
    """``COMMAND SRC --out OUT --part i/PARTS OPTIONS`` for every part (each must succeed), then ``merge``
    of OUT/DATASET (must succeed too): the multi-part run that tests compare with a single one."""
    from typer.testing import CliRunner

    for i in range(parts):
        r = CliRunner().invoke(app, cli_args(command, src, out=out, part=f"{i}/{parts}", **options))
        assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["merge", str(out / dataset)])
    assert r.exit_code == 0, r.output


def untrained_checkpoint(folder: Path) -> Path:
    """An untrained tiny model saved as a checkpoint folder (folder/best): enough to start eval or fewshot."""
    from cxrtrain.config import load_config
    from cxrtrain.model import create_model
    from cxrtrain.train import save_checkpoint

    cfg = load_config(None, ["model.image_size=32", "model.embed_dim=32", "batch_size=4"])
    save_checkpoint(folder / "best", create_model(cfg.model), cfg)
    return folder / "best"


def phantom(h=64, w=64) -> np.ndarray:
    """Dark lungs left/right, bright 'spine' column in the centre: intensity in 'bone is bright' terms."""
    a = np.full((h, w), 0.2, np.float32)
    a[:, w // 2 - 6 : w // 2 + 6] = 0.9
    return a
