"""``cxrprep reports`` output is byte-identical to the output of the code before issue 25's speed work.

The hashes below were computed by this file's ``_digest`` with the parser of commit c29a4ed (before any
change of issue 25) on: the sample data (examples/mimic), the fixtures (tests/data/reports: the official
MIMIC example report and the NegBio reports placed in the MIMIC layout), and 300-report corpora of both
benchmark generators (examples/synth_reports.py, bench/realistic_reports.py, seed 0; a change of either
generator changes those two hashes too). Regenerate them only for an intended
change of the output (``python tests/test_reports_identity.py`` prints them).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from cxrprep.datasets import mimic

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "reports"

EXPECTED = {
    "examples_mimic": "cb448c0287ca5f9aa226c9bde3650d2f0e37f71697683b0afeb9ef94a99fac9b",
    "fixture_mimic_layout": "0c25a31b06485efbdee4c3338d6b6173c4be9338d6d398618a24f7b44c92f4a3",
    "fixture_negbio": "a3553a1f053098124cf26da66f9abf8f4a302f6f59bcab005dbb2ea4f0e513ef",
    "synth_300": "ef799b3cb973b03e562eb62f3851d408a87b2fe00ebe14a87c0316cfa98127c7",
    "realistic_300": "ab8337118d8eb083f42514017a0a0a664d03cec2809d76aab24c65992ace9aec",
}


def _digest(out: Path) -> str:
    """sha256 over every data file's bytes, the rejects and the counts (the manifest's other fields hold
    paths and the invocation)."""
    import json

    h = hashlib.sha256()
    ds = out / mimic.DATASET
    for p in sorted((ds / "data").iterdir()):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    h.update((ds / "rejects.jsonl").read_bytes())
    h.update(json.dumps(json.loads((ds / "manifest.json").read_text())["counts"], sort_keys=True).encode())
    return h.hexdigest()


def _corpus(name: str, tmp: Path) -> Path:
    if name == "examples_mimic":
        return ROOT / "examples" / "mimic"
    if name == "fixture_mimic_layout":
        return DATA / "mimic_layout"
    root = tmp / name
    if name == "fixture_negbio":
        for i, p in enumerate(sorted((DATA / "negbio").glob("0*.txt"))):
            dst = root / "files" / "p11" / f"p1100000{i}" / f"s5100000{i}.txt"
            dst.parent.mkdir(parents=True)
            shutil.copyfile(p, dst)
        return root
    sys.path.insert(0, str(ROOT / "examples"))
    sys.path.insert(0, str(ROOT / "bench"))
    if name == "synth_300":
        from synth_reports import write_corpus
    else:
        from realistic_reports import write_corpus
    write_corpus(root, 300, seed=0)
    return root


def _run(name: str, tmp: Path, workers: int = 1) -> str:
    out = tmp / f"out-{name}-{workers}"
    mimic.run_reports(_corpus(name, tmp), out, mimic.ReportsConfig(images=False, workers=workers, chunk_size=64))
    return _digest(out)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reports_output_unchanged(name, tmp_path):
    assert _run(name, tmp_path) == EXPECTED[name]


def test_reports_output_unchanged_with_workers(tmp_path):
    assert _run("realistic_300", tmp_path, workers=2) == EXPECTED["realistic_300"]


@pytest.mark.parametrize(
    "values",
    [
        ["a", "bb", "", "ccc"],
        ["Pleural effusion.", None, "", None, "x"],
        ["café", None, "  – 2 cm ", "\u00b5", "日本", ""],  # non-ASCII: byte offsets, not characters
        [None, None],
        [],
    ],
)
def test_packed_strings_are_the_arrow_array_of_the_list(values):
    """Workers send string columns as buffers (mimic_worker.pack_strings); the array built on them is the
    one pyarrow builds from the list, nulls and non-ASCII text included."""
    import pickle

    import pyarrow as pa

    from cxrprep.datasets.mimic_worker import pack_strings, strings

    packed = pickle.loads(pickle.dumps(pack_strings(list(values))))
    arr = strings(packed)
    assert arr.equals(pa.array(values, pa.string())) and arr.null_count == values.count(None)
    assert arr.to_pylist() == values


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for n in sorted(EXPECTED):
            print(f'    "{n}": "{_run(n, Path(d) / n)}",')
