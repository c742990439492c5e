"""Evaluation protocol presets: ``--protocol cxr-clip`` (the seed's tables, exactly) and ``cxrkit``.

Every choice a benchmark number depends on is one entry of ``PROTOCOLS[name]``; ``cxrtrain eval`` and
``bench-suite`` record the preset and its choices in metrics.json and name it in their table header.
docs/protocols.md has the table (each choice, CXR-CLIP's value with its source, cxrkit's value).

CXR-CLIP's values are transcribed from kakaobrain/cxr-clip at commit
fd9fac5e57eb29e6aa2acc7db7f2f07ba73f4a02 (``CXR_CLIP_COMMIT``): cxrclip/evaluator.py (prompts, ensembling,
F1 rule, retrieval), cxrclip/prompt/constants.py (VinDr's 18 classes, the GLoRIA grid), configs/finetune_10.yaml
and finetune_100.yaml (probe: frozen backbone, data_frac 0.1 / 1.0, seed 1234, clahe transform, AdamW
configs/optimizer/adamw.yaml lr 5e-5 weight decay 1e-4, batch 256 with drop_last from
configs/dataloader/dataloader_256.yaml, configs/scheduler/cosine_epoch300_warmup3.yaml and
cosine_epoch30_warmup3.yaml: 300 / 30 epochs, warmup_epochs 0.1), cxrclip/scheduler/warmup_cosine.py and
cxrclip/trainer.py (the schedule below).
"""

from __future__ import annotations

import math

import numpy as np

CXR_CLIP_COMMIT = "fd9fac5e57eb29e6aa2acc7db7f2f07ba73f4a02"

#: cxrclip/prompt/constants.py VINDR_CXR: the 18 VinDr-CXR classes CXR-CLIP scores (spelled as there)
VINDR_18 = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Mediastinal shift",
    "Nodule/Mass",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "Rib fracture",
    "Lung tumor",
    "Pneumonia",
    "Tuberculosis",
)

PROTOCOLS: dict[str, dict] = {
    "cxrkit": dict(
        prompts="eval",
        multiclass_prompts="eval (multiclass: GLoRIA-style grids, de-duplicated)",
        ensemble="mean-similarity",
        f1_rule="threshold",  # the max-F1 threshold chosen on another split (validate for test)
        retrieval_datasets=("mimic-5x200", "mimic-cxr", "openi"),
        retrieval_directions=("image_to_text", "text_to_image"),
        retrieval_text="impression",
        rsum="image->text R@1+R@5+R@10 summed over the retrieval datasets present",
        openi_image="first image of the study (a PA/AP view when there is one)",
        vindr_classes="all 28 label columns with a prompt pair",
        vindr_readers="majority",
        split_method="hash",
        probe=dict(
            features="cached, un-augmented (eval transform)",
            schedule="early stopping on validate AUROC, epoch cap doubles",
            fractions=(0.1, 1.0),
        ),
    ),
    "cxr-clip": dict(
        prompts="cxr-clip-protocol",
        multiclass_prompts="cxr-clip-protocol (the GLoRIA grid as CXR-CLIP copies it: 210/15/192/18/54)",
        ensemble="mean-similarity",
        f1_rule="argmax",  # predicted positive when s_pos > s_neg (softmax > 0.5)
        retrieval_datasets=("chexpert-5x200", "mimic-cxr", "openi"),
        retrieval_directions=("image_to_text",),
        retrieval_text="max (max(findings, impression) as strings: Open-I per datasets/README.md; the 5x200 "
        "impression; MIMIC's test text column is not published)",
        rsum="image->text R@1+R@5+R@10 summed over chexpert-5x200, mimic-cxr and openi (Table 3)",
        openi_image="the frontal image of the study",
        vindr_classes=VINDR_18,
        vindr_readers="any",
        split_method="gloria",
        probe=dict(
            features="frozen image encoder, training augmentation (clahe transform)",
            optimizer="AdamW",
            lr=5e-5,
            weight_decay=1e-4,
            batch_size=256,
            drop_last=True,
            epochs={0.1: 300, 1.0: 30},
            warmup_fraction=0.1,
            schedule="linear warm-up over ceil(0.1 * total steps), then cos^2 decay to 0, stepped per batch",
            seed=1234,
            fractions=(0.1, 1.0),
            subset="one seeded subset per fraction",
        ),
    ),
}


def protocol(name: str) -> dict:
    """The choices of preset ``name``; ValueError naming ``--protocol`` for an unknown one."""
    if name not in PROTOCOLS:
        raise ValueError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {name!r}")
    return PROTOCOLS[name]


def warmup_cosine_multiplier(step: int, total_steps: int, warmup_steps: int) -> float:
    """CXR-CLIP's LR multiplier at scheduler step ``step`` (0-based): ``step / warmup`` while warming up,
    then cos(pi/2 * (step - warmup) / (total - warmup))**2, never below 0."""
    if step < warmup_steps:
        return step / float(max(1, warmup_steps))
    return max(0.0, math.cos((step - warmup_steps) / (total_steps - warmup_steps) * (math.pi / 2)) ** 2)


def probe_lr_schedule(steps_per_epoch: int, epochs: int, base_lr: float = 5e-5, warmup_fraction: float = 0.1):
    """The learning rate of each optimiser step of a CXR-CLIP probe: total = steps_per_epoch * epochs,
    warm-up = ceil(total * warmup_fraction) steps; step ``i`` uses ``base_lr * multiplier(i)`` (LambdaLR
    starts at multiplier(0) and is stepped after every batch)."""
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"a probe needs >= 1 step per epoch and >= 1 epoch, got {steps_per_epoch} x {epochs}")
    total = steps_per_epoch * epochs
    warm = math.ceil(total * warmup_fraction)
    if warm >= total:
        raise ValueError(f"warm-up ({warm} steps) must be shorter than training ({total} steps)")
    return [base_lr * warmup_cosine_multiplier(i, total, warm) for i in range(total)]


def pandas_sample(n: int, frac: float, seed: int) -> np.ndarray:
    """Positions ``DataFrame.sample(frac=frac, random_state=seed)`` keeps, in its order: the first
    round(frac * n) of ``numpy.random.RandomState(seed).permutation(n)`` (CXR-CLIP's probe subset,
    cxrclip/data/datasets/image_classification.py: data_frac 0.1, random_state 1; checked against pandas)."""
    return np.random.RandomState(seed).permutation(n)[: round(frac * n)]


def lr_lambda(steps_per_epoch: int, epochs: int, warmup_fraction: float = 0.1):
    """The multiplier as a ``torch.optim.lr_scheduler.LambdaLR`` function (for a probe trained in torch)."""
    total = steps_per_epoch * epochs
    warm = math.ceil(total * warmup_fraction)
    return lambda step: warmup_cosine_multiplier(step, total, warm)


__all__ = [
    "CXR_CLIP_COMMIT",
    "PROTOCOLS",
    "VINDR_18",
    "lr_lambda",
    "pandas_sample",
    "probe_lr_schedule",
    "protocol",
    "warmup_cosine_multiplier",
]
