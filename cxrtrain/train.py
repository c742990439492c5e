"""The training loop: nanoGPT-sized, open_clip-complete.

DDP is detected from torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK; gloo on CPU, nccl on GPU); the
master process logs and saves. Mixed precision: bf16 autocast on CPU and GPU, fp16 autocast with a grad
scaler on CUDA. Gradient accumulation and clipping; AdamW (no weight decay on norms, biases and the
temperature); linear warm-up then cosine decay, per step. Validation loss every epoch, early stopping with
patience. Checkpoints: ``OUT/last/`` and ``OUT/best/`` with ``model.safetensors``, ``state.pt`` (optimizer,
scheduler, scaler, RNG, data position, step, epoch, best validation loss; loadable with
``torch.load(weights_only=True)``) and ``config.json``. ``resume=True`` continues exactly from ``last/``.
SIGTERM (cluster preemption) and SIGINT (Ctrl-C) finish the current step, write ``last/`` and stop. The run
folder's rules (no reuse without --resume/--overwrite, recovery of an interrupted checkpoint swap) and the
loggers are in runlog.py; checkpoints in checkpoint.py; torchrun's environment and collectives in ddp.py.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cxrprep.shards import open_datasets
from cxrtrain.checkpoint import (  # noqa: F401  (load_checkpoint, resolve_checkpoint: kept importable from here)
    load_checkpoint,
    resolve_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from cxrtrain.config import TrainConfig
from cxrtrain.data import StudyStream
from cxrtrain.ddp import ddp_env, init_process_group, mean_over_ranks, pick_device, wrap
from cxrtrain.forward import DDPForward, to_device, validate
from cxrtrain.model import CLIPModel, create_model, set_trainable
from cxrtrain.optim import lr_lambda, param_groups
from cxrtrain.runlog import comparable_key, plot_losses  # noqa: F401  (plot_losses: kept importable from here)
from cxrtrain.stopping import Stop, ignore_sigint
from cxrtrain.usable import check_usable, usable_rows
from cxrtrain.watchdog import watchdog


def suggest_batch_size(n_train: int, world: int, accum_steps: int) -> int | None:
    """The largest power of two (a multiple of ``accum_steps``, >= 2) that the train rows fill per rank."""
    per_rank = n_train // max(1, world)
    b = 1
    while b * 2 <= per_rank:
        b *= 2
    while b >= 2 and b % accum_steps:
        b //= 2
    return b if b >= 2 and b % accum_steps == 0 else None


# -- the loop --------------------------------------------------------------------------------------
@dataclass
class Progress:
    """Where the loop is; saved in state.pt (this field order) and restored by --resume."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_val: float = float("inf")
    bad_epochs: int = 0


@dataclass
class _Run:
    """Everything ``train`` sets up once: the ranks, the data plan, the model and its optimizer, the loggers."""

    cfg: TrainConfig
    out: Path
    log: Callable
    rank: int
    world: int
    device: torch.device
    datasets: list
    n_train: int
    n_val: int
    steps_per_epoch: int
    total_steps: int
    model: CLIPModel = None
    trainable: tuple[int, int] = (0, 0)
    runner: torch.nn.Module = None
    opt: torch.optim.Optimizer = None
    sched: object = None
    scaler: object = None
    ctx: object = None
    p: Progress = field(default_factory=Progress)
    stop: Stop = field(default_factory=Stop)
    runlog: object = None
    stream: StudyStream = None
    bar: object = None
    history: list = field(default_factory=list)
    stopped_by: str = "epochs"
    all_datasets: list = field(default_factory=list)  # as found; ``datasets``: those with train rows with text
    val_datasets: list = field(default_factory=list)  # those with validate rows with text
    skipped: list = field(default_factory=list)  # start-up lines on rows left out for having no text

    @property
    def master(self) -> bool:
        return self.rank == 0

    def say(self, msg: str) -> None:  # log lines go above the progress bar, never through it
        with self.bar.external_write_mode():
            self.log(msg)

    def save(self, name: str, st: dict | None) -> None:
        from cxrtrain.runlog import disk_guard

        with disk_guard(self.out / name, self.out):
            save_checkpoint(self.out / name, self.model, self.cfg, st)

    def state(self, **progress) -> dict:
        return training_state(self.opt, self.sched, self.scaler, dict(asdict(self.p), **progress))


