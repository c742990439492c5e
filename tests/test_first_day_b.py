"""Issue 24 (a researcher's first day), parts 1, 5, 6: a quickstart that works as written, messages that name the
file and the fix, pictures that tell the truth. Each message: its one-line text and its exit code."""

from __future__ import annotations

import gzip
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
runner = CliRunner()


def _prep():
    from cxrprep.cli.app import app

    return app


def _train_app():
    from cxrtrain.cli.app import app

    return app


def _flat(text: str) -> str:
    """Output without rich's box drawing and line wrapping (for matching one message)."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# -- 1. quickstart: --max-failed on small runs, eval skips datasets without the split --------------------------
def test_max_failed_percent_allows_at_least_one():
    from cxrprep.cli.edge import allowed_failures, too_many_failed

    assert allowed_failures(19, (None, 0.01)) == 1  # the 19-image sample may lose its one missing image
    assert allowed_failures(1000, (None, 0.01)) == 10
    assert allowed_failures(19, (None, 0.0)) == 0  # 0% means none
    assert allowed_failures(19, (3, None)) == 3  # a count is a count
    assert not too_many_failed(1, 19, (None, 0.01)) and too_many_failed(2, 19, (None, 0.01))
    assert too_many_failed(1, 19, (0, None))
    r = runner.invoke(_prep(), ["prompts", "--help"], terminal_width=200)
    assert "at least one" in _flat(r.output)


def test_prompts_on_the_sample_passes_with_the_default_max_failed(tmp_path):
    args = ["prompts", str(EXAMPLES / "chexpert/train.csv"), "--out", str(tmp_path / "s"), "--size", "32"]
    r = runner.invoke(_prep(), args + ["--workers", "1"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "s/chexpert/manifest.json").read_text())
    assert m["counts"]["failed"] == 1  # the sample's one missing image: a reject, not a failed run


@pytest.fixture(scope="module")
def run_dir(demo_shards, tmp_path_factory):
    """A finished tiny run with a validate split (best/ and last/ written)."""
    from cxrtrain.config import build_config
    from cxrtrain.train import train

    out = tmp_path_factory.mktemp("run") / "r"
    cfg = build_config(
        dict(model={"preset": "tiny", "image_size": 32, "embed_dim": 32}, epochs=1, batch_size=8, warmup_steps=1)
    )
    train([str(demo_shards)], out, cfg, log=lambda *_: None)
    return out


@pytest.fixture(scope="module")
def no_test_root(tmp_path_factory):
    """A shard root whose datasets have train and validate rows only (like CheXpert prompt shards)."""
    from conftest import make_demo_shards

    return make_demo_shards(
        tmp_path_factory.mktemp("notest"), n_reports=8, n_labels=8, splits=["train"] * 3 + ["validate"]
    )


def test_eval_skips_a_dataset_without_the_split_before_embedding(
    run_dir, demo_shards, no_test_root, tmp_path, monkeypatch
):
    import cxrtrain.evaluate as E

    embedded = []
    real = E.embed_dataset
    monkeypatch.setattr(E, "embed_dataset", lambda m, ds, *a, **k: embedded.append(ds.name) or real(m, ds, *a, **k))
    out = tmp_path / "ev"
    args = ["eval", str(run_dir), str(demo_shards / "mimic-cxr"), str(no_test_root / "chexpert"), "--out", str(out)]
    r = runner.invoke(_train_app(), args + ["--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    line = [x for x in r.output.splitlines() if x.startswith("skipping dataset")]
    assert line == [
        "skipping dataset 'chexpert': no rows in split 'test' (rows per split: train 6, validate 2); see --split"
    ]
    assert embedded == ["mimic-cxr"]  # never embedded the skipped one
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["datasets"]["chexpert"]["studies_scored"] == 0
        and "no rows in split 'test'" in m["datasets"]["chexpert"]["note"]
    )


def test_eval_with_nothing_left_to_score_exits_2(run_dir, no_test_root, tmp_path):
    r = runner.invoke(_train_app(), ["eval", str(run_dir), str(no_test_root), "--out", str(tmp_path / "ev")])
    assert r.exit_code == 2, r.output
    assert r.output.count("skipping dataset") == 2
    assert f"nothing to score: no dataset under {no_test_root} has rows in split 'test'" in _flat(r.output)
    assert "--split" in r.output and "Traceback" not in r.output and not (tmp_path / "ev").exists()


@pytest.mark.slow  # the README's three commands on the sample data, default config: minutes on 2 shared cores
def test_readme_quickstart_runs_verbatim(tmp_path, monkeypatch):
    """The README's quickstart block, run as written from a folder holding the sample data under the names the
    README uses (mimic/, chexpert.csv with its images beside it, prompts/); then eval of the run on shards/."""
    text = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "cxrtrain run" in b)
    lines = [ln.split("#", 1)[0].strip() for ln in block.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    assert [ln.split()[0] for ln in lines] == ["cxrprep", "cxrprep", "cxrtrain"], lines
    shutil.copytree(EXAMPLES / "mimic", tmp_path / "mimic")
    shutil.copy(EXAMPLES / "chexpert/train.csv", tmp_path / "chexpert.csv")
    shutil.copytree(EXAMPLES / "chexpert/CheXpert-v1.0-small", tmp_path / "CheXpert-v1.0-small")
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    monkeypatch.chdir(tmp_path)
    apps = {"cxrprep": _prep(), "cxrtrain": _train_app()}
    for ln in lines:
        argv = shlex.split(ln)
        r = runner.invoke(apps[argv[0]], argv[1:])
        assert r.exit_code == 0, (ln, r.output[-3000:])
    run = next(p for p in (tmp_path / "runs").iterdir() if (p / "last").is_dir())
    r = runner.invoke(apps["cxrtrain"], ["eval", str(run), "shards/", "--bootstrap", "0"])
    assert r.exit_code == 0, r.output[-3000:]
    assert "skipping dataset 'chexpert': no rows in split 'test'" in r.output


# -- 5. messages ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["train.csv.gz", "train.csv"])  # gzip by name, and a .csv that is gzip inside
def test_gzipped_csv_is_read(tmp_path, name):
    src = tmp_path / name
    src.write_bytes(gzip.compress((EXAMPLES / "chexpert/train.csv").read_bytes()))
    r = runner.invoke(_prep(), ["prompts", str(src), "--out", str(tmp_path / "s"), "--no-images", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "s/chexpert/manifest.json").read_text())["counts"]["rows_written"] == 18


def test_binary_csv_is_named_with_a_hint(tmp_path):
    src = tmp_path / "labels.csv"
    src.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe\x80\x81" * 8)  # a zip, not gzip
    for cmd in (["prompts", str(src), "--no-images"], ["rsna", str(src)]):
        r = runner.invoke(_prep(), cmd + ["--out", str(tmp_path / "s")])
        assert r.exit_code == 2, r.output
        assert f"error: {src}: line 1: not UTF-8 text (byte 0x" in r.output, r.output
        assert "decompress it first" in r.output and "Traceback" not in r.output


def _two_dataset_root(tmp_path: Path, demo_shards: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(demo_shards / "chexpert", root / "chexpert")
    (root / "linked").symlink_to(demo_shards / "mimic-cxr", target_is_directory=True)  # a folder linked in
    (root / "loop").symlink_to(root, target_is_directory=True)  # a symlink loop must not hang the scan
    return root


def test_inspect_root_lists_its_datasets(tmp_path, demo_shards):
    root = _two_dataset_root(tmp_path, demo_shards)
    r = runner.invoke(_prep(), ["inspect", str(root)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == f"{root}: a shard root with 2 finished dataset(s)"
    assert lines[1].startswith("  chexpert: dataset chexpert, rows 16 (")
    assert lines[2].startswith("  linked: dataset mimic-cxr, rows 24 (")
    assert lines[3] == f"inspect one: cxrprep inspect {root / 'chexpert'}"
    assert "killed" not in r.output


def test_symlinked_dataset_folder_is_followed(tmp_path, demo_shards):
    from cxrprep.shards import open_datasets

    root = _two_dataset_root(tmp_path, demo_shards)
    assert sorted(d.name for d in open_datasets([root])) == ["chexpert", "mimic-cxr"]


def test_yaml_errors_name_file_and_line(tmp_path):
    from cxrtrain.config import ConfigError, load_config

    bad_key = tmp_path / "a.yaml"
    bad_key.write_text("model:\n  preset: tiny\n  image_sise: 64\nepochs: 2\n")
    bad_value = tmp_path / "b.yaml"
    bad_value.write_text("epochs: 2\nlr: -1\n")
    bad_syntax = tmp_path / "c.yaml"
    bad_syntax.write_text("epochs: 2\nlr: [1,\n")
    want = {
        bad_key: f"{bad_key}, line 3: unknown config key 'model.image_sise' (did you mean 'image_size'?)",
        bad_value: f"{bad_value}, line 2: lr=-1.0: must be a number > 0 and <= 10",
        bad_syntax: f"{bad_syntax}, line 3, column 1: not valid YAML "
        "(expected the node content, but found '<stream end>')",
    }
    for path, msg in want.items():
        with pytest.raises(ConfigError) as e:
            load_config(path)
        assert str(e.value) == msg
        r = runner.invoke(
            _train_app(), ["run", str(tmp_path), "--config", str(path), "--print-config"], terminal_width=300
        )
        assert r.exit_code == 2 and msg in _flat(r.output), r.output
    with pytest.raises(ConfigError) as e:  # a --set value is the option's, not the file's: no line number
        load_config(bad_value, ["lr=-2"])
    assert str(e.value) == "lr=-2.0: must be a number > 0 and <= 10"


def test_print_config_comments_every_key_and_round_trips(tmp_path):
    from cxrtrain.config import config_to_yaml, load_config

    r = runner.invoke(_train_app(), ["run", "--print-config", "--set", "lr=3e-5"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    keys = [i for i, ln in enumerate(lines) if re.match(r"^\s*\w+:", ln) and not ln.strip().startswith("#")]
    assert len(keys) > 40
    for i in keys:
        prev = lines[i - 1].strip()
        assert prev.startswith("#") and len(prev) > 8, (lines[i - 1], lines[i])
    assert "# peak learning rate" in lines and "  # projection size of the joint space (CXR-CLIP: 512)" in lines
    p = tmp_path / "c.yaml"
    p.write_text(r.output)
    assert config_to_yaml(load_config(p)) == r.output and load_config(p).lr == 3e-5


def test_best_checkpoint_keeps_the_optimizer_state_out(run_dir):
    assert (run_dir / "best/model.safetensors").exists() and not (run_dir / "best/state.pt").exists()
    assert (run_dir / "last/state.pt").exists()


# -- 6. pictures --------------------------------------------------------------------------------------------------
@pytest.fixture
def saved_figures(monkeypatch):
    """Every figure saved during the test, kept open for inspection (and still written to its file)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figs = []
    real = Figure.savefig

    def keep(self, *a, **k):
        figs.append(self)
        return real(self, *a, **k)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figs


