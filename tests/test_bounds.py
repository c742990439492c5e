"""The shared helpers of the dataset commands: lower bounds of config values (datasets/bounds.py) and the
benchmarks' patients.txt (datasets/writing.py)."""

from __future__ import annotations

import pytest

from cxrprep.datasets.bounds import check_at_least
from cxrprep.datasets.chexpert5x200 import FiveX200Config
from cxrprep.datasets.mimic import ReportsConfig
from cxrprep.datasets.mimic5x200 import Mimic5x200Config
from cxrprep.datasets.prompts import PromptsConfig
from cxrprep.datasets.writing import write_patients


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ReportsConfig(chunk_size=0), "--chunk-size must be >= 1, got 0"),
        (lambda: ReportsConfig(max_report_bytes=-5), "--max-report-bytes must be >= 1, got -5"),
        (lambda: PromptsConfig(variants=0), "--variants must be >= 1, got 0"),
        (lambda: PromptsConfig(negatives=-1), "--negatives must be >= 0, got -1"),
        (lambda: FiveX200Config(per_class=0), "--per-class must be >= 1, got 0"),
        (lambda: Mimic5x200Config(per_class=-2), "--per-class must be >= 1, got -2"),
    ],
)
def test_configs_name_the_option_and_value(make, message):
    with pytest.raises(ValueError) as e:
        make()
    assert str(e.value) == message


def test_first_field_below_its_bound_is_named_and_bounds_are_inclusive():
    cfg = ReportsConfig(chunk_size=1, max_report_bytes=1)  # the bounds themselves are allowed
    assert (cfg.chunk_size, cfg.max_report_bytes) == (1, 1)
    with pytest.raises(ValueError, match="^--variants must be >= 1, got 0$"):
        PromptsConfig(variants=0, negatives=-1)
    check_at_least(cfg, chunk_size=1)  # no error


def test_write_patients_sorted_distinct_atomic(tmp_path):
    write_patients(tmp_path, iter(["p2", "p10", "p2", "p1"]))
    assert (tmp_path / "patients.txt").read_text() == "p1\np10\np2\n"
    assert not (tmp_path / ".tmp-patients.txt").exists()