def train(
    roots: list[str], out: str | Path, cfg: TrainConfig, resume: bool = False, log=print, overwrite: bool = False
) -> dict:
    """Train; returns a summary dict (steps, best validation loss, stopped_by, history, checkpoints written).

    Raises RunFolderError (a ValueError; the CLI exits 2) when ``out`` already holds a run and neither
    ``resume`` nor ``overwrite`` is set, ValueError for data that cannot train, DiskFullError when the disk
    fills. The run folder is created only once the run can start."""
    run = _plan(roots, Path(out), cfg, resume, overwrite, log)
    _build(run)
    _open_run(run, resume, overwrite)
    try:
        for epoch in range(run.p.epoch, cfg.epochs):
            run.p.epoch = epoch
            sums, n, t_train = _train_epoch(run)
            if run.stopped_by != "epochs":
                if run.master:
                    run.save("last", run.state())
                    _say_stopped(run)
                break
            run.p.step_in_epoch = 0
            if _end_epoch(run, {k: v / max(1, n) for k, v in sums.items()}, t_train):
                break
    finally:
        run.bar.close()
        run.stop.restore()
        run.runlog.close()
    return _finish(run)


def _plan(roots: list[str], out: Path, cfg: TrainConfig, resume: bool, overwrite: bool, log) -> _Run:
    """Ranks, device, the datasets and the step plan; every check on the inputs that needs no model."""
    from cxrtrain.runlog import UsageError, check_loggers, check_run_folder

    rank, world, local_rank = ddp_env()
    if rank == 0:
        check_run_folder(out, resume, overwrite)
        check_loggers(cfg)
    device = pick_device(cfg.device, local_rank)
    if world > 1:
        init_process_group(device)
    torch.manual_seed(cfg.seed)

    datasets = open_datasets(roots)
    unknown = sorted(set(cfg.dataset_weights) - {d.name for d in datasets})
    if unknown:
        raise UsageError(
            f"dataset_weights names {unknown}, not among the datasets found: {', '.join(d.name for d in datasets)}"
        )
    # rows without text cannot train: counted and left out up front, and none at all is an error (issue 20)
    use_train = check_usable(datasets, "train", cfg, roots)
    use_val = usable_rows(datasets, "validate", cfg, train=False)
    all_datasets, datasets = datasets, [d for d in datasets if d.name in use_train.names_with_text()]
    # an epoch is the weighted number of train studies (dataset_weights scale each dataset's share)
    n_train = int(sum(use_train.text[d.name] * float(cfg.dataset_weights.get(d.name, 1.0)) for d in datasets))
    n_val = use_val.n
    if n_train < cfg.batch_size * world:
        fit = suggest_batch_size(n_train, world, cfg.accum_steps)
        advice = f"use --set batch_size={fit}" if fit else f"at least {2 * world} train studies with images are needed"
        raise UsageError(
            f"batch_size {cfg.batch_size}"
            + (f" x {world} ranks" if world > 1 else "")
            + f" is more than the {n_train} train studies with images under {', '.join(map(str, roots))}"
            f"; {advice}"
        )
    steps_per_epoch = max(1, n_train // (cfg.batch_size * world))
    if cfg.precision == "fp16" and device.type != "cuda":
        raise UsageError("precision=fp16 needs CUDA; use --set precision=bf16 on CPU")
    run = _Run(
        cfg, out, log, rank, world, device, datasets, n_train, n_val, steps_per_epoch, steps_per_epoch * cfg.epochs
    )
    run.all_datasets = all_datasets
    run.val_datasets = [d for d in all_datasets if d.name in use_val.names_with_text()]
    run.skipped = [x for x in (use_train.skipped_line(), use_val.skipped_line()) if x]
    return run


def _build(run: _Run) -> None:
    """The model (its DDP runner), AdamW, the warm-up + cosine schedule, the grad scaler and the autocast context."""
    from cxrtrain.hub import hub_preflight

    cfg, device = run.cfg, run.device
    hub_preflight([cfg.model.image_encoder, cfg.model.text_encoder], run.log if run.master else (lambda *_: None))
    run.model = create_model(cfg.model).to(device)
    run.trainable = set_trainable(run.model, cfg.train_image_blocks, cfg.train_text_blocks)
    run.runner = DDPForward(run.model, cfg).to(device)
    if run.world > 1:
        run.runner = wrap(run.runner, device)
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else run.steps_per_epoch
    # fused AdamW: one kernel over all parameters (CPU and CUDA); the per-tensor loop was ~20% of a tiny step
    groups = param_groups(run.model, cfg.weight_decay, cfg.decay_norms_biases)
    run.opt = torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    run.sched = torch.optim.lr_scheduler.LambdaLR(run.opt, lr_lambda(warmup, run.total_steps))
    run.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16" and device.type == "cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    run.ctx = nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def _open_run(run: _Run, resume: bool, overwrite: bool) -> None:
    """The run folder (only now: every input check has passed), the resumed state, signals, loggers, the stream."""
    from cxrtrain.runlog import RunLog, disk_guard, prepare_run_folder, progress_bar

    cfg, out = run.cfg, run.out
    resume_from = prepare_run_folder(out, resume, overwrite, run.log) if run.master else None
    if run.world > 1:
        torch.distributed.barrier()  # the master has recovered/cleaned the folder before any rank reads it
        resume_from = out / "last" if resume and (out / "last" / "state.pt").exists() else None
    if run.master:
        _log_plan(run)
    if resume_from is not None:
        _resume(run, resume_from)
    run.stop.install()
    if run.master:
        with disk_guard(out / "config.json", out):
            tmp = out / ".tmp-config.json"
            tmp.write_text(json.dumps(asdict(cfg), indent=2, default=list) + "\n")
            tmp.replace(out / "config.json")
    run.runlog = RunLog(out, cfg, enabled=run.master, log=run.log)
    micro = cfg.batch_size // cfg.accum_steps
    run.stream = StudyStream(
        run.datasets, "train", cfg, run.model.tokenizer, micro, train=True, rank=run.rank, world_size=run.world,
        seed=cfg.seed,
    )  # fmt: skip
    total = min(run.total_steps, cfg.max_steps or run.total_steps)
    run.bar = progress_bar(None, total=total, desc="train", unit="step", disable=None if run.master else True)
    run.bar.update(run.p.step)


def _log_plan(run: _Run) -> None:
    cfg, log = run.cfg, run.log
    log(
        f"datasets: {', '.join(f'{d.name} ({d.num_rows:,} rows)' for d in run.all_datasets)}; train {run.n_train:,}, "
        f"validate {run.n_val:,} studies; {run.steps_per_epoch} steps/epoch x {cfg.epochs} epochs; world {run.world}"
    )
    for line in run.skipped:
        log(line)
    trainable, total = run.trainable
    log(f"model {cfg.model.preset}: trainable parameters {trainable:,} of {total:,} ({trainable / total:.1%})")
    if run.n_val < 2:
        log(
            f"no validate rows ({run.n_val} validate studies with images): no validation loss, no early stopping "
            f"and no best-model selection; best/ is the final epoch's model"
        )


def _resume(run: _Run, path: Path) -> None:
    from cxrtrain.runlog import truncate_metrics

    run.p = Progress(**restore_training_state(path, run.model, run.opt, run.sched, run.scaler, run.device))
    if run.master:
        dropped = truncate_metrics(run.out / "metrics.jsonl", run.p.step)
        run.log(
            f"resumed from {path} at step {run.p.step} (epoch {run.p.epoch}, batch {run.p.step_in_epoch})"
            + (f"; {dropped} metrics rows after that step dropped" if dropped else "")
        )


def _loader(run: _Run) -> Iterator[dict]:
    cfg, epoch = run.cfg, run.p.epoch
    run.stream.set_epoch(epoch, skip_batches=run.p.step_in_epoch * cfg.accum_steps)
    return iter(
        DataLoader(
            run.stream,
            batch_size=None,
            num_workers=cfg.num_workers,
            pin_memory=run.device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if cfg.num_workers else None,
            # its own generator: creating the iterator must not consume the global RNG
            # (dropout), or a resumed run would diverge from an uninterrupted one
            generator=torch.Generator().manual_seed(cfg.seed + epoch),
            # Ctrl-C reaches the whole process group: only the trainer handles it
            worker_init_fn=ignore_sigint if cfg.num_workers else None,
        )
    )


def _train_epoch(run: _Run) -> tuple[dict[str, float], int, float]:
    """Steps until the epoch ends, a signal arrives or max_steps is reached (``run.stopped_by``); returns the
    sums of the loss parts, the number of steps and the seconds spent."""
    cfg, p = run.cfg, run.p
    loader = _loader(run)
    run.model.train()
    t_epoch = t_last = time.perf_counter()
    sums: dict[str, float] = {}
    n = 0
    while p.step_in_epoch < run.steps_per_epoch:
        t0 = time.perf_counter()
        micro = _next_batches(run, loader)
        if micro is None:  # a signal while waiting for data: stop at this step boundary
            run.stopped_by = run.stop.by or "SIGINT"
            break
        t_data = time.perf_counter() - t0
        parts, t_fb = _step(run, micro)
        now = time.perf_counter()
        dt, t_last = now - t_last, now
        _log_step(run, parts, dt, t_data, t_fb)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        n += 1
        if run.stop.by or (cfg.max_steps is not None and p.step >= cfg.max_steps):
            run.stopped_by = run.stop.by or "max_steps"
            break
    return sums, n, time.perf_counter() - t_epoch


def _next_batches(run: _Run, loader) -> list[dict] | None:
    """The micro-batches of the next step, under the watchdog; None when a signal stopped the wait."""
    with watchdog(run.cfg.watchdog_s, f"drawing train batches for step {run.p.step + 1} (epoch {run.p.epoch})"):
        return run.stop.wait(lambda: [next(loader) for _ in range(run.cfg.accum_steps)])


def _step(run: _Run, micro: list[dict]) -> tuple[dict[str, float], float]:
    """One optimizer step over ``accum_steps`` micro-batches; returns the loss parts (mean over the ranks) and
    the seconds spent in host-to-device copies, forward and backward."""
    cfg, model = run.cfg, run.model
    parts: dict[str, float] = {}
    t_fb = time.perf_counter()
    for mb in micro:
        mb = to_device(mb, run.device)
        with run.ctx:
            res = run.runner(mb, run.rank, run.world)
        run.scaler.scale(res["loss"] / cfg.accum_steps).backward()
        for k, v in res.items():
            parts[k] = parts.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v) / cfg.accum_steps
    t_fb = time.perf_counter() - t_fb
    if run.world > 1:  # log the mean over ranks (each rank's loss covers its own rows of the global batch)
        parts = mean_over_ranks(parts, run.world)
    run.scaler.unscale_(run.opt)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
    run.scaler.step(run.opt)
    run.scaler.update()
    run.opt.zero_grad(set_to_none=True)
    run.sched.step()
    model.clamp_temperature_()  # CLIP: keep the temperature in range (model.min_temperature)
    run.p.step += 1
    run.p.step_in_epoch += 1
    return parts, t_fb


