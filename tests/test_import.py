"""cxrtrain import: each format's random-weight checkpoint in its original key layout and file format,
imported and compared with an independent reference forward pass on the same weights and images."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

torch.set_num_threads(1)
RUN = CliRunner()


def _openai_clip_module():
    """OpenAI's clip/model.py from the openai-clip package, loaded by path (its package __init__ imports
    torchvision, which is not installed here); the reference, independent of the conversion code."""
    spec = importlib.util.find_spec("clip")
    if spec is None:
        pytest.skip("openai-clip is not installed (pip install --no-deps openai-clip)")
    path = Path(next(iter(spec.submodule_search_locations))) / "model.py"
    m_spec = importlib.util.spec_from_file_location("openai_clip_model_ref", path)
    mod = importlib.util.module_from_spec(m_spec)
    m_spec.loader.exec_module(mod)
    return mod


def tiny_openai_clip(seed: int = 0):
    ref = _openai_clip_module()
    torch.manual_seed(seed)
    # embed_dim, image_resolution, vision_layers, vision_width, patch, context_length, vocab, text width/heads/layers
    model = ref.CLIP(32, 32, 2, 64, 8, 77, 49408, 64, 1, 2).eval()
    with torch.no_grad():  # spread the weights beyond OpenAI's small init so differences would show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        model.logit_scale.fill_(math.log(1 / 0.05))
    return ref, model


def _half_some(sd: dict) -> dict:
    """The released CheXzero files mix fp16 and fp32 tensors (clip.load's convert_weights halves the
    conv/linear/attention weights); do the same to the test file."""
    return {
        k: (v.half() if (k.endswith("weight") and v.dim() >= 2) or k.endswith("proj") else v) for k, v in sd.items()
    }


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


TEXTS = ["No acute cardiopulmonary process.", "Small left pleural effusion.", "cardiomegaly"]


def _import(fmt: str, ckpt: Path, out: Path, *extra: str):
    from cxrtrain.cli.app import app

    return RUN.invoke(app, ["import", fmt, str(ckpt), "--out", str(out), *extra])


def _compare(model, ref_img: torch.Tensor, ref_txt: torch.Tensor, ref_scale: float, pixels, tok) -> None:
    with torch.no_grad():
        img = model.encode_image(pixels)
        txt = model.encode_text(**tok)
        logits = model.scale() * img @ txt.T
    ri, rt = F.normalize(ref_img.float(), dim=-1), F.normalize(ref_txt.float(), dim=-1)
    assert F.cosine_similarity(img, ri).min() >= 0.9999
    assert F.cosine_similarity(txt, rt).min() >= 0.9999
    ref_logits = ref_scale * ri @ rt.T
    assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=0)
    assert abs(float(model.scale()) - ref_scale) < 1e-4 * ref_scale


def test_chexzero_matches_openai_clip_forward(tmp_path):
    from cxrtrain.train import load_checkpoint

    _, ref = tiny_openai_clip()
    sd = _half_some(ref.state_dict())
    torch.save(sd, tmp_path / "best_64_5e-05_original_22000_0.864.pt")
    ref.load_state_dict(sd)  # the reference runs on the same (fp16-rounded) weights
    r = _import("chexzero", tmp_path / "best_64_5e-05_original_22000_0.864.pt", tmp_path / "run")
    assert r.exit_code == 0, r.output
    model, conf = load_checkpoint(tmp_path / "run")
    assert conf["model"]["image_size"] == 32 and conf["model"]["min_temperature"] is None
    assert abs(conf["model"]["image_mean"][0] - 101.48761 / 255) < 1e-9
    pixels = _images(3, 32)
    tok = model.tokenize(TEXTS)
    # OpenAI's tokens: the same ids zero-padded to the context length (its EOT is the sequence's argmax)
    ids = torch.zeros(len(TEXTS), 77, dtype=torch.long)
    for i, (row, m) in enumerate(zip(tok["input_ids"], tok["attention_mask"])):
        ids[i, : int(m.sum())] = row[m.bool()]
    assert int(ids[0, 0]) == 49406 and int(ids.max()) == 49407
    with torch.no_grad():
        _compare(model, ref.encode_image(pixels), ref.encode_text(ids), float(ref.logit_scale.exp()), pixels, tok)
    rec = json.loads((tmp_path / "run" / "import.json").read_text())
    assert rec["format"] == "chexzero" and "float16" in rec["source_dtypes"] and "float32" in rec["source_dtypes"]


# -- CXR-CLIP -----------------------------------------------------------------------------------------
class _Wrap(torch.nn.Module):
    def __init__(self, attr: str, module: torch.nn.Module) -> None:
        super().__init__()
        setattr(self, attr, module)


def _omegaconf_config(kind: str, text_dir: Path, swin_dir: Path) -> dict:
    """The release's config as CXR-CLIP's trainer pickles it: Hydra's DictConfig converted to dicts by
    convert_dictconfig_to_dict (cxrclip/util/utils.py), which leaves ListConfig values (linked to the tree)."""
    omegaconf = pytest.importorskip("omegaconf")
    image = (
        {"source": "torchvision", "name": "resnet", "pretrained": True}
        if kind == "resnet"
        else {"source": "huggingface", "name": str(swin_dir), "pretrained": True, "model_type": "swin"}
    )
    cfg = omegaconf.OmegaConf.create(
        {
            "base": {"image_size": 64, "text_max_length": 256, "seed": 1234},
            "data_train": {"mimic_cxr": {"data_path": "train.csv", "text_max_length": "${base.text_max_length}"}},
            "model": {
                "name": "clip_custom",
                "temperature": 0.07,
                "image_encoder": image,
                "text_encoder": {"source": "huggingface", "name": str(text_dir), "pooling": "eos"},
                "projection_head": {"name": "linear", "dropout": 0.1, "proj_dim": 32},
            },
            "tokenizer": {"source": "huggingface", "pretrained_model_name_or_path": str(text_dir)},
            "transform": {"train": {"Resize": {"size": "${base.image_size}"}}, "ops": ["a", "b"]},
        }
    )
    omegaconf.OmegaConf.resolve(cfg)

    def conv(c):
        return {k: conv(v) for k, v in c.items()} if isinstance(c, omegaconf.DictConfig) else c

    out = conv(cfg)
    assert type(out["transform"]["ops"]).__name__ == "ListConfig"
    return out


def _tiny_text_dir(path: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig

    from cxrtrain.model import _minilm_path

    tok = AutoTokenizer.from_pretrained(_minilm_path())
    BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    ).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _tiny_swin_dir(path: Path, embed_dim: int = 16) -> Path:
    from transformers import SwinConfig

    SwinConfig(
        image_size=64, patch_size=4, embed_dim=embed_dim, depths=[1, 1], num_heads=[1, 2], window_size=4
    ).save_pretrained(path)
    return path


def cxr_clip_release(tmp_path: Path, kind: str, seed: int = 0):
    """A random-weight CXR-CLIP release .tar in the original key layout (CXRClip's attribute names),
    with transformers towers (Swin; for R50 a transformers ResNet-50 whose keys are mapped to torchvision's
    below), and the reference encoders."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer, ResNetConfig, ResNetModel

    torch.manual_seed(seed)
    text_dir = _tiny_text_dir(tmp_path / "bert")
    swin_dir = _tiny_swin_dir(tmp_path / "swin")
    bert = (
        AutoModel.from_pretrained(text_dir)
        if False
        else AutoModel.from_config(__import__("transformers").AutoConfig.from_pretrained(text_dir))
    )
    if kind == "resnet":
        tower = ResNetModel(ResNetConfig()).eval()
        img_w = 2048
    else:
        tower = AutoModel.from_config(AutoConfig.from_pretrained(swin_dir))
        img_w = tower.num_features
    root = torch.nn.Module()
    root.image_encoder = _Wrap("resnet" if kind == "resnet" else "image_encoder", tower)
    root.text_encoder = _Wrap("text_encoder", bert)
    root.image_projection = _Wrap("projection", torch.nn.Linear(img_w, 32))
    root.text_projection = _Wrap("projection", torch.nn.Linear(32, 32))
    root.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.031)))
    root.eval()  # the reference runs without dropout
    with torch.no_grad():
        for name, buf in tower.named_buffers():  # non-trivial BatchNorm statistics
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
    sd = root.state_dict()
    if kind == "resnet":
        sd = {
            (
                "image_encoder.resnet." + _hf_to_tv(k[len("image_encoder.resnet.") :])
                if k.startswith("image_encoder.resnet.")
                else k
            ): v
            for k, v in sd.items()
        }
    ckpt = {
        "model": sd,
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "scheduler": {"last_epoch": 3},
        "config": _omegaconf_config(kind, text_dir, swin_dir),
        "epoch": 4,
        "train_loss": 1.25,
    }
    torch.save(ckpt, tmp_path / f"{kind}_m.tar")
    tok = AutoTokenizer.from_pretrained(text_dir)

    def ref_image(x):  # CXRClip.encode_image + image_projection, transcribed
        out = tower(pixel_values=x)
        f = out.pooler_output.flatten(1) if kind == "resnet" else out.last_hidden_state[:, 0]
        return root.image_projection.projection(f)

    def ref_text(texts):  # CXRClip.encode_text with pooling "eos" + text_projection
        t = tok(texts, padding="longest", truncation=True, max_length=256, return_tensors="pt")
        h = bert(**t).last_hidden_state
        eos = t["attention_mask"].sum(-1) - 1
        return root.text_projection.projection(h[torch.arange(h.shape[0]), eos])

    return tmp_path / f"{kind}_m.tar", ref_image, ref_text, float(root.logit_scale.detach().exp())


