"""What `cxrprep reports` loads, and when (issue 25): the fixed cost before the first report was most of
its gap to the official parser, so these imports staying out is tested, not hoped for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        check=True,
    )
    return r.stdout.strip().splitlines()[-1]


def test_cli_start_loads_no_pyarrow():
    """The CLI (and the reports command) can start its workers before pyarrow is loaded."""
    out = _python(
        """
        import sys
        from cxrprep.cli.app import app
        import cxrprep.datasets.mimic
        print(sorted(m for m in ("pyarrow", "pandas", "polars", "spacy", "torch", "tqdm") if m in sys.modules))
        """
    )
    assert out == "[]"


@pytest.mark.slow  # a subprocess with two workers
def test_reports_main_process_loads_no_spacy_pandas_polars(tmp_path):
    """A reports run without side CSVs, 2 workers: the main process never imports spaCy (the rules file
    stands in for it), pandas (pyarrow's probe is answered) or polars (no CSV to read)."""
    sys.path.insert(0, str(ROOT / "examples"))
    from synth_reports import write_corpus

    write_corpus(tmp_path / "mimic", 60, seed=0)
    script = """
        import json, sys
        from pathlib import Path
        from cxrprep.datasets import mimic
        cfg = mimic.ReportsConfig(images=False, workers=2, overwrite=True)
        m = mimic.run_reports(Path(sys.argv[1]), Path(sys.argv[2]), cfg)
        loaded = [x for x in ("spacy", "pandas", "polars") if x in sys.modules]
        print(json.dumps([m["counts"]["rows_written"], loaded]))
        """
    runs = [json.loads(_python(script, str(tmp_path / "mimic"), str(tmp_path / "out"))) for _ in range(2)]
    assert runs[0][0] == runs[1][0] == 60
    assert runs[0][1] in ([], ["spacy"])  # spaCy only on the very first run (it writes the rules file)
    assert runs[1][1] == []


def test_pandas_probe_answer_keeps_pandas_usable():
    """After ``skip_pandas_probe`` (no pandas loaded), explicit pandas use through pyarrow still works."""
    out = _python(
        """
        import sys
        from cxrprep.arrowprobe import skip_pandas_probe
        skip_pandas_probe()
        assert "pandas" not in sys.modules
        import pyarrow as pa
        df = pa.table({"a": [1, 2]}).to_pandas()
        import pandas as pd
        arr = pa.array(pd.Series([1.5, None]))
        print(type(df).__name__, arr.type, arr.null_count)
        """
    )
    assert out == "DataFrame double 1"
