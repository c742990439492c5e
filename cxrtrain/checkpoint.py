"""Checkpoints: an atomic save of model.safetensors (+ state.pt) + config.json + the tower configs, the lookup of
a checkpoint inside a run folder, loading a model back from one, and the training state a resumed run restores.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch

from cxrtrain.config import TrainConfig, config_from_dict
from cxrtrain.model import CLIPModel, create_model
from cxrtrain.safeload import check_shapes, load_state


def save_checkpoint(path: Path, model: CLIPModel, cfg: TrainConfig, state: dict | None = None) -> None:
    """Write model.safetensors (+ state.pt) + config.json into ``path`` atomically: everything goes to
    ``.tmp-NAME``, then ``NAME`` -> ``.old-NAME``, ``.tmp-NAME`` -> ``NAME``, and ``.old-NAME`` is removed. A kill
    between the two renames leaves ``.old-NAME`` (complete), which ``--resume`` recovers (runlog.py)."""
    import shutil

    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    old = path.with_name(f".old-{path.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(sd, str(tmp / "model.safetensors"))
        if state is not None:
            torch.save(state, tmp / "state.pt")
        (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=list) + "\n")
        model.save_towers(tmp / "towers")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written checkpoint behind
        raise
    if old.exists():  # a leftover of an interrupted earlier swap; `path` is complete
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    _between_renames()
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)


def _between_renames() -> None:
    """A hook for tests: a kill here is the worst moment of a checkpoint swap (no ``last/`` on disk)."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A run dir (-> best/, else last/) or a checkpoint dir -> the checkpoint dir."""
    p = Path(path)
    if (p / "model.safetensors").exists():
        return p
    for sub in ("best", "last"):
        if (p / sub / "model.safetensors").exists():
            return p / sub
    raise FileNotFoundError(
        f"{p}: no model.safetensors here or in {p}/best or {p}/last; give a cxrtrain run "
        f"folder or one of its checkpoint folders"
    )


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[CLIPModel, dict]:
    """Rebuild the model from config.json (+ the saved tower configs in towers/, so neither the hub nor the
    original encoder directories are needed) and load its weights; returns (model in eval mode, config)."""
    from safetensors.torch import load_file

    ck = resolve_checkpoint(path)
    conf = json.loads((ck / "config.json").read_text())
    try:
        cfg = config_from_dict(conf)
    except (KeyError, TypeError, AttributeError) as e:  # a config.json that is not a cxrtrain config
        raise ValueError(f"{ck}/config.json: not a cxrtrain checkpoint config ({type(e).__name__}: {e})") from None
    towers = ck / "towers"
    model = create_model(cfg.model, towers_dir=towers if (towers / "image" / "config.json").exists() else None)
    try:
        weights = load_file(str(ck / "model.safetensors"), device=map_location)
    except Exception as e:  # safetensors raises its own SafetensorError for a truncated/corrupt file
        if type(e).__name__ not in ("SafetensorError", "HeaderTooLarge"):
            raise
        raise ValueError(f"{ck}/model.safetensors: truncated or corrupt ({e})") from None
    check_shapes(model, weights, ck)  # another tower or size: one line, not torch's dump of every tensor
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise ValueError(
            f"{ck}: weights do not match the model in config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval(), conf


def training_state(opt, sched, scaler, progress: dict) -> dict:
    """state.pt's content: optimizer, scheduler, scaler, the CPU RNG and the loop position (``progress``: step,
    epoch, step_in_epoch, best_val, bad_epochs)."""
    return dict(
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        scaler=scaler.state_dict(),
        **progress,
        rng_cpu=torch.get_rng_state(),
    )


def restore_training_state(path: Path, model: CLIPModel, opt, sched, scaler, device: torch.device) -> dict:
    """Load ``path``'s weights into ``model`` and its state.pt into the optimizer, scheduler, scaler and the CPU
    RNG; returns the loop position (step, epoch, step_in_epoch, best_val, bad_epochs)."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path / "model.safetensors"), device=str(device)))
    st = load_state(path / "state.pt")  # a refused pickle or a damaged file: one line naming it
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    scaler.load_state_dict(st["scaler"])
    torch.set_rng_state(st["rng_cpu"])
    return {k: st[k] for k in ("step", "epoch", "step_in_epoch", "best_val", "bad_epochs")}