def _hf_to_tv(key: str) -> str:
    """transformers ResNet keys -> torchvision's (an independent transcription for the reference)."""
    p = key.split(".")
    if p[0] == "embedder":  # embedder.embedder.{convolution,normalization}.X
        return ("conv1." if p[2] == "convolution" else "bn1.") + ".".join(p[3:])
    stage, block = int(p[2]), p[4]
    head = f"layer{stage + 1}.{block}"
    if p[5] == "shortcut":
        return f"{head}.downsample.{0 if p[6] == 'convolution' else 1}." + ".".join(p[7:])
    j = int(p[6]) + 1
    return f"{head}.{'conv' if p[7] == 'convolution' else 'bn'}{j}." + ".".join(p[8:])


@pytest.mark.parametrize("kind", ["swin", "resnet"])
def test_cxr_clip_matches_reference_forward(tmp_path, kind):
    from cxrtrain.train import load_checkpoint

    ckpt, ref_image, ref_text, ref_scale = cxr_clip_release(tmp_path, kind)
    extra = ["--text-encoder", str(tmp_path / "bert")] + (
        ["--image-encoder", str(tmp_path / "swin")] if kind == "swin" else []
    )
    r = _import("cxr-clip", ckpt, tmp_path / "run", *extra)
    assert r.exit_code == 0, r.output
    model, conf = load_checkpoint(tmp_path / "run")
    m = conf["model"]
    assert m["min_temperature"] is None and m["image_size"] == 64
    assert tuple(m["image_mean"]) == ((0.485, 0.456, 0.406) if kind == "resnet" else (0.5, 0.5, 0.5))
    pixels = _images(2, 64)
    with torch.no_grad():
        _compare(model, ref_image(pixels), ref_text(TEXTS), ref_scale, pixels, model.tokenize(TEXTS))
    rec = json.loads((tmp_path / "run" / "import.json").read_text())
    assert rec["image_tower"] == kind and rec["epoch"] == 4
    if kind == "resnet":  # export: the torchvision-layout tower round-trips under torchvision's keys
        from cxrtrain.export import ExportedModel, export

        ex = ExportedModel(export(tmp_path / "run", tmp_path / "export"))
        with torch.no_grad():
            assert F.cosine_similarity(ex.embed_image(pixels), model.encode_image(pixels)).min() >= 0.9999


