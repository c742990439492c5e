"""Streaming shard loader: study-level sampling, sentence sampling, online augmentation, batches.

* Every dataset folder under the shard roots is opened with its schema checked (cxrprep.shards).
* Order (cxrtrain.sampling): row groups are shuffled each epoch (seeded by seed + epoch) and dealt
  round-robin to (DDP rank, DataLoader worker) streams; ``dataset_weights`` sets the share of a dataset's
  row groups used per epoch (2.0 = twice, 0.5 = a seeded half). Each stream cycles over its row groups, so
  every rank can deliver the same number of batches (DDP needs that); an epoch is a fixed number of steps.
* Each dataset's rows pass through its own shuffle buffer and the datasets are interleaved by a seeded
  permutation, so a batch's dataset shares are those of a uniform shuffle; a study whose patient is already
  in the batch waits for the next one (``avoid_same_patient``). Rows are filtered by split (train / validate).
* Study-level sampling (CXR-CLIP): two images of two distinct views when the study has them (else the same
  image twice, augmented independently), and two texts: findings and impression (each replaced by one of
  its back-translations with ``bt_prob``) for report datasets, two distinct prompt reports for label
  datasets; the two texts differ whenever the study has any alternative (``pick_texts``). Random sentence
  sampling (Jang et al.) replaces each text by a random subset of the study's sentences (of the prompt
  variant's sentences for label datasets); ``shuffle_sentences`` shuffles sentence order. Validation
  texts and images are deterministic (the same every epoch).
* Augmentation as CXR-CLIP's (no torchvision; same algorithms): random resized crop whose box always lies
  inside the image (area scale 0.8-1.1 of the image, aspect 3/4-4/3, torchvision's 10 tries and centre-crop
  fallback; no padding), CLAHE, then brightness (x U(0.9, 1.1)) and contrast (U(0.8, 1.2) around the mean)
  jitter. CLAHE is either the offline copy in the shards (``clahe: offline``, clip 2.0 before cropping,
  the fast default) or computed online after the crop with a clip limit ~ U(1, 4) (``clahe: online``, as
  CXR-CLIP), each with probability ``clahe_prob``. Evaluation: shorter side to the input size and a centre
  crop. Normalisation from the model preset.
* Determinism and exact resume: every random choice comes from generators seeded by (seed, epoch, rank,
  worker, sample index), and a resumed epoch skips the batches already trained on without decoding them.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cxrprep.schema import COLUMNS as SCHEMA_COLUMNS
from cxrprep.shards import ShardDataset
from cxrtrain.prompt_render import renderer_for
from cxrtrain.sampling import build_index, patient_batches, plan_cycle
from cxrtrain.textsample import pick_texts, split_sentences  # noqa: F401  (kept importable from here)
from cxrtrain.transforms import (  # noqa: F401  (kept importable from here)
    augment_u8,
    center_u8,
    clahe_u8,
    crop_box,
    decode_gray,
    eval_transform,
    jitter_u8,
    normalize,
    train_transform,
)
from cxrtrain.usable import has_text

cv2.setNumThreads(1)

#: The columns training reads: every column of the shard schema but the source, the raw sections and the
#: fallback flag.
COLUMNS = [c for c in SCHEMA_COLUMNS if c not in ("source", "sections", "fallback")]


# -- study-level sampling ----------------------------------------------------------------------------
def pick_images(images: list[dict], rng: random.Random) -> tuple[dict, dict]:
    """Two images of distinct views when the study has them, else two distinct images, else one twice."""
    by_view: dict = {}
    for im in images:
        by_view.setdefault(im.get("view"), []).append(im)
    if len(by_view) >= 2:
        v1, v2 = rng.sample(sorted(by_view, key=str), 2)
        return rng.choice(by_view[v1]), rng.choice(by_view[v2])
    if len(images) >= 2:
        a, b = rng.sample(range(len(images)), 2)
        return images[a], images[b]
    return images[0], images[0]


@dataclass
class StreamSpec:
    rank: int = 0
    world_size: int = 1


class StudyStream(IterableDataset):
    """Yields collated batches: {"images1", "images2": uint8 [B,1,S,S] (``normalize`` them on the device),
    "text1", "text2": token dicts (absent when ``tokenizer`` is None), "texts1", "texts2": the strings,
    "study_id"}.

    ``train=True``: infinite, shuffled, augmented; the trainer takes a fixed number of batches per epoch.
    ``train=False``: one deterministic pass over the split (validation), eval transform."""

    def __init__(
        self,
        datasets: list[ShardDataset],
        split: str,
        cfg,
        tokenizer,
        batch_size: int,
        train: bool = True,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        log=None,
    ) -> None:
        self.datasets, self.split, self.cfg, self.tok = datasets, split, cfg, tokenizer
        self.batch_size, self.train, self.rank, self.world_size, self.seed = batch_size, train, rank, world_size, seed
        self.epoch = 0
        self.skip_batches = 0
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        # row ids of this split (small columns only; row groups without the split skipped by their statistics)
        self.index = build_index(datasets, split)
        # prompt_render: online (training only): a fresh prompt report per draw, from the study's labels
        online = train and getattr(cfg, "prompt_render", "offline") == "online"
        self.renderers = {d.name: renderer_for(d, cfg.prompt_templates) for d in datasets} if online else {}
        self.avoid_same_patient = bool(getattr(cfg, "avoid_same_patient", True)) and train
        if self.avoid_same_patient and 0 < self.index.patients() < batch_size:
            self.log(
                f"avoid_same_patient: the {split} split has {self.index.patients()} patient(s), fewer than a batch "
                f"of {batch_size}; same-patient pairs cannot be avoided, going on with them"
            )
            self.avoid_same_patient = False

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def _fetch(self, d: int, ids: list[tuple[int, int]]) -> Iterator[tuple[tuple[int, int], dict]]:
        """The rows of ``ids`` (all of dataset ``d``, group by group): one row group read at a time."""
        current, rows = None, []
        for g, pos in ids:
            if g != current:
                current = g
                batches = self.datasets[d].iter_batches(COLUMNS, row_groups=[self.index.groups[g][1]])
                rows = [r for b in batches for r in b.to_pylist()]
            yield (g, pos), rows[pos]

    def _rows(self, stream_id: int, n_streams: int) -> Iterator[dict]:
        """Rows of this stream in training order (cxrtrain.sampling.plan_cycle), pass after pass."""
        cycle = 0
        while True:
            any_row = False
            for _, row in plan_cycle(
                self.index,
                self.seed,
                self.epoch,
                cycle,
                stream_id,
                n_streams,
                self.cfg.shuffle_buffer,
                self.cfg.dataset_weights,
                fetch=self._fetch,
                train=self.train,
            ):
                if not has_text(row, self.cfg, self.train):
                    continue  # a row without text would be drawn and dropped forever (issue 20)
                any_row = True
                yield row
            if not self.train:
                return
            if not any_row:
                raise RuntimeError(
                    f"no {self.split} rows with images and text in the shards for stream {stream_id} "
                    f"({', '.join(d.name for d in self.datasets)}); check the split column and dataset_weights"
                )
            cycle += 1

    def _text_rng(self, row: dict, key: list[int]) -> random.Random:
        # validation is the same every epoch: its randomness depends on the study only
        return random.Random("/".join(map(str, key)) if self.train else f"validate/{self.seed}/{row['study_id']}")

    def _texts(self, row: dict, key: list[int]) -> tuple[tuple[str, str] | None, random.Random]:
        """(the two texts or None, the study's generator after drawing them: images are drawn next)"""
        rng = self._text_rng(row, key)
        renderer = self.renderers.get(row["dataset"])
        if renderer is not None and row.get("labels") is not None:
            row = dict(row, prompts=renderer.two(row["labels"], rng))
        return pick_texts(row, rng, self.cfg, train=self.train), rng

    def _sample(self, row: dict, key: list[int], texts: tuple[str, str], rng: random.Random) -> dict:
        """Both views of ``row`` (``texts`` and ``rng`` from ``_texts``)."""
        nrng = np.random.default_rng(key)
        im1, im2 = pick_images(row["images"], rng)
        out = []
        c = self.cfg
        for im in (im1, im2):
            offline = self.train and c.clahe == "offline" and im.get("image_clahe") and rng.random() < c.clahe_prob
            g = decode_gray(im["image_clahe"] if offline else im["image"])
            if self.train:
                a = augment_u8(
                    g,
                    c.model,
                    nrng,
                    c.crop_scale,
                    c.brightness,
                    c.contrast,
                    c.clahe_clip if c.clahe == "online" else None,
                    c.clahe_prob,
                )
            else:
                a = center_u8(g, c.model)
            out.append(torch.from_numpy(a)[None])  # uint8 [1,S,S]; normalised on the training device
        return dict(
            image1=out[0],
            image2=out[1],
            text1=texts[0],
            text2=texts[1],
            study_id=row["study_id"],
            dataset=row["dataset"],
            subject_id=row["subject_id"],
        )

    def _collate(self, samples: list[dict]) -> dict:
        m = self.cfg.model
        tok = lambda texts: {
            k: v
            for k, v in self.tok(
                texts,
                padding=True,
                truncation=True,  # noqa: E731
                max_length=m.max_text_len,
                return_tensors="pt",
            ).items()
            if k in ("input_ids", "attention_mask")
        }
        t1, t2 = [s["text1"] for s in samples], [s["text2"] for s in samples]
        out = dict(
            images1=torch.stack([s["image1"] for s in samples]),
            images2=torch.stack([s["image2"] for s in samples]),
            study_id=[s["study_id"] for s in samples],
            dataset=[s["dataset"] for s in samples],
            subject_id=[s["subject_id"] for s in samples],
            texts1=t1,
            texts2=t2,
        )
        if self.tok is not None:  # no tokenizer: raw texts only (cxrtrain batch)
            out.update(text1=tok(t1), text2=tok(t2))
        return out

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        stream_id, n_streams = self.rank * nw + wid, self.world_size * nw
        # batches of this worker already trained on (the DataLoader takes batches round-robin from workers)
        m = self.skip_batches
        skip = m // nw + (1 if wid < m % nw else 0)

        def rows() -> Iterator[tuple[tuple, tuple]]:
            for k, row in enumerate(self._rows(stream_id, n_streams), 1):
                key = [self.seed, self.epoch, stream_id, k]  # k: rows consumed by this stream
                texts, trng = self._texts(row, key)
                if texts is not None:
                    study = ("study", row["dataset"], row["study_id"])
                    patient = ("patient", row["dataset"], row["subject_id"])
                    yield (study, patient) if self.avoid_same_patient else (study,), (row, key, texts, trng)

        batches = patient_batches(rows(), self.batch_size, distinct=self.train, warn=self.log)
        for nbatch, batch in enumerate(batches):
            if nbatch < skip:  # resume: replay the stream without decoding images
                continue
            yield self._collate([self._sample(*item) for item in batch])


def distinct_batches(items: Iterable[tuple[str, object]], size: int, distinct: bool = True) -> Iterator[list]:
    """Batches of ``size`` payloads from (study_id, payload) pairs, in order, except that (``distinct``) a
    study already in the batch waits for the next one: a study seen twice in one batch would be its own
    false negative in the contrastive loss. That happens when the shuffle buffer spans the end of one pass
    over a small dataset and the start of the next. The last, partial batch is yielded too (validation).
    ``cxrtrain.sampling.patient_batches`` with the study as the only key."""
    return patient_batches((((sid,), obj) for sid, obj in items), size, distinct=distinct)


def count_rows(datasets: list[ShardDataset], split: str) -> int:
    """Rows of ``split`` that have images (reads only small columns: no image bytes)."""
    return build_index(datasets, split).count()
