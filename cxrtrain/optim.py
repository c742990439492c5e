"""AdamW's parameter groups (no weight decay on norms, biases and the temperature) and the learning-rate
schedule (linear warm-up, then cosine decay to 0, per step)."""

from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not decay_all and (
            p.ndim < 2 or "norm" in name.lower() or name.endswith("logit_scale") or name.endswith(".bias")
        ):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f
