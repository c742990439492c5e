"""cxrprep augment with a broken cache or a hostile model folder: messages, never a traceback or code
execution (issue 13)."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from make_tiny_marian import build_tiny_marian  # noqa: E402

from cxrprep.cli.app import app  # noqa: E402
from cxrprep.text import translate as T  # noqa: E402

runner = CliRunner()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from conftest import make_demo_shards

    base = tmp_path_factory.mktemp("aug")
    fwd, bwd = build_tiny_marian(base / "m", seed=0)
    make_demo_shards(base / "shards", n_reports=4, n_labels=2, size=32)
    return base, fwd, bwd


def _run(setup, tmp_path, forward=None, cache=None):
    base, fwd, bwd = setup
    r = runner.invoke(
        app,
        [
            "augment",
            str(base / "shards" / "mimic-cxr"),
            "--forward-model",
            str(forward or fwd),
            "--backward-model",
            str(bwd),
            "--cache-dir",
            str(cache or tmp_path / "cache"),
            "--max-new-tokens",
            "4",
        ],
    )
    assert "Traceback" not in r.output and isinstance(r.exception, (SystemExit, type(None))), r.output
    return r


def test_cache_dir_is_a_file(setup, tmp_path):
    (tmp_path / "cfile").write_text("x")
    r = _run(setup, tmp_path, cache=tmp_path / "cfile")
    assert r.exit_code == 2 and "a file is in the way" in r.output and "--cache-dir" in r.output


def test_cache_database_is_corrupt_or_a_folder(setup, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "translations.sqlite").write_bytes(os.urandom(4096))
    r = _run(setup, tmp_path, cache=tmp_path / "c")
    assert r.exit_code == 2 and "not a usable SQLite database (file is not a database)" in r.output
    (tmp_path / "d" / "translations.sqlite").mkdir(parents=True)
    r = _run(setup, tmp_path, cache=tmp_path / "d")
    assert r.exit_code == 2 and "is a folder" in r.output
    with pytest.raises(T.CacheError, match="delete it"):
        T.TranslationCache(tmp_path / "c" / "translations.sqlite")


def test_cache_corrupted_during_use(tmp_path):
    c = T.TranslationCache(tmp_path / "t.sqlite")
    sid = c.setting({"a": 1})
    c.put(sid, 0, [("x", "y", 0)])
    c.db.close()
    c.db = __import__("sqlite3").connect(":memory:")  # the tables are gone, as after a bad truncation
    with pytest.raises(T.CacheError, match="no such table"):
        c.get(sid, ["x"], 0)


def test_malicious_bin_is_refused_and_never_run(setup, tmp_path):
    base, fwd, _ = setup
    evil = tmp_path / "evil"
    shutil.copytree(fwd, evil)
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    with open(evil / "pytorch_model.bin", "wb") as f:
        pickle.dump({"weight": _Evil(marker)}, f)
    r = _run(setup, tmp_path, forward=evil)
    assert r.exit_code == 2 and "refusing to load it" in r.output and "could run code" in r.output
    assert not marker.exists()


def test_truncated_or_missing_weights(setup, tmp_path):
    base, fwd, _ = setup
    trunc = tmp_path / "trunc"
    shutil.copytree(fwd, trunc)
    data = (fwd / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[:3000])
    r = _run(setup, tmp_path, forward=trunc)
    assert r.exit_code == 2 and "broken weights file" in r.output
    (trunc / "model.safetensors").unlink()
    r = _run(setup, tmp_path, forward=trunc)
    assert r.exit_code == 2 and "no model.safetensors" in r.output