def _log_step(run: _Run, parts: dict[str, float], dt: float, t_data: float, t_fb: float) -> None:
    cfg, step = run.cfg, run.p.step
    # every number the loss returns is logged (loss parts, and any per-step statistic)
    rec = dict(
        step=step,
        epoch=run.p.epoch,
        time=round(time.time(), 3),
        **{k: round(v, 6) for k, v in parts.items()},
        lr=run.sched.get_last_lr()[0],
        temperature=float(1 / run.model.scale().detach()),
        samples_per_s=cfg.batch_size * run.world / dt,
        data_wait=t_data / dt,
        outside_fwd_bwd=1 - t_fb / dt,
        step_s=round(dt, 4),
    )
    run.history.append(rec)
    run.bar.update(1)
    run.bar.set_postfix(
        loss=f"{parts['loss']:.3f}",
        lr=f"{rec['lr']:.1e}",
        T=f"{rec['temperature']:.3f}",
        sps=f"{rec['samples_per_s']:.0f}",
        wait=f"{rec['data_wait']:.0%}",
        refresh=False,
    )
    if run.master:
        run.runlog.write(rec, "train")
        if step % cfg.log_every == 0 or step == 1:
            run.say(
                f"step {step} epoch {run.p.epoch} loss {parts['loss']:.4f} lr {rec['lr']:.2e} "
                f"T {rec['temperature']:.4f} {rec['samples_per_s']:.1f} samples/s data wait {rec['data_wait']:.0%}"
            )