# -- open_clip ----------------------------------------------------------------------------------------
def test_open_clip_folder_matches_reference_with_exact_gelu(tmp_path):
    """open_clip's native ViT towers keep OpenAI's keys but use exact GELU unless quick_gelu is set."""
    from cxrtrain.train import load_checkpoint

    ref_mod = _openai_clip_module()
    ref_mod.QuickGELU = torch.nn.GELU  # the reference built with open_clip's default activation
    torch.manual_seed(3)
    ref = ref_mod.CLIP(32, 32, 2, 64, 8, 77, 49408, 64, 1, 2).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    d = tmp_path / "oc"
    d.mkdir()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    mean, std = [0.4, 0.4, 0.4], [0.3, 0.3, 0.3]
    model_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
    }
    (d / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {"mean": mean, "std": std}})
    )
    r = _import("open-clip", d, tmp_path / "run")
    assert r.exit_code == 0, r.output
    model, conf = load_checkpoint(tmp_path / "run")
    assert list(conf["model"]["image_mean"]) == mean
    pixels = _images(2, 32)
    tok = model.tokenize(TEXTS)
    ids = torch.zeros(len(TEXTS), 77, dtype=torch.long)
    for i, (row, m) in enumerate(zip(tok["input_ids"], tok["attention_mask"])):
        ids[i, : int(m.sum())] = row[m.bool()]
    with torch.no_grad():
        _compare(model, ref.encode_image(pixels), ref.encode_text(ids), float(ref.logit_scale.exp()), pixels, tok)


