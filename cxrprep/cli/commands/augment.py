"""`cxrprep augment`: Marian back-translation of every section sentence into findings_bt / impression_bt."""

from __future__ import annotations

from pathlib import Path

import typer


def augment(
    dataset_dir: Path = typer.Argument(..., help="A finished dataset folder, e.g. shards/mimic-cxr"),
    backtranslate: str = typer.Option(
        "it", "--backtranslate", help="Pivot language (it: English -> Italian -> English)."
    ),
    forward_model: str = typer.Option(
        None,
        "--forward-model",
        help="English -> pivot Marian model: hub name or local folder (default Helsinki-NLP/opus-mt-en-it).",
    ),
    backward_model: str = typer.Option(
        None,
        "--backward-model",
        help="Pivot -> English Marian model: hub name or local folder (default Helsinki-NLP/opus-mt-it-en).",
    ),
    backend: str = typer.Option(
        "transformers", "--backend", help="transformers (CPU/GPU) or ct2 (CTranslate2, int8 on CPU)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compute_type: str = typer.Option(
        "auto",
        "--compute-type",
        help="auto (ct2: int8 on CPU, float16 on GPU; transformers: float32 on CPU, float16 on GPU), float32, "
        "float16, bfloat16 (transformers; 1.35-1.5x float32's speed on a CPU with AVX512-BF16), int8 (ct2).",
    ),
    decoding: str = typer.Option("greedy", "--decoding", help="greedy, beam or sample."),
    beams: int = typer.Option(4, "--beams", help="Beam size for --decoding beam."),
    temperature: float = typer.Option(1.0, "--temperature", help="Sampling temperature for --decoding sample."),
    top_k: int = typer.Option(0, "--top-k", help="Sample from the k most likely tokens (0 = all)."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Longest output per sentence, in tokens."),
    variants: int = typer.Option(1, "--variants", help="Back-translations per section (> 1 needs --decoding sample)."),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling."),
    batch_size: int = typer.Option(256, "--batch-size", help="Most sentences per batch."),
    batch_tokens: int = typer.Option(
        2048,
        "--batch-tokens",
        help="Most padded tokens per batch (sentences sorted by length: short ones share big batches).",
    ),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0 = library default)."),
    cache_dir: Path = typer.Option(
        Path("~/.cache/cxrkit/translate"), "--cache-dir", help="Translation cache and converted CTranslate2 models."
    ),
    no_number_check: bool = typer.Option(
        False, "--no-number-check", help="Keep back-translations that lost a number of the source."
    ),
) -> None:
    """Back-translate every findings/impression sentence (English -> pivot -> English) into findings_bt /
    impression_bt, rewriting the dataset's part files atomically.

    Sentences are de-duplicated over the dataset, batched by length and cached, so a re-run or a killed run
    resumes without redoing work.

    Example: cxrprep augment shards/mimic-cxr --backtranslate it --backend ct2

    Offline: cxrprep augment shards/mimic-cxr --forward-model models/opus-mt-en-it --backward-model models/opus-
    mt-it-en
    """
    options = dict(locals())  # first statement: exactly the command's parameters, by name
    _augment(options.pop("dataset_dir"), _augment_config(options))


#: The options that make up the Decoding (besides --decoding itself, its method).
_DECODING_OPTIONS = ("beams", "temperature", "top_k", "max_new_tokens", "seed")


def _augment_config(options: dict):
    """AugmentConfig from the command's options (by parameter name); a bad value exits 2 naming its option."""
    from cxrprep.cli.edge import make_config
    from cxrprep.text.translate import AugmentConfig, Decoding

    decoding = dict(method=options.pop("decoding"), **{k: options.pop(k) for k in _DECODING_OPTIONS})
    options["cache_dir"] = options["cache_dir"].expanduser()
    options["check_numbers"] = not options.pop("no_number_check")
    return make_config(AugmentConfig, decoding=make_config(Decoding, **decoding), **options)


def _augment(dataset_dir: Path, cfg) -> None:
    """Run the augment on a finished dataset folder under its lock; print the summary."""
    from cxrprep.cli.edge import errors, progress
    from cxrprep.schema import ShardSchemaError
    from cxrprep.shards import DatasetBusy, DatasetLock, summary_lines
    from cxrprep.text.translate import CacheError, ModelNotAvailable, run_augment, summary

    if not (dataset_dir / "manifest.json").exists():
        raise typer.BadParameter(
            f"{dataset_dir}: no manifest.json (a finished dataset folder such as "
            "shards/mimic-cxr; run `cxrprep merge` after --part runs)",
            param_hint="DATASET_DIR",
        )
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    with errors({(DatasetBusy, ModelNotAvailable, CacheError): 2, (ShardSchemaError, RuntimeError): 1}):
        with DatasetLock(dataset_dir, action="augment"):  # no cxrprep writer into the folder meanwhile
            res = run_augment(dataset_dir, cfg, progress=progress)
    for line in summary_lines(res.manifest, dataset_dir) + summary(res):
        typer.echo(line)


def register(app: typer.Typer) -> None:
    app.command(no_args_is_help=True)(augment)
