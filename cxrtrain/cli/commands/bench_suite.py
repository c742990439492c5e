"""`cxrtrain bench-suite`: every CXR-CLIP benchmark under the shard roots, one table."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrprep.cli.edge import check_option, errors
from cxrprep.cli.options import BOOTSTRAP, DEVICE, ENSEMBLE, EVAL_SPLIT
from cxrtrain.cli.commands import eval_errors
from cxrtrain.cli.commands._side import MODELS, side_by_side_or_shards


def register(app: typer.Typer) -> None:
    @app.command("bench-suite")
    def bench_suite(
        # fmt: off
        checkpoint: Path = typer.Argument(
            ..., exists=True, help="A run folder or checkpoint folder (with --model: the first shard root)"
        ),
        shards: list[Path] = typer.Argument(None, exists=True, help="Shard roots holding the benchmark datasets"),
        models: list[Path] = MODELS,
        prompts: str = typer.Option(
            None,
            "--prompts",
            callback=lambda v: v if v is None else check_option(v, "--prompts"),
            help="Eval prompt file: a packaged name (cxr-clip, eval, gloria) or a path (default: cxr-clip; "
            "cxr-clip-protocol under --protocol cxr-clip)",
        ),
        protocol: str = typer.Option(
            "cxrkit",
            "--protocol",
            help="cxrkit | cxr-clip (CXR-CLIP's evaluator: its prompts, argmax F1, its probe recipe, retrieval on "
            "chexpert-5x200/mimic-cxr/openi); named in the table header; see docs/protocols.md",
        ),
        out: Path = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/bench-suite)"),
        split: str = EVAL_SPLIT,
        ensemble: str = ENSEMBLE,
        probe: bool = typer.Option(
            True, "--probe/--no-probe", help="Also run the 10%/100% linear probes (VinDr, RSNA, SIIM)"
        ),
        probe_seeds: int = typer.Option(1, "--probe-seeds", help="Seeds for the linear probes"),
        probe_max_epochs: int = typer.Option(
            1000, "--probe-max-epochs", help="Epochs one probe head may train in all (fewshot --max-epochs)"
        ),
        bootstrap: int = BOOTSTRAP,
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed"),
        device: str = DEVICE,
        # fmt: on
    ) -> None:
        """Zero-shot (VinDr, RSNA, SIIM AUROC; CheXpert/MIMIC 5x200 accuracy), linear probes and retrieval
        (MIMIC, Open-I) in one table shaped like CXR-CLIP's; missing benchmarks are listed as missing.

        Example: cxrtrain bench-suite runs/clip bench/ --out runs/clip/suite
        """
        from cxrprep.cli.edge import make_config
        from cxrtrain.evaluate import EvalConfig
        from cxrtrain.suite import run_suite

        if protocol not in ("cxrkit", "cxr-clip"):
            raise typer.BadParameter(f"must be cxrkit or cxr-clip, got {protocol!r}", param_hint="--protocol")
        prompts = prompts or check_option("cxr-clip-protocol" if protocol == "cxr-clip" else "cxr-clip", "--prompts")
        cfg = make_config(
            EvalConfig,
            prompts=prompts,  # a PromptFile: the name as given, resolved once
            protocol=protocol,
            f1_rule="argmax" if protocol == "cxr-clip" else "threshold",
            text_section="max" if protocol == "cxr-clip" else "impression",
            split=split,
            ensemble=ensemble,
            bootstrap=bootstrap,
            seed=seed,
            device=device,
        )
        suite = dict(probe=probe, probe_seeds=probe_seeds, probe_max_epochs=probe_max_epochs)
        if side_by_side_or_shards(models, checkpoint, shards, out, cfg, suite):
            return
        out_dir = out or (checkpoint / "bench-suite")
        with errors(eval_errors()):
            run_suite(checkpoint, [str(s) for s in shards], out_dir, cfg, **suite, log=typer.echo)
        typer.echo((out_dir / "suite.md").read_text())
        typer.echo(f"suite: {out_dir / 'suite.json'}; details: {out_dir / 'eval'}, {out_dir / 'probe'}")