def test_open_clip_timm_tower_exits_2_with_the_reason(tmp_path):
    d = tmp_path / "biomedclip"
    d.mkdir()
    cfg = {
        "model_cfg": {
            "embed_dim": 512,
            "vision_cfg": {"timm_model_name": "vit_base_patch16_224", "image_size": 224},
            "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"},
        }
    }
    (d / "open_clip_config.json").write_text(json.dumps(cfg))
    (d / "open_clip_pytorch_model.bin").write_bytes(b"not used")
    r = _import("open-clip", d, tmp_path / "run")
    assert r.exit_code == 2
    assert "timm_model_name" in r.output and "open_clip and timm" in r.output
    assert len(r.output.strip().splitlines()) == 1


# -- bad inputs ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chexzero_file(tmp_path_factory) -> Path:
    _, ref = tiny_openai_clip(seed=5)
    p = tmp_path_factory.mktemp("cz") / "chexzero.pt"
    torch.save(_half_some(ref.state_dict()), p)
    return p


def _one_line_exit_2(r, *needles: str) -> None:
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and "Traceback" not in out, out
    for n in needles:
        assert n in out, out


def test_truncated_and_corrupt_files_exit_2(tmp_path, chexzero_file):
    data = chexzero_file.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    _one_line_exit_2(_import("chexzero", tmp_path / "trunc.pt", tmp_path / "a"), "trunc.pt", "truncated")
    (tmp_path / "noise.tar").write_bytes(np.random.default_rng(0).bytes(4096))
    _one_line_exit_2(_import("cxr-clip", tmp_path / "noise.tar", tmp_path / "b"), "noise.tar", "not a readable")
    assert not (tmp_path / "a" / "best").exists() and not (tmp_path / "b" / "best").exists()