def _end_epoch(run: _Run, train_means: dict[str, float], t_train: float) -> bool:
    """Validation, the epoch record, last/ and best/, early stopping; True when the run stops here."""
    cfg, p = run.cfg, run.p
    t_val = time.perf_counter()
    # a signal stops validation at once (None): last/ is then saved as at the end of the epoch, unvalidated
    args = (run.model, run.val_datasets, cfg, run.device, run.ctx, run.rank, run.world)
    val = run.stop.wait(validate, *args) if run.n_val >= 2 else None
    t_val = time.perf_counter() - t_val
    vloss = val["loss"] if val else None
    improved = vloss is not None and vloss < p.best_val
    if improved:
        p.best_val, p.bad_epochs = vloss, 0
    elif vloss is not None:
        p.bad_epochs += 1
    if run.master:
        _log_epoch(run, train_means, val, improved, t_train, t_val)
        run.save("last", run.state(epoch=p.epoch + 1, step_in_epoch=0))
        if improved or (vloss is None and p.epoch == cfg.epochs - 1 and not run.stop.by):
            run.save("best", None)
    if vloss is not None and p.bad_epochs >= cfg.patience:
        run.stopped_by = "early stopping"
        if run.master:
            run.say(f"early stopping: no validation improvement for {cfg.patience} epochs")
        return True
    if run.stop.by:  # a signal during validation: last/ was just written
        run.stopped_by = run.stop.by
        if run.master:
            _say_stopped(run)
        return True
    return False


