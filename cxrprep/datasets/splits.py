"""Split procedures for the external benchmarks: ``--split-method hash`` (cxrkit) or ``gloria`` (the papers').

``gloria`` reproduces GLoRIA's published procedure for RSNA Pneumonia and SIIM-ACR Pneumothorax, which
CXR-CLIP follows for its Table 2 (kakaobrain/cxr-clip datasets/README.md links to it):
marshuang80/gloria, gloria/datasets/preprocess_datasets.py, ``preprocess_pneumonia_data`` and
``preprocess_pneumothorax_data`` (commit 9f0cfcf0a43713a3d9f151ae434c5b4804828ba2; lines 49-50 and 90-91 at
416466af1036294301a872e4da169fefc137a192). As data:

* the table's rows in order: RSNA one row per patientId, sorted (pandas ``groupby`` sorts the keys);
  SIIM one row per line of train-rle.csv, in file order;
* ``train_test_split(rows, test_size=0.15 * 2, random_state=0)`` -> train, rest; then
  ``train_test_split(rest, test_size=0.5, random_state=0)`` -> test (its *first* part), validate.

``train_test_split`` with a float ``test_size`` and ``shuffle=True`` takes n_test = ceil(test_size * n),
n_train = n - n_test, draws ``numpy.random.RandomState(seed).permutation(n)`` and puts the first n_test
positions of that permutation in the test part, the next n_train in the train part, each in permutation
order (scikit-learn's ShuffleSplit). ``sklearn_shuffle_split`` is that computation with numpy alone; the
legacy RandomState stream it relies on is frozen across numpy versions.

``cxr-clip`` (VinDr-CXR): CXR-CLIP's README (kakaobrain/cxr-clip datasets/README.md, "Get valid set from
training set") groups image_labels_train.csv by image_id (sorted) and takes
``train_test_split(df, test_size=0.2, random_state=0)`` -> train, validate; the official test set stays.

Both were checked against scikit-learn 1.9.1 and pandas on this machine (docs/protocols.md).

``hash``: sha256(id) mod 100 -> < 70 train, < 85 validate, else test (cxrprep/datasets/benchmarks.py).
"""

from __future__ import annotations

import math

import numpy as np

SPLIT_METHODS = ("hash", "gloria", "cxr-clip")
GLORIA_TEST_FAC = 0.15  # gloria/datasets/preprocess_datasets.py: test_fac=0.15, test_size=test_fac*2


def sklearn_shuffle_split(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, test positions) as ``train_test_split(range(n), test_size=test_size,
    random_state=seed)`` returns them, both in permutation order."""
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_test < 1 or n_train < 1:
        raise ValueError(f"cannot split {n} rows with test_size {test_size}: a part would be empty")
    perm = np.random.RandomState(seed).permutation(n)
    return perm[n_test : n_test + n_train], perm[:n_test]


def gloria_split(keys: list[str], test_fac: float = GLORIA_TEST_FAC, seed: int = 0) -> list[str]:
    """The split of each row of ``keys`` (in the table's order) under GLoRIA's two-stage procedure."""
    out = ["train"] * len(keys)
    _, rest = sklearn_shuffle_split(len(keys), test_fac * 2, seed)
    test_pos, valid_pos = sklearn_shuffle_split(len(rest), 0.5, seed)
    for p in rest[test_pos]:
        out[p] = "test"
    for p in rest[valid_pos]:
        out[p] = "validate"
    return out


def cxr_clip_vindr_split(image_ids: list[str], seed: int = 0) -> list[str]:
    """train/validate of each VinDr training image (ids in sorted order), as CXR-CLIP's README splits them."""
    out = ["train"] * len(image_ids)
    for p in sklearn_shuffle_split(len(image_ids), 0.2, seed)[1]:
        out[p] = "validate"
    return out


def check_split_method(value: str, allowed: tuple[str, ...] = SPLIT_METHODS) -> str:
    if value not in allowed:
        raise ValueError(f"--split-method must be {' or '.join(allowed)}, got {value!r}")
    return value


__all__ = [
    "GLORIA_TEST_FAC",
    "SPLIT_METHODS",
    "check_split_method",
    "cxr_clip_vindr_split",
    "gloria_split",
    "sklearn_shuffle_split",
]