def _roc(seed: int):
    rng = np.random.default_rng(seed)
    f = np.r_[0, np.sort(rng.random(5)), 1]
    t = np.maximum(np.r_[0, np.sort(rng.random(5)), 1], f)
    return dict(_roc=[f.tolist(), t.tolist()], auroc=0.6, n=20, positives=5)


def test_roc_curves_stay_in_the_unit_square_and_the_legend_hides_none(tmp_path, saved_figures):
    from cxrtrain.evalreport import plot_rocs

    same = _roc(0)
    res = {"Edema": same, "Same": dict(same), "Cardiomegaly": _roc(1), "Pneumothorax": _roc(2)}
    assert plot_rocs(res, tmp_path / "roc.png", "t", {"Edema": _roc(3)})
    (fig,) = saved_figures
    ax = fig.axes[0]
    for line in ax.get_lines():
        x, y = (np.asarray(v, float) for v in line.get_data())
        assert ((x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)).all(), line.get_label()
    fig.canvas.draw()
    leg, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert leg.x0 >= box.x1  # beside the axes, not on them
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "offset" not in " ".join(texts + [ax.get_legend().get_title().get_text()])
    assert all(any(t.startswith(c) for t in texts) for c in res)


def test_nothing_to_plot_writes_no_plot_and_says_so(tmp_path):
    from cxrtrain.evalreport import plot_rocs
    from cxrtrain.fewshotreport import plot_fewshot

    assert plot_rocs({"Edema": dict(auroc=None, n=0, positives=0)}, tmp_path / "roc.png", "t") is False
    empty = dict(config=dict(seeds=1), datasets=dict(rsna=dict(shots={}, linear_probe={}, zero_shot_macro=None)))
    assert plot_fewshot(empty, tmp_path / "fewshot.png") is False
    assert not list(tmp_path.iterdir())


