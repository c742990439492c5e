"""Config validation: every field declares a type and a range; a bad value exits 2 naming key, value, range."""

from __future__ import annotations

from dataclasses import fields

import pytest
from typer.testing import CliRunner

from cxrtrain.cli.app import app
from cxrtrain.config import CHECKS, ConfigError, LogConfig, TrainConfig, build_config, field_check, load_config
from cxrtrain.model import ModelConfig

BAD = [
    # (YAML text, key and value shown, the allowed range in the message)
    ("crop_scale: 5", "crop_scale=5", "a list of 2 numbers each > 0 and <= 4"),
    ("crop_scale: [1.1, 0.8]", "crop_scale=[1.1, 0.8]", "in increasing order"),
    ("model: 5", "model=5", "a preset name (tiny"),
    ("model: {image_mean: 0.5}", "model.image_mean=0.5", "a list of 3 numbers each >= 0 and <= 1"),
    ("accum_steps: 0", "accum_steps=0", "an integer >= 1"),
    ("log_every: 0", "log_every=0", "an integer >= 1"),
    ("dataset_weights: {chexpert: -1}", "dataset_weights={'chexpert': -1}", "numbers >= 0"),
    ("lr: fast", "lr='fast'", "a number > 0"),
    ("epochs: 2.5", "epochs=2.5", "an integer >= 1"),
    ("clahe_prob: 1.5", "clahe_prob=1.5", "a number >= 0 and <= 1"),
    ("loss: infonce", "loss='infonce'", "one of clip, cxr-clip"),
    ("sentence_sampling: 1", "sentence_sampling=1", "true or false"),
    ("model: {image_size: 8}", "model.image_size=8", "an integer >= 16"),
    ("log: {wandb_mode: sometimes}", "log.wandb_mode='sometimes'", "one of online, offline"),
]


@pytest.mark.parametrize("text,shown,allowed", BAD, ids=[b[1] for b in BAD])
def test_bad_value_names_key_value_and_range(tmp_path, text, shown, allowed):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text + "\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert shown in str(e.value) and allowed in str(e.value)
    r = CliRunner().invoke(app, ["run", str(tmp_path), "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2, r.output
    assert shown in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()  # a failed start leaves no run folder


@pytest.mark.parametrize(
    "override,shown",
    [
        ("crop_scale=5", "crop_scale=5"),
        ("accum_steps=0", "accum_steps=0"),
        ("model.image_mean=0.5", "model.image_mean=0.5"),
        ("log_every=0", "log_every=0"),
    ],
)
def test_bad_set_override_exits_2(tmp_path, override, shown):
    r = CliRunner().invoke(app, ["run", str(tmp_path), "--set", override, "--out", str(tmp_path / "run")])
    assert r.exit_code == 2 and shown in r.output, r.output


def test_every_field_declares_a_check():
    """A new config key needs one opt(default, help, lo=..., hi=..., choices=...) line; this names any without."""
    for cls in (TrainConfig, LogConfig, ModelConfig):
        for f in fields(cls):
            if f.name in ("model", "log"):
                continue
            assert field_check(cls, f.name) is not None, (
                f"{cls.__name__}.{f.name} declares no Check: write it as `{f.name}: T = opt(default, 'help', lo=.., "
                f"hi=..)`" + (" or add it to CHECKS['ModelConfig'] in cxrtrain/config.py" if cls is ModelConfig else "")
            )
    assert set(CHECKS["ModelConfig"]) == {f.name for f in fields(ModelConfig)}


def test_good_values_and_direct_construction():
    c = build_config(
        {
            "crop_scale": [0.9, 1.0],
            "model.image_mean": [0.4, 0.4, 0.4],
            "log.tensorboard": "true",
            "dataset_weights": {"chexpert": 0},
            "relax_threshold": "null",
            "lr": "1e-3",
        }
    )
    assert c.crop_scale == (0.9, 1.0) and c.model.image_mean == (0.4, 0.4, 0.4) and c.log.tensorboard
    assert c.lr == 1e-3 and c.relax_threshold is None
    with pytest.raises(ConfigError, match="accum_steps=0"):
        TrainConfig(accum_steps=0)  # the dataclass itself validates, not only the loader
    with pytest.raises(ConfigError, match="batch_size=6 must be divisible by accum_steps=4"):
        TrainConfig(batch_size=6, accum_steps=4)
    with pytest.raises(ConfigError, match="unknown config key 'log.tensorbord'.*did you mean 'tensorboard'"):
        build_config({"log.tensorbord": True})