def _log_epoch(run: _Run, train_means: dict, val: dict | None, improved: bool, t_train: float, t_val: float) -> None:
    cfg, epoch = run.cfg, run.p.epoch
    vloss = val["loss"] if val else None
    erec = dict(
        step=run.p.step,
        epoch=epoch,
        time=round(time.time(), 3),
        epoch_s=round(t_train, 3),
        val_s=round(t_val, 3) if val else None,
        **{f"train_{k}": round(v, 6) for k, v in train_means.items()},
        train_batch=cfg.batch_size // cfg.accum_steps * run.world,
        val_loss=vloss,
        **{f"val_{k}": round(v, 6) for k, v in (val or {}).items() if k != "loss"},
    )
    run.runlog.write(erec, "epoch")
    if not val:
        run.say(f"epoch {epoch} done in {t_train:.1f} s: train loss {erec['train_loss']:.4f}")
        return
    key = comparable_key(cfg.loss)
    cmp = (
        f"; {key}: validation {val[key]:.4f} vs train {erec[f'train_{key}']:.4f}"
        if key in val and f"train_{key}" in erec
        else ""
    )
    if cmp and round(val["batch"]) != erec["train_batch"]:  # contrastive losses scale with ln(batch)
        cmp += (
            f" (batches of {val['batch']:.0f} vs {erec['train_batch']}: chance level "
            f"{math.log(val['batch']):.2f} vs {math.log(erec['train_batch']):.2f})"
        )
    run.say(
        f"epoch {epoch} done in {t_train:.1f} s: validation loss {vloss:.4f}"
        + (" (best)" if improved else "")
        + f"{cmp} (validation {t_val:.1f} s)"
    )


def _say_stopped(run: _Run) -> None:
    run.say(
        f"stopped by {run.stopped_by} at step {run.p.step}; checkpoint in {run.out / 'last'} (continue with --resume)"
    )


def _finish(run: _Run) -> dict:
    from cxrtrain.runlog import disk_guard

    out = run.out
    if run.master and (run.history or not run.stopped_by.startswith("SIG")):  # a signal before any step: no plot
        with disk_guard(out / "loss.png", out):
            plot_losses(out / "metrics.jsonl", out / "loss.png", run.cfg.loss)
    return dict(
        steps=run.p.step,
        best_val=run.p.best_val,
        stopped_by=run.stopped_by,
        history=run.history,
        checkpoints=sorted(n for n in ("last", "best") if (out / n / "model.safetensors").exists()),
    )
