"""Streaming shard loader: study-level sampling, sentence sampling, online augmentation, batches.

* Every dataset folder under the shard roots is opened with its schema checked (cxrprep.shards).
* Row groups are the unit of distribution: each epoch they are shuffled (seeded by seed + epoch) and dealt
  round-robin to (DDP rank, DataLoader worker) streams; ``dataset_weights`` sets the share of a dataset's
  row groups used per epoch (2.0 = twice, 0.5 = a seeded half). Each stream cycles over its row groups, so
  every rank can deliver the same number of batches (DDP needs that); an epoch is a fixed number of steps.
* A shuffle buffer mixes rows inside a stream. Rows are filtered by split (train / validate).
* Study-level sampling (CXR-CLIP): two images of two distinct views when the study has them (else the same
  image twice, augmented independently), and two texts: findings and impression (each replaced by one of
  its back-translations with ``bt_prob``) for report datasets, two distinct prompt reports for label
  datasets. Random sentence sampling (Jang et al.) replaces each text by a random subset of the study's
  sentences; ``shuffle_sentences`` shuffles sentence order.
* Augmentation (no torchvision): random resized crop (area scale 0.8-1.1, aspect 3/4-4/3; one affine warp
  does crop, pad and resize), the offline CLAHE copy with ``clahe_prob``, brightness/contrast jitter;
  evaluation: shorter side to the input size and a centre crop. Normalisation from the model preset.
* Determinism and exact resume: every random choice comes from generators seeded by (seed, epoch, rank,
  worker, sample index), and a resumed epoch skips the batches already trained on without decoding them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cxrprep.shards import RowGroup, ShardDataset

cv2.setNumThreads(1)

COLUMNS = ["study_id", "split", "findings", "impression", "findings_sentences", "impression_sentences",
           "findings_bt", "impression_bt", "prompts", "images"]


def decode_gray(data: bytes) -> np.ndarray:
    """Shard image bytes (JPEG/PNG) -> uint8 HxW."""
    a = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if a is None:
        raise ValueError("shard image bytes are not a decodable JPEG/PNG")
    return a


def normalize(x: torch.Tensor, cfg) -> torch.Tensor:
    """uint8 grey images [..., 1, S, S] (any device) -> float [..., 3, S, S] normalised with the preset's
    mean/std. Batches travel from loader workers as uint8 (4x less to copy) and are normalised here, on the
    training device."""
    x = x.float().div_(255.0)
    shape = [1] * (x.dim() - 3) + [len(cfg.image_mean), 1, 1]
    m = torch.tensor(cfg.image_mean, device=x.device).view(shape)
    s = torch.tensor(cfg.image_std, device=x.device).view(shape)
    return (x.expand(*x.shape[:-3], len(cfg.image_mean), *x.shape[-2:]) - m) / s


def center_u8(gray: np.ndarray, cfg) -> np.ndarray:
    """Evaluation geometry: shorter side to cfg.image_size (INTER_AREA down, linear up), centre crop."""
    s = cfg.image_size
    h, w = gray.shape
    k = s / min(h, w)
    nh, nw = max(s, round(h * k)), max(s, round(w * k))
    a = cv2.resize(gray, (nw, nh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    y, x = (nh - s) // 2, (nw - s) // 2
    return np.ascontiguousarray(a[y:y + s, x:x + s])


def augment_u8(gray: np.ndarray, cfg, rng: np.random.Generator, scale=(0.8, 1.1), jitter=0.1) -> np.ndarray:
    """Random resized crop (one affine warp: crop + pad + resize) and brightness/contrast jitter."""
    s = cfg.image_size
    h, w = gray.shape
    area = h * w * rng.uniform(*scale)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = np.sqrt(area * ratio), np.sqrt(area / ratio)
    x0 = rng.uniform(min(0, w - cw), max(0, w - cw))
    y0 = rng.uniform(min(0, h - ch), max(0, h - ch))
    m = np.array([[s / cw, 0, -x0 * s / cw], [0, s / ch, -y0 * s / ch]], np.float32)
    interp = cv2.INTER_AREA if cw > 2 * s else cv2.INTER_LINEAR
    a = cv2.warpAffine(gray, m, (s, s), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if jitter:
        b = rng.uniform(1 - jitter, 1 + jitter)
        c = rng.uniform(1 - jitter, 1 + jitter)
        mean = float(a.mean())
        a = np.clip((a.astype(np.float32) - mean) * c + mean * b, 0, 255).astype(np.uint8)
    return a


def eval_transform(gray: np.ndarray, cfg) -> torch.Tensor:
    """Shorter side to the input size, centre crop, normalise -> [3,S,S] float."""
    return normalize(torch.from_numpy(center_u8(gray, cfg))[None], cfg)


def train_transform(gray: np.ndarray, cfg, rng: np.random.Generator, scale=(0.8, 1.1), jitter=0.1) -> torch.Tensor:
    """Augmented view -> [3,S,S] float."""
    return normalize(torch.from_numpy(augment_u8(gray, cfg, rng, scale, jitter))[None], cfg)


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


def _section_text(sentences: list[str], text: str | None, bt: list[str], rng: random.Random, cfg) -> str | None:
    if bt and rng.random() < cfg.bt_prob:
        return rng.choice(bt)
    if cfg.shuffle_sentences and len(sentences) > 1:
        s = list(sentences)
        rng.shuffle(s)
        return " ".join(s)
    return text


def pick_texts(row: dict, rng: random.Random, cfg) -> tuple[str, str] | None:
    """Two texts of a study, or None when it has no usable text."""
    prompts = row.get("prompts") or []
    if prompts:
        if len(prompts) >= 2:
            a, b = rng.sample(range(len(prompts)), 2)
            return prompts[a], prompts[b]
        return prompts[0], prompts[0]
    if cfg.sentence_sampling:
        pool: list[str] = []
        for sec in cfg.sentence_sections.split(","):
            pool += row.get(f"{sec}_sentences") or []
        if not pool:
            return None
        out = []
        for _ in range(2):
            k = rng.randint(min(cfg.sentences_min, len(pool)), min(cfg.sentences_max, len(pool)))
            idx = sorted(rng.sample(range(len(pool)), k))
            if cfg.shuffle_sentences:
                rng.shuffle(idx)
            out.append(" ".join(pool[i] for i in idx))
        return out[0], out[1]
    texts = []
    for sec in ("findings", "impression"):
        t = _section_text(row.get(f"{sec}_sentences") or [], row.get(sec), row.get(f"{sec}_bt") or [], rng, cfg)
        if t:
            texts.append(t)
    if not texts:
        return None
    if len(texts) == 1:  # one section: its second view is a back-translation or a sentence shuffle
        sec = "findings" if row.get("findings") else "impression"
        bt = row.get(f"{sec}_bt") or []
        sents = list(row.get(f"{sec}_sentences") or [])
        if bt:
            return texts[0], rng.choice(bt)
        rng.shuffle(sents)
        return texts[0], " ".join(sents) or texts[0]
    if rng.random() < 0.5:
        texts.reverse()
    return texts[0], texts[1]


@dataclass
class StreamSpec:
    rank: int = 0
    world_size: int = 1


class StudyStream(IterableDataset):
    """Yields collated batches: {"images1", "images2": uint8 [B,1,S,S] (``normalize`` them on the device),
    "text1", "text2": token dicts, "study_id"}.

    ``train=True``: infinite, shuffled, augmented; the trainer takes a fixed number of batches per epoch.
    ``train=False``: one deterministic pass over the split (validation), eval transform."""

    def __init__(self, datasets: list[ShardDataset], split: str, cfg, tokenizer, batch_size: int,
                 train: bool = True, rank: int = 0, world_size: int = 1, seed: int = 0) -> None:
        self.datasets, self.split, self.cfg, self.tok = datasets, split, cfg, tokenizer
        self.batch_size, self.train, self.rank, self.world_size, self.seed = batch_size, train, rank, world_size, seed
        self.epoch = 0
        self.skip_batches = 0
        # only row groups that can hold rows of this split (Parquet min/max statistics of the split column)
        self._groups = [(d, g) for d in datasets for g in d.row_groups() if _may_hold(g, split)]

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def _epoch_groups(self, cycle: int) -> list[tuple[ShardDataset, RowGroup]]:
        rng = random.Random(f"{self.seed}:{self.epoch}:{cycle}")
        groups: list = []
        for d in self.datasets:
            mine = [(d, g) for dd, g in self._groups if dd is d]
            w = float(self.cfg.dataset_weights.get(d.name, 1.0))
            reps, frac = int(w), w - int(w)
            chosen = mine * reps + rng.sample(mine, round(frac * len(mine)))
            groups += chosen
        if self.train:
            rng.shuffle(groups)
        return groups

    def _rows(self, stream_id: int, n_streams: int) -> Iterator[dict]:
        cycle = 0
        while True:
            groups = self._epoch_groups(cycle)
            # enough row groups: deal them out; too few (small datasets): every stream reads all of them and
            # keeps every n-th row, so no rank or worker is left without data
            by_group = len(groups) >= 2 * n_streams
            mine = groups[stream_id::n_streams] if by_group else groups
            any_row = False
            k = -1
            for d, g in mine:
                for b in d.iter_batches(COLUMNS, row_groups=[g], split=self.split):
                    for row in b.to_pylist():
                        if not row["images"]:
                            continue
                        k += 1
                        if by_group or k % n_streams == stream_id:
                            any_row = True
                            yield row
            if not self.train:
                return
            if not any_row:
                raise RuntimeError(f"no {self.split} rows with images in the shards for stream {stream_id}; "
                                   f"check the split column and dataset_weights")
            cycle += 1

    def _shuffled(self, rows: Iterator[dict], rng: random.Random) -> Iterator[dict]:
        if not self.train or self.cfg.shuffle_buffer <= 1:
            yield from rows
            return
        buf: list[dict] = []
        for r in rows:
            buf.append(r)
            if len(buf) >= self.cfg.shuffle_buffer:
                i = rng.randrange(len(buf))
                buf[i], buf[-1] = buf[-1], buf[i]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf

    def _sample(self, row: dict, key: list[int]) -> dict | None:
        rng = random.Random("/".join(map(str, key)))
        nrng = np.random.default_rng(key)
        texts = pick_texts(row, rng, self.cfg)
        if texts is None:
            return None
        im1, im2 = pick_images(row["images"], rng)
        out = []
        for im in (im1, im2):
            data = im["image_clahe"] if (self.train and im.get("image_clahe") and rng.random() < self.cfg.clahe_prob) \
                else im["image"]
            g = decode_gray(data)
            a = augment_u8(g, self.cfg.model, nrng, self.cfg.crop_scale, self.cfg.jitter) if self.train \
                else center_u8(g, self.cfg.model)
            out.append(torch.from_numpy(a)[None])  # uint8 [1,S,S]; normalised on the training device
        return dict(image1=out[0], image2=out[1], text1=texts[0], text2=texts[1], study_id=row["study_id"])

    def _collate(self, samples: list[dict]) -> dict:
        m = self.cfg.model
        tok = lambda texts: {k: v for k, v in self.tok(texts, padding=True, truncation=True,  # noqa: E731
                                                         max_length=m.max_text_len, return_tensors="pt").items()
                             if k in ("input_ids", "attention_mask")}
        return dict(images1=torch.stack([s["image1"] for s in samples]),
                    images2=torch.stack([s["image2"] for s in samples]),
                    text1=tok([s["text1"] for s in samples]), text2=tok([s["text2"] for s in samples]),
                    study_id=[s["study_id"] for s in samples])

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        stream_id, n_streams = self.rank * nw + wid, self.world_size * nw
        rng = random.Random(f"{self.seed}:{self.epoch}:buf:{stream_id}")
        # batches of this worker already trained on (the DataLoader takes batches round-robin from workers)
        m = self.skip_batches
        skip = m // nw + (1 if wid < m % nw else 0)
        batch: list[dict] = []
        k = 0  # rows consumed by this stream
        nbatch = 0
        for row in self._shuffled(self._rows(stream_id, n_streams), rng):
            k += 1
            key = [self.seed, self.epoch, stream_id, k]
            if nbatch < skip:  # resume: replay the stream without decoding images
                if pick_texts(row, random.Random("/".join(map(str, key))), self.cfg) is not None:
                    batch.append(None)
                    if len(batch) == self.batch_size:
                        batch, nbatch = [], nbatch + 1
                continue
            s = self._sample(row, key)
            if s is None:
                continue
            batch.append(s)
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch, nbatch = [], nbatch + 1
        if batch and not self.train and all(b is not None for b in batch):
            yield self._collate(batch)


def _may_hold(g: RowGroup, split: str) -> bool:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(g.path).metadata.row_group(g.index)
    for i in range(md.num_columns):
        col = md.column(i)
        if col.path_in_schema == "split" and col.is_stats_set and col.statistics.has_min_max:
            return col.statistics.min <= split <= col.statistics.max
    return True


def count_rows(datasets: list[ShardDataset], split: str) -> int:
    """Rows of ``split`` that have images (reads only two small columns)."""
    import pyarrow.compute as pc

    n = 0
    for d in datasets:
        for b in d.iter_batches(["split", "images"], split=split):
            n += int(pc.sum(pc.greater(pc.list_value_length(b.column("images")), 0)).as_py() or 0)
    return n
