"""Loading a checkpoint's files with one-line messages naming the file (issue 20): weights of another shape
(a checkpoint of another tower or size) and a state.pt that holds more than tensors and numbers."""

from __future__ import annotations

from pathlib import Path

import torch


def check_shapes(model: torch.nn.Module, weights: dict, ck: Path) -> None:
    """Weights of another shape (a checkpoint of another tower or size under this config.json) -> one line
    naming the first ones, instead of torch's dump of every mismatch."""
    own = model.state_dict()
    bad = [k for k, v in weights.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        first = ", ".join(f"{k}: {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in bad[:2])
        raise ValueError(
            f"{ck}/model.safetensors: {len(bad)} tensor(s) do not fit the model that {ck}/config.json describes "
            f"(checkpoint vs model: {first}); the weights come from another model or tower"
        )


def load_state(path: Path) -> dict:
    """state.pt of a checkpoint (optimizer, scheduler, counters), loaded with weights_only: a file holding
    other objects (a pickle that could run code) is refused, with one line naming it."""
    import pickle

    from cxrtrain.runlog import UsageError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = " ".join(str(e).split(".")[0].split())[:160]
        raise UsageError(
            f"{path}: refused to load: it holds objects other than tensors and numbers ({first}); a state.pt "
            f"cxrtrain wrote never does: do not resume from it (start again with --overwrite)"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise UsageError(
            f"{path}: cannot read ({' '.join(str(e).split())[:200]}); it is truncated or damaged"
        ) from None