def test_fewshot_png_ticks_legend_title_and_probes(tmp_path, saved_figures):
    from cxrtrain.fewshotreport import plot_fewshot

    def r(m):
        return dict(mean=m, std=0.01, runs=[])

    shots = {str(k): {"linear": r(0.5 + 0.02 * i)} for i, k in enumerate((1, 2, 4, 8, 16))}
    res = dict(
        config=dict(seeds=3),
        datasets=dict(chexpert=dict(shots=shots, linear_probe={"10%": r(0.7), "100%": r(0.75)}, zero_shot_macro=0.6)),
    )
    assert plot_fewshot(res, tmp_path / "fewshot.png")
    (fig,) = saved_figures
    shots_ax, probe_ax = fig.axes
    fig.canvas.draw()
    assert [t.get_text() for t in shots_ax.get_xticklabels()] == ["1", "2", "4", "8", "16"]
    assert [t.get_text() for t in probe_ax.get_xticklabels()] == ["10%", "100%"]
    for ax in (shots_ax, probe_ax):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert "chexpert zero-shot (0.600)" in labels and len(labels) == 2
    assert fig._suptitle.get_text().startswith("chexpert: mean ± std over 3 seed(s)")


def test_loss_png_marks_resumes(tmp_path, saved_figures):
    from cxrtrain.runlog import plot_losses

    rows = [dict(step=s, loss=3.0 - 0.1 * s, mvs=2.0, icl=0.5, tcl=0.5, lr=1e-4) for s in range(1, 5)]
    rows.insert(2, dict(step=2, time=0.0, event="resume"))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    plot_losses(tmp_path / "metrics.jsonl", tmp_path / "loss.png", "cxr-clip")
    (fig,) = saved_figures
    for ax in fig.axes[:2]:
        vlines = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [2, 2]]
        assert len(vlines) == 1
    assert "resumed (--resume) at step 2" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_chexpert_view_comes_from_the_frontal_lateral_column():
    import polars as pl

    from cxrprep.datasets.label_csv import _chexpert_view

    df = pl.DataFrame(
        {
            "fl": ["Frontal", "Frontal", "Frontal", "Lateral", "Lateral", None],
            "appa": ["LL", "AP", None, None, "RL", "PA"],
        }
    )
    got = df.select(_chexpert_view(pl.col("fl"), pl.col("appa")).alias("v"))["v"].to_list()
    assert got == ["UNKNOWN", "AP", "UNKNOWN", "LATERAL", "RL", "PA"]


def test_suite_probe_plot_draws_the_probes_alone(tmp_path, saved_figures):
    """bench-suite's probes run fewshot with no shots: the plot is the probe panel, not an empty shots axis."""
    from cxrtrain.fewshotreport import plot_fewshot

    probe = {"10%": dict(mean=0.6, std=0.0, runs=[]), "100%": dict(mean=0.66, std=0.0, runs=[])}
    res = dict(
        config=dict(seeds=1), datasets={"rsna-pneumonia": dict(shots={}, linear_probe=probe, zero_shot_macro=0.5)}
    )
    assert plot_fewshot(res, tmp_path / "fewshot.png")
    (fig,) = saved_figures
    (ax,) = fig.axes
    assert any(list(ln.get_ydata()) == [0.6, 0.66] for ln in ax.get_lines())
    assert ax.get_xlabel() == "linear probe: share of the train split"
    assert "rsna-pneumonia zero-shot (0.500)" in [t.get_text() for t in ax.get_legend().get_texts()]