def test_wrong_format_and_wrong_architecture_exit_2(tmp_path, chexzero_file):
    # a CheXzero file named as CXR-CLIP: the top-level keys are named
    _one_line_exit_2(
        _import("cxr-clip", chexzero_file, tmp_path / "a"), "not in the cxr-clip layout", "visual.conv1.weight"
    )
    # a state dict with a tensor OpenAI's ViT does not have (a layer scale): the first unexpected parameter
    sd = torch.load(chexzero_file, weights_only=True)
    sd["visual.transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)
    torch.save(sd, tmp_path / "ls.pt")
    _one_line_exit_2(_import("chexzero", tmp_path / "ls.pt", tmp_path / "b"), "ls_1.gamma", "64")
    # a CXR-CLIP Swin release read with another Swin config: the first parameter that does not fit
    ckpt, *_ = cxr_clip_release(tmp_path, "swin")
    other = _tiny_swin_dir(tmp_path / "swin-wide", embed_dim=24)
    r = _import(
        "cxr-clip", ckpt, tmp_path / "c", "--text-encoder", str(tmp_path / "bert"), "--image-encoder", str(other)
    )
    _one_line_exit_2(r, "first unexpected parameter", "image_tower.embeddings")


def test_pickled_code_is_refused_not_run(tmp_path):
    import os

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": {"image_encoder.resnet.conv1.weight": torch.zeros(1)}, "x": Payload()}, tmp_path / "evil.tar")
    _one_line_exit_2(_import("cxr-clip", tmp_path / "evil.tar", tmp_path / "run"), "refused pickled global", "system")
    assert not marker.exists()


def test_only_allowlisted_omegaconf_classes_load(tmp_path):
    omegaconf = pytest.importorskip("omegaconf")
    from cxrtrain.imports.safe_load import UnsafeCheckpointError, plain, safe_load

    cfg = omegaconf.OmegaConf.create({"a": [1, {"b": "x"}], "c": {"d": 2.5}})
    torch.save({"config": {"a": cfg.a, "c": cfg.c}}, tmp_path / "ok.pt")  # ListConfig and DictConfig
    assert plain(safe_load(tmp_path / "ok.pt")) == {"config": {"a": [1, {"b": "x"}], "c": {"d": 2.5}}}
    # a class of the same package outside the allowlist (and any other class) is refused
    torch.save({"config": omegaconf.OmegaConf.structured(_Cfg)}, tmp_path / "structured.pt")
    with pytest.raises(UnsafeCheckpointError, match="refused pickled global"):
        safe_load(tmp_path / "structured.pt")


@__import__("dataclasses").dataclass
class _Cfg:
    n: int = 1


def test_vit_b32_shapes_are_read_not_assumed():
    """The real ViT-B/32 layout (a meta-device OpenAI model: shapes only) and a wider variant."""
    from transformers import CLIPTextModel, CLIPVisionModel

    from cxrtrain.imports.chexzero import fit_nesting, hf_configs, openai_dims, openai_to_cxrkit, unused_keys

    ref = _openai_clip_module()
    for args, want in (
        ((512, 224, 12, 768, 32, 77, 49408, 512, 8, 12), dict(vision_width=768, patch_size=32, vision_heads=12)),
        ((768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12), dict(vision_width=1024, patch_size=14, vision_heads=16)),
    ):
        with torch.device("meta"):
            sd = ref.CLIP(*args).state_dict()
        d = openai_dims(sd)
        assert {k: d[k] for k in want} == want
        assert (d["image_resolution"], d["embed_dim"], d["text_layers"], d["vision_layers"]) == (
            args[1],
            args[0],
            12,
            args[2],
        )
        assert unused_keys(sd, d) == []
        vision, text = hf_configs(d)
        with torch.device("meta"):
            shapes = {f"image_tower.{k}": v.shape for k, v in CLIPVisionModel(vision).state_dict().items()}
            shapes |= {f"text_tower.{k}": v.shape for k, v in CLIPTextModel(text).state_dict().items()}
        mapped = {
            k: v
            for k, v in openai_to_cxrkit(sd, d).items()
            if not k.endswith(("_proj.weight", "logit_scale")) or "tower" in k
        }

        mapped = fit_nesting(mapped, __import__("types").SimpleNamespace(state_dict=lambda s=shapes: s))
        assert {k: tuple(v.shape) for k, v in mapped.items()} == {
            k: tuple(v) for k, v in shapes.items() if not k.endswith("position_ids")
        }


# -- side by side -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_side_by_side_is_paired_and_matches_each_models_own_eval(tmp_path, chexzero_file):
    """Three columns: CheXzero, an open_clip model and CheXzero again. The repeated model's differences are
    exactly 0 with a [0, 0] interval only because every model is scored on the same resampled images; each
    value equals that model's own eval."""
    from cxrprep.cli.app import app as prep
    from cxrtrain.cli.app import app

    b = Path(__file__).resolve().parent.parent / "examples" / "benchmarks"
    shards = tmp_path / "bench"
    for args in (
        ["rsna", str(b / "rsna/stage_2_train_labels.csv")],
        ["openi", str(b / "openi/ecgen-radiology"), "--image-root", str(b / "openi/NLMCXR_png"), "--max-failed", "2"],
    ):
        r = RUN.invoke(prep, args + ["--out", str(shards), "--size", "32", "--workers", "1", "--no-clahe"])
        assert r.exit_code == 0, r.output
    assert _import("chexzero", chexzero_file, tmp_path / "cz").exit_code == 0
    oc = tmp_path / "oc-src"
    oc.mkdir()
    _, ref = tiny_openai_clip(seed=9)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, oc / "epoch_3.pt")
    assert _import("open-clip", oc / "epoch_3.pt", tmp_path / "oc").exit_code == 0
    out = tmp_path / "side"
    args = ["eval", "--model", str(tmp_path / "cz"), "--model", str(tmp_path / "oc"), "--model", str(tmp_path / "cz")]
    r = RUN.invoke(app, args + [str(shards), "--out", str(out), "--bootstrap", "50", "--prompts", "cxr-clip"])
    assert r.exit_code == 0, r.output
    s = json.loads((out / "side-by-side.json").read_text())
    assert list(s["models"]) == ["cz", "oc", "cz-2"] and s["reference"] == "cz"
    rsna = s["benchmarks"]["rsna-pneumonia"]["tasks"]["rsna-pneumonia AUROC"]
    openi = s["benchmarks"]["openi"]["tasks"]
    for lab in ("cz", "oc"):
        own = json.loads((out / "models" / lab / "metrics.json").read_text())["datasets"]
        assert rsna[lab]["value"] == pytest.approx(own["rsna-pneumonia"]["binary"]["macro_auroc"], abs=1e-12)
        for k in ("R@1", "R@5", "R@10"):
            assert openi[f"openi {k}"][lab]["value"] == pytest.approx(own["openi"]["retrieval"]["image_to_text"][k])
    for task in [rsna, *openi.values()]:
        d = task["cz-2"]["delta"]
        assert d["delta"] == 0 and d["ci95"] == [0.0, 0.0] and d["resamples"] > 0
        assert task["oc"]["delta"]["delta"] == pytest.approx(task["oc"]["value"] - task["cz"]["value"])
    md = (out / "side-by-side.md").read_text()
    assert "oc − cz (95% CI)" in md and "mean (0.398, 0.398, 0.398)" in md and "imported from chexzero" in md
    assert (out / "side-by-side.png").stat().st_size > 10_000
