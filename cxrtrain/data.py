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
import re
import sys
from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cxrprep.shards import ShardDataset
from cxrtrain.prompt_render import renderer_for
from cxrtrain.sampling import build_index, patient_batches, plan_cycle

cv2.setNumThreads(1)

COLUMNS = [
    "dataset",
    "study_id",
    "subject_id",
    "split",
    "findings",
    "impression",
    "findings_sentences",
    "impression_sentences",
    "findings_bt",
    "impression_bt",
    "prompts",
    "labels",
    "images",
]


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
    return np.ascontiguousarray(a[y : y + s, x : x + s])


def crop_box(
    h: int, w: int, rng: np.random.Generator, scale=(0.8, 1.1), ratio=(3 / 4, 4 / 3), tries: int = 10
) -> tuple[int, int, int, int]:
    """Random resized crop box (top, left, height, width), always inside an HxW image, by the algorithm of
    torchvision's ``RandomResizedCrop.get_params`` (which CXR-CLIP uses): up to ``tries`` draws of an area
    fraction from U(scale) and a log-uniform aspect ratio; the first box that fits (w <= W, h <= H, so a
    fraction above 1 only fits when the aspect lets it) is placed uniformly; if none fits, the centre crop
    of the whole image with the aspect clamped to ``ratio``. Nothing is ever padded."""
    area = h * w
    lo, hi = np.log(ratio[0]), np.log(ratio[1])
    for _ in range(tries):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(lo, hi)))
        cw = int(round(np.sqrt(target * aspect)))
        ch = int(round(np.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return top, left, ch, cw
    in_ratio = w / h
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def clahe_u8(a: np.ndarray, clip: float, tiles: int = 8) -> np.ndarray:
    """CLAHE with clip limit ``clip`` on a tiles x tiles grid (OpenCV; albumentations' CLAHE is the same call)."""
    return cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(tiles, tiles)).apply(a)


def jitter_u8(a: np.ndarray, rng: np.random.Generator, brightness: float = 0.1, contrast: float = 0.2) -> np.ndarray:
    """Brightness and contrast jitter as torchvision's ColorJitter on a grey image (CXR-CLIP): brightness
    multiplies by b ~ U(1-brightness, 1+brightness); contrast blends with the image mean, c*x + (1-c)*mean,
    c ~ U(1-contrast, 1+contrast); the two are applied in random order, each result clipped to [0, 255]."""
    ops = []
    if brightness:
        ops.append(("b", rng.uniform(max(0.0, 1 - brightness), 1 + brightness)))
    if contrast:
        ops.append(("c", rng.uniform(max(0.0, 1 - contrast), 1 + contrast)))
    if not ops:
        return a
    if len(ops) == 2 and rng.random() < 0.5:
        ops.reverse()
    # both operations are per-pixel maps of a uint8 image once the mean is known, so they compose into one
    # 256-entry lookup table; the mean after the first map comes from the histogram (no float image pass)
    hist = cv2.calcHist([a], [0], None, [256], [0, 256]).ravel().astype(np.float64)
    lut = np.arange(256, dtype=np.float64)
    for kind, f in ops:
        if kind == "b":
            lut = np.clip(lut * f, 0, 255)
        else:
            m = float(hist @ lut) / max(1.0, hist.sum())
            lut = np.clip(lut * f + m * (1 - f), 0, 255)
    return cv2.LUT(a, (lut + 0.5).astype(np.uint8))


def augment_u8(
    gray: np.ndarray,
    cfg,
    rng: np.random.Generator,
    scale=(0.8, 1.1),
    brightness: float = 0.1,
    contrast: float = 0.2,
    clahe_clip: tuple[float, float] | None = None,
    clahe_prob: float = 0.0,
) -> np.ndarray:
    """CXR-CLIP's training transform on a grey uint8 image: random resized crop inside the image (``crop_box``)
    resized to the input size (pyramid halving while the crop is >= 2x the output, then bilinear), optional online
    CLAHE (probability ``clahe_prob``, clip limit ~ U(clahe_clip)),
    brightness/contrast jitter (``jitter_u8``)."""
    s = cfg.image_size
    h, w = gray.shape
    top, left, ch, cw = crop_box(h, w, rng, scale)
    crop = gray[top : top + ch, left : left + cw]
    # antialiasing, cheaply: halve with a Gaussian pyramid step while the crop is at least twice the output,
    # then bilinear (INTER_AREA at non-integer factors costs ~8x more for a similar result)
    while min(crop.shape) >= 2 * s:
        crop = cv2.pyrDown(crop)
    a = cv2.resize(crop, (s, s), interpolation=cv2.INTER_LINEAR)
    if clahe_clip is not None and clahe_prob > 0 and rng.random() < clahe_prob:
        a = clahe_u8(a, rng.uniform(*clahe_clip))
    return jitter_u8(a, rng, brightness, contrast)


def eval_transform(gray: np.ndarray, cfg) -> torch.Tensor:
    """Shorter side to the input size, centre crop, normalise -> [3,S,S] float."""
    return normalize(torch.from_numpy(center_u8(gray, cfg))[None], cfg)


def train_transform(
    gray: np.ndarray, cfg, rng: np.random.Generator, scale=(0.8, 1.1), brightness: float = 0.1, contrast: float = 0.2
) -> torch.Tensor:
    """Augmented view -> [3,S,S] float."""
    return normalize(torch.from_numpy(augment_u8(gray, cfg, rng, scale, brightness, contrast))[None], cfg)


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


_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A prompt report (template sentences joined by spaces) -> its sentences."""
    return [x for x in _SENT_END.split(text.strip()) if x]


def _distinct_pair(options: list[str], rng: random.Random) -> tuple[str, str]:
    """Two different strings out of ``options`` when there are two different ones, else one twice."""
    uniq = list(dict.fromkeys(o for o in options if o))
    if len(uniq) >= 2:
        a, b = rng.sample(range(len(uniq)), 2)
        return uniq[a], uniq[b]
    return (uniq[0], uniq[0]) if uniq else ("", "")


def _shuffled_text(sentences: list[str], rng: random.Random, avoid: str | None = None) -> str:
    """Sentences in a random order; when ``avoid`` is given and another order exists, never exactly ``avoid``."""
    s = list(sentences)
    for _ in range(8):
        rng.shuffle(s)
        t = " ".join(s)
        if avoid is None or t != avoid or len(set(s)) < 2:
            return t
    return " ".join(s[1:] + s[:1])  # a rotation differs from the original when two sentences differ


def _sample_sentences(pool: list[str], rng: random.Random, cfg) -> str:
    k = rng.randint(min(cfg.sentences_min, len(pool)), min(cfg.sentences_max, len(pool)))
    idx = sorted(rng.sample(range(len(pool)), k))
    if cfg.shuffle_sentences:
        rng.shuffle(idx)
    return " ".join(pool[i] for i in idx)


def _two_samples(pool: list[str], rng: random.Random, cfg) -> tuple[str, str]:
    """Jang et al.: two random sentence subsets, different from each other whenever the pool allows."""
    a = _sample_sentences(pool, rng, cfg)
    b = a
    for _ in range(8):
        b = _sample_sentences(pool, rng, cfg)
        if b != a:
            break
    return a, b


def pick_texts(row: dict, rng: random.Random, cfg, train: bool = True) -> tuple[str, str] | None:
    """Two texts of a study, or None when it has no usable text.

    Training (CXR-CLIP study-level sampling; the two texts are never the same string when the study has
    any alternative):

    * prompt reports (label datasets): two distinct prompt variants; with ``sentence_sampling`` each is a
      random subset of its variant's sentences, with ``shuffle_sentences`` its sentences are shuffled;
    * reports with findings and impression: the two sections, in random order, each replaced by one of its
      back-translations with probability ``bt_prob``;
    * one section only: the original and one of its back-translations (CXR-CLIP), else the original and a
      sentence shuffle of it;
    * ``sentence_sampling`` (Jang et al.): two random subsets of the sentences of ``sentence_sections``.

    Validation (``train=False``) is deterministic, so validation losses of two epochs compare: the first two
    distinct prompt variants; findings and impression as written (no back-translation, no shuffling); one
    section: the original and its first back-translation, else the section twice."""
    prompts = [p for p in (row.get("prompts") or []) if p]
    if prompts:
        if not train:
            uniq = list(dict.fromkeys(prompts))
            return uniq[0], uniq[1] if len(uniq) > 1 else uniq[0]
        a, b = _distinct_pair(prompts, rng)
        if cfg.sentence_sampling:
            sa, sb = split_sentences(a), split_sentences(b)
            ta, tb = _sample_sentences(sa, rng, cfg), _sample_sentences(sb, rng, cfg)
            for _ in range(8):
                if ta != tb:
                    break
                tb = _sample_sentences(sb, rng, cfg)
            return ta, tb
        if cfg.shuffle_sentences:
            a = _shuffled_text(split_sentences(a), rng)
            b = _shuffled_text(split_sentences(b), rng, avoid=a)
        return a, b
    secs = {sec: (row.get(sec) or "").strip() for sec in ("findings", "impression")}
    sents = {sec: list(row.get(f"{sec}_sentences") or []) for sec in secs}
    bts = {sec: [t for t in (row.get(f"{sec}_bt") or []) if t and t != secs[sec]] for sec in secs}
    if cfg.sentence_sampling and train:
        pool: list[str] = []
        for sec in cfg.sentence_sections.split(","):
            pool += sents.get(sec) or []
        if not pool:
            return None
        return _two_samples(pool, rng, cfg)
    present = [sec for sec in secs if secs[sec]]
    if not present:
        return None
    if not train:
        if len(present) == 2 and secs["findings"] != secs["impression"]:
            return secs["findings"], secs["impression"]
        sec = present[0]
        return secs[sec], (bts[sec][0] if bts[sec] else secs[sec])

    def one(sec: str) -> str:
        if bts[sec] and rng.random() < cfg.bt_prob:
            return rng.choice(bts[sec])
        if cfg.shuffle_sentences and len(sents[sec]) > 1:
            return _shuffled_text(sents[sec], rng)
        return secs[sec]

    if len(present) == 2 and secs["findings"] != secs["impression"]:
        texts = [one("findings"), one("impression")]
        if texts[0] == texts[1]:  # a back-translation can equal the other section: take the originals
            texts = [secs["findings"], secs["impression"]]
        if rng.random() < 0.5:
            texts.reverse()
        return texts[0], texts[1]
    sec = present[0]  # one section: the original and its back-translation (CXR-CLIP), else a sentence shuffle
    orig = _shuffled_text(sents[sec], rng) if cfg.shuffle_sentences and len(sents[sec]) > 1 else secs[sec]
    if bts[sec]:
        other = rng.choice(bts[sec])
    elif len(set(sents[sec])) > 1:
        other = _shuffled_text(sents[sec], rng, avoid=orig)
    else:
        other = secs[sec]
    if other == orig and orig != secs[sec]:
        orig = secs[sec]
    pair = [orig, other]
    if rng.random() < 0.5:
        pair.reverse()
    return pair[0], pair[1]


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
                any_row = True
                yield row
            if not self.train:
                return
            if not any_row:
                raise RuntimeError(
                    f"no {self.split} rows with images in the shards for stream {stream_id}; "
                    f"check the split column and dataset_weights"
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
                    keys = (
                        (study, ("patient", row["dataset"], row["subject_id"])) if self.avoid_same_patient else (study,)
                    )
                    yield keys, (row, key, texts, trng)

        batches = patient_batches(rows(), self.batch_size, distinct=self.train, warn=self.log)
        for nbatch, batch in enumerate(batches):
            if nbatch < skip:  # resume: replay the stream without decoding images
                continue
            yield self._collate([self._sample(*item) for item in batch])


def distinct_batches(items: Iterable[tuple[str, object]], size: int, distinct: bool = True) -> Iterator[list]:
    """Batches of ``size`` payloads from (study_id, payload) pairs, in order, except that (``distinct``) a
    study already in the batch waits for the next one: a study seen twice in one batch would be its own
    false negative in the contrastive loss. That happens when the shuffle buffer spans the end of one pass
    over a small dataset and the start of the next. The last, partial batch is yielded too (validation)."""
    batch: list = []
    ids: set = set()
    carry: list[tuple[str, object]] = []

    def take(queue: list[tuple[str, object]]) -> Iterator[list]:
        nonlocal batch, ids, carry
        while queue:
            sid, obj = queue.pop(0)
            if distinct and sid in ids:
                carry.append((sid, obj))
                continue
            batch.append(obj)
            ids.add(sid)
            if len(batch) == size:
                yield batch
                batch, ids = [], set()
                queue[:0], carry = carry, []

    for item in items:
        yield from take([item])
    while carry:  # the end (validation): what waited goes in further batches, still distinct
        if batch:
            yield batch
        batch, ids = [], set()
        queue, carry = carry, []
        yield from take(queue)
    if batch:
        yield batch


def count_rows(datasets: list[ShardDataset], split: str) -> int:
    """Rows of ``split`` that have images (reads only small columns: no image bytes)."""
    return build_index(datasets, split).count()
