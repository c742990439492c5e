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
loggers are in runlog.py.
"""

from __future__ import annotations

import json
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from cxrprep.shards import open_datasets
from cxrtrain.config import TrainConfig, config_from_dict
from cxrtrain.data import StudyStream, count_rows, normalize
from cxrtrain.loss import compute_loss
from cxrtrain.model import CLIPModel, create_model, set_trainable, trainable_line
from cxrtrain.sampling import same_patient_pairs


# -- checkpoints -----------------------------------------------------------------------------------
def save_checkpoint(path: Path, model: CLIPModel, cfg: TrainConfig, state: dict | None = None) -> None:
    """Write model.safetensors (+ state.pt) + config.json into ``path`` atomically: everything goes to
    ``.tmp-NAME``, then ``NAME`` -> ``.old-NAME``, ``.tmp-NAME`` -> ``NAME``, and ``.old-NAME`` is removed. A kill
    between the two renames leaves ``.old-NAME`` (complete), which ``--resume`` recovers (runlog.py)."""
    import shutil

    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    old = path.with_name(f".old-{path.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(sd, str(tmp / "model.safetensors"))
        if state is not None:
            torch.save(state, tmp / "state.pt")
        (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=list) + "\n")
        model.save_towers(tmp / "towers")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written checkpoint behind
        raise
    if old.exists():  # a leftover of an interrupted earlier swap; `path` is complete
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    _between_renames()
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)


def _between_renames() -> None:
    """A hook for tests: a kill here is the worst moment of a checkpoint swap (no ``last/`` on disk)."""


def resolve_checkpoint(path: str | Path) -> Path:
    """A run dir (-> best/, else last/) or a checkpoint dir -> the checkpoint dir."""
    p = Path(path)
    if (p / "model.safetensors").exists():
        return p
    for sub in ("best", "last"):
        if (p / sub / "model.safetensors").exists():
            return p / sub
    raise FileNotFoundError(
        f"{p}: no model.safetensors here or in {p}/best or {p}/last; give a cxrtrain run "
        f"folder or one of its checkpoint folders"
    )


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[CLIPModel, dict]:
    """Rebuild the model from config.json (+ the saved tower configs in towers/, so neither the hub nor the
    original encoder directories are needed) and load its weights; returns (model in eval mode, config)."""
    from safetensors.torch import load_file

    ck = resolve_checkpoint(path)
    conf = json.loads((ck / "config.json").read_text())
    try:
        cfg = config_from_dict(conf)
    except (KeyError, TypeError, AttributeError) as e:  # a config.json that is not a cxrtrain config
        raise ValueError(f"{ck}/config.json: not a cxrtrain checkpoint config ({type(e).__name__}: {e})") from None
    towers = ck / "towers"
    model = create_model(cfg.model, towers_dir=towers if (towers / "image" / "config.json").exists() else None)
    try:
        weights = load_file(str(ck / "model.safetensors"), device=map_location)
    except Exception as e:  # safetensors raises its own SafetensorError for a truncated/corrupt file
        if type(e).__name__ not in ("SafetensorError", "HeaderTooLarge"):
            raise
        raise ValueError(f"{ck}/model.safetensors: truncated or corrupt ({e})") from None
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise ValueError(
            f"{ck}: weights do not match the model in config.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval(), conf


# -- helpers ---------------------------------------------------------------------------------------
def _ddp_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        from cxrtrain.runlog import UsageError

        raise UsageError(f"device={cfg.device} but CUDA is not available; use --set device=cpu")
    return torch.device(cfg.device)


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not decay_all and (
            p.ndim < 2 or "norm" in name.lower() or name.endswith("logit_scale") or name.endswith(".bias")
        ):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def _to(batch: dict, device: torch.device) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device, non_blocking=True)
        elif isinstance(v, dict):
            out[k] = {kk: vv.to(device, non_blocking=True) for kk, vv in v.items()}
        else:
            out[k] = v
    return out


def _split(batch: dict, n: int) -> list[dict]:
    if n == 1:
        return [batch]
    b = batch["images1"].shape[0]
    size = b // n
    out = []
    for i in range(n):
        sl = slice(i * size, (i + 1) * size)
        out.append(
            {
                k: (
                    v[sl]
                    if isinstance(v, torch.Tensor)
                    else {kk: vv[sl] for kk, vv in v.items()}
                    if isinstance(v, dict)
                    else v[sl]
                )
                for k, v in batch.items()
            }
        )
    return out


def forward_loss(model, batch: dict, cfg: TrainConfig, rank: int, world: int) -> dict:
    raw = model.module if hasattr(model, "module") else model
    i1 = raw.encode_image(normalize(batch["images1"], cfg.model))
    i2 = raw.encode_image(normalize(batch["images2"], cfg.model)) if cfg.loss != "clip" else i1
    t1 = raw.encode_text(**batch["text1"])
    t2 = raw.encode_text(**batch["text2"]) if cfg.loss != "clip" else t1
    return compute_loss(
        cfg.loss, i1, i2, t1, t2, raw.scale(), cfg.icl_weight, cfg.tcl_weight, cfg.relax_threshold, rank, world
    )


class _DDPForward(torch.nn.Module):
    """Wraps the model so DDP sees one forward() that runs every tower (gradient sync needs that)."""

    def __init__(self, model: CLIPModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.module_ = model
        self.cfg = cfg

    def forward(self, batch: dict, rank: int, world: int) -> dict:
        return forward_loss(self.module_, batch, self.cfg, rank, world)


# -- the loop --------------------------------------------------------------------------------------
def suggest_batch_size(n_train: int, world: int, accum_steps: int) -> int | None:
    """The largest power of two (a multiple of ``accum_steps``, >= 2) that the train rows fill per rank."""
    per_rank = n_train // max(1, world)
    b = 1
    while b * 2 <= per_rank:
        b *= 2
    while b >= 2 and b % accum_steps:
        b //= 2
    return b if b >= 2 and b % accum_steps == 0 else None


def _ignore_sigint(_worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C to the trainer, which finishes the step and saves last/."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Stop:
    """SIGTERM (preemption) and SIGINT (Ctrl-C) both finish the current step, save last/ and stop; a second
    Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.by: str | None = None
        self.old: dict = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.by == "SIGINT":
                raise KeyboardInterrupt
            signal.signal(signal.SIGINT, self._handle)
        self.by = self.by or signal.Signals(signum).name

    def restore(self) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)
        self.old = {}


def train(
    roots: list[str], out: str | Path, cfg: TrainConfig, resume: bool = False, log=print, overwrite: bool = False
) -> dict:
    """Train; returns a summary dict (steps, best validation loss, stopped_by, history, checkpoints written).

    Raises RunFolderError (a ValueError; the CLI exits 2) when ``out`` already holds a run and neither
    ``resume`` nor ``overwrite`` is set, ValueError for data that cannot train, DiskFullError when the disk
    fills. The run folder is created only once the run can start."""
    from cxrtrain.runlog import (
        RunLog,
        UsageError,
        check_loggers,
        check_run_folder,
        comparable_key,
        disk_guard,
        prepare_run_folder,
        progress_bar,
        truncate_metrics,
    )

    rank, world, local_rank = _ddp_env()
    ddp = world > 1
    master = rank == 0
    out = Path(out)
    if master:
        check_run_folder(out, resume, overwrite)
        check_loggers(cfg)
    device = _device(cfg, local_rank)
    if ddp and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    torch.manual_seed(cfg.seed)

    datasets = open_datasets(roots)
    unknown = sorted(set(cfg.dataset_weights) - {d.name for d in datasets})
    if unknown:
        raise UsageError(
            f"dataset_weights names {unknown}, not among the datasets found: {', '.join(d.name for d in datasets)}"
        )
    # an epoch is the weighted number of train studies (dataset_weights scale each dataset's share)
    n_train = int(sum(count_rows([d], "train") * float(cfg.dataset_weights.get(d.name, 1.0)) for d in datasets))
    n_val = count_rows(datasets, "validate")
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
    total_steps = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else steps_per_epoch
    if cfg.precision == "fp16" and device.type != "cuda":
        raise UsageError("precision=fp16 needs CUDA; use --set precision=bf16 on CPU")

    from cxrtrain.hub import hub_preflight

    hub_preflight([cfg.model.image_encoder, cfg.model.text_encoder], log if master else (lambda *_: None))
    model = create_model(cfg.model).to(device)
    trainable, total = set_trainable(model, cfg.train_image_blocks, cfg.train_text_blocks, cfg.train_frozen_norms)
    if ddp and cfg.sync_bn and device.type == "cuda":  # CXR-CLIP: batch statistics over all ranks
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    runner = _DDPForward(model, cfg).to(device)
    if ddp:
        runner = torch.nn.parallel.DistributedDataParallel(
            runner, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    # fused AdamW: one kernel over all parameters (CPU and CUDA); the per-tensor loop was ~20% of a tiny step
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.decay_norms_biases), lr=cfg.lr, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total_steps))
    use_scaler = cfg.precision == "fp16" and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    ctx = nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)

    # everything that can fail on the inputs has been checked: only now does the run folder appear
    resume_from = prepare_run_folder(out, resume, overwrite, log) if master else None
    if ddp:
        torch.distributed.barrier()  # the master has recovered/cleaned the folder before any rank reads it
        resume_from = out / "last" if resume and (out / "last" / "state.pt").exists() else None
    if master:
        log(
            f"datasets: {', '.join(f'{d.name} ({d.num_rows:,} rows)' for d in datasets)}; train {n_train:,}, "
            f"validate {n_val:,} studies; {steps_per_epoch} steps/epoch x {cfg.epochs} epochs; world {world}"
        )
        log(
            f"model {cfg.model.preset}: trainable parameters {trainable:,} of {total:,} ({trainable / total:.1%}): "
            + trainable_line(model)
        )
        if n_val < 2:
            log(
                f"no validate rows ({n_val} validate studies with images): no validation loss, no early stopping "
                f"and no best-model selection; best/ is the final epoch's model"
            )

    step, epoch0, step_in_epoch, best_val, bad_epochs = 0, 0, 0, float("inf"), 0
    if resume_from is not None:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(resume_from / "model.safetensors"), device=str(device)))
        st = torch.load(resume_from / "state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        step, epoch0, step_in_epoch = st["step"], st["epoch"], st["step_in_epoch"]
        best_val, bad_epochs = st["best_val"], st["bad_epochs"]
        torch.set_rng_state(st["rng_cpu"])
        if master:
            dropped = truncate_metrics(out / "metrics.jsonl", step)
            log(
                f"resumed from {resume_from} at step {step} (epoch {epoch0}, batch {step_in_epoch})"
                + (f"; {dropped} metrics rows after that step dropped" if dropped else "")
            )

    stop = _Stop()
    stop.install()

    def state() -> dict:
        return dict(
            optimizer=opt.state_dict(),
            scheduler=sched.state_dict(),
            scaler=scaler.state_dict(),
            step=step,
            epoch=epoch,
            step_in_epoch=step_in_epoch,
            best_val=best_val,
            bad_epochs=bad_epochs,
            rng_cpu=torch.get_rng_state(),
        )

    def save(name: str, st: dict | None) -> None:
        with disk_guard(out / name, out):
            save_checkpoint(out / name, model, cfg, st)
        written.add(name)

    written: set[str] = set()
    if master:
        with disk_guard(out / "config.json", out):
            tmp = out / ".tmp-config.json"
            tmp.write_text(json.dumps(asdict(cfg), indent=2, default=list) + "\n")
            tmp.replace(out / "config.json")
    runlog = RunLog(out, cfg, enabled=master, log=log)
    train_ds = StudyStream(
        datasets,
        "train",
        cfg,
        model.tokenizer,
        cfg.batch_size // cfg.accum_steps,
        train=True,
        rank=rank,
        world_size=world,
        seed=cfg.seed,
    )
    history = []
    epoch = epoch0
    bar = progress_bar(
        None,
        total=min(total_steps, cfg.max_steps or total_steps),
        desc="train",
        unit="step",
        disable=None if master else True,
    )
    bar.update(step)

    def say(msg: str) -> None:  # log lines go above the progress bar, never through it
        with bar.external_write_mode():
            log(msg)

    key = comparable_key(cfg.loss)
    stopped_by = "epochs"
    try:
        for epoch in range(epoch0, cfg.epochs):
            train_ds.set_epoch(epoch, skip_batches=step_in_epoch * cfg.accum_steps)
            loader = iter(
                DataLoader(
                    train_ds,
                    batch_size=None,
                    num_workers=cfg.num_workers,
                    pin_memory=device.type == "cuda",
                    persistent_workers=False,
                    prefetch_factor=4 if cfg.num_workers else None,
                    # its own generator: creating the iterator must not consume the global RNG
                    # (dropout), or a resumed run would diverge from an uninterrupted one
                    generator=torch.Generator().manual_seed(cfg.seed + epoch),
                    # Ctrl-C reaches the whole process group: only the trainer handles it
                    worker_init_fn=_ignore_sigint if cfg.num_workers else None,
                )
            )
            model.train()
            t_epoch = t_last = time.perf_counter()
            epoch_sum: dict[str, float] = {}
            epoch_n = 0
            while step_in_epoch < steps_per_epoch:
                t0 = time.perf_counter()
                micro = [next(loader) for _ in range(cfg.accum_steps)]
                t_data = time.perf_counter() - t0
                parts: dict[str, float] = {}
                t_fb = time.perf_counter()
                for mb in micro:
                    mb = _to(mb, device)
                    with ctx:
                        res = runner(mb, rank, world)
                    loss = res["loss"] / cfg.accum_steps
                    scaler.scale(loss).backward()
                    for k, v in res.items():
                        parts[k] = (
                            parts.get(k, 0.0)
                            + float(v.detach() if isinstance(v, torch.Tensor) else v) / cfg.accum_steps
                        )
                t_fb = time.perf_counter() - t_fb  # host-to-device copies, forward and backward
                if ddp:  # log the mean over ranks (each rank's loss covers its own rows of the global batch)
                    vals = torch.tensor(list(parts.values()), dtype=torch.float64)
                    torch.distributed.all_reduce(vals)
                    parts = dict(zip(parts, (vals / world).tolist()))
                scaler.unscale_(opt)
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
                model.clamp_temperature_()  # CLIP: keep the temperature in range (model.min_temperature)
                step += 1
                step_in_epoch += 1
                now = time.perf_counter()
                dt = now - t_last
                t_last = now
                # every number the loss returns is logged (loss parts, and any per-step statistic)
                rec = dict(
                    step=step,
                    epoch=epoch,
                    time=round(time.time(), 3),
                    **{k: round(v, 6) for k, v in parts.items()},
                    lr=sched.get_last_lr()[0],
                    temperature=float(1 / model.scale().detach()),
                    samples_per_s=cfg.batch_size * world / dt,
                    data_wait=t_data / dt,
                    outside_fwd_bwd=1 - t_fb / dt,
                    step_s=round(dt, 4),
                    # pairs of studies of one patient within a micro-batch (this rank): false negatives
                    same_patient_pairs=sum(same_patient_pairs(list(zip(b["dataset"], b["subject_id"]))) for b in micro),
                )
                for k, v in parts.items():
                    epoch_sum[k] = epoch_sum.get(k, 0.0) + v
                epoch_n += 1
                history.append(rec)
                bar.update(1)
                bar.set_postfix(
                    loss=f"{parts['loss']:.3f}",
                    lr=f"{rec['lr']:.1e}",
                    T=f"{rec['temperature']:.3f}",
                    sps=f"{rec['samples_per_s']:.0f}",
                    wait=f"{rec['data_wait']:.0%}",
                    refresh=False,
                )
                if master:
                    runlog.write(rec, "train")
                    if step % cfg.log_every == 0 or step == 1:
                        say(
                            f"step {step} epoch {epoch} loss {parts['loss']:.4f} lr {rec['lr']:.2e} "
                            f"T {rec['temperature']:.4f} {rec['samples_per_s']:.1f} samples/s "
                            f"data wait {rec['data_wait']:.0%}"
                        )
                if stop.by or (cfg.max_steps is not None and step >= cfg.max_steps):
                    stopped_by = stop.by or "max_steps"
                    break
            if stopped_by != "epochs":
                if master:
                    save("last", state())
                    say(
                        f"stopped by {stopped_by} at step {step}; checkpoint in {out / 'last'} (continue with --resume)"
                    )
                break
            step_in_epoch = 0
            t_train = time.perf_counter() - t_epoch
            t_val = time.perf_counter()
            val = validate(model, datasets, cfg, device, ctx, rank, world) if n_val >= 2 else None
            t_val = time.perf_counter() - t_val
            vloss = val["loss"] if val else None
            improved = vloss is not None and vloss < best_val
            if improved:
                best_val, bad_epochs = vloss, 0
            elif vloss is not None:
                bad_epochs += 1
            if master:
                erec = dict(
                    step=step,
                    epoch=epoch,
                    time=round(time.time(), 3),
                    epoch_s=round(t_train, 3),
                    val_s=round(t_val, 3) if val else None,
                    **{f"train_{k}": round(v / max(1, epoch_n), 6) for k, v in epoch_sum.items()},
                    train_batch=cfg.batch_size // cfg.accum_steps * world,
                    val_loss=vloss,
                    **{f"val_{k}": round(v, 6) for k, v in (val or {}).items() if k != "loss"},
                )
                runlog.write(erec, "epoch")
                if val:
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
                    say(
                        f"epoch {epoch} done in {t_train:.1f} s: validation loss {vloss:.4f}"
                        + (" (best)" if improved else "")
                        + f"{cmp} (validation {t_val:.1f} s)"
                    )
                else:
                    say(f"epoch {epoch} done in {t_train:.1f} s: train loss {erec['train_loss']:.4f}")
                save("last", dict(state(), epoch=epoch + 1, step_in_epoch=0))
                if improved or (vloss is None and epoch == cfg.epochs - 1):
                    save("best", None)
            if vloss is not None and bad_epochs >= cfg.patience:
                stopped_by = "early stopping"
                if master:
                    say(f"early stopping: no validation improvement for {cfg.patience} epochs")
                break
            if stop.by:  # a signal during validation: last/ was just written
                stopped_by = stop.by
                if master:
                    say(
                        f"stopped by {stopped_by} at step {step}; checkpoint in {out / 'last'} (continue with --resume)"
                    )
                break
    finally:
        bar.close()
        stop.restore()
        runlog.close()
    if master:
        with disk_guard(out / "loss.png", out):
            plot_losses(out / "metrics.jsonl", out / "loss.png", cfg.loss)
    return dict(
        steps=step,
        best_val=best_val,
        stopped_by=stopped_by,
        history=history,
        checkpoints=sorted(n for n in ("last", "best") if (out / n / "model.safetensors").exists()),
    )


@torch.no_grad()
def validate(model: CLIPModel, datasets, cfg: TrainConfig, device, ctx, rank: int, world: int) -> dict | None:
    """Mean loss and loss parts over the validate split (eval transforms, no augmentation), weighted by rows.

    Both views of a validation study are the same un-augmented image, so cxr-clip's image-image term (icl)
    is near 0 here: compare the image-text term (``mvs``) with training's, not the totals."""
    model.eval()
    ds = StudyStream(
        datasets,
        "validate",
        cfg,
        model.tokenizer,
        cfg.batch_size,
        train=False,
        rank=rank,
        world_size=world,
        seed=cfg.seed,
    )
    tot: dict[str, float] = {}
    n = 0
    for batch in ds:
        if batch["images1"].shape[0] < 2:
            continue
        batch = _to(batch, device)
        with ctx:
            res = forward_loss(model, batch, cfg, 0, 1)
        b = batch["images1"].shape[0]
        for k, v in res.items():
            tot[k] = tot.get(k, 0.0) + float(v) * b
        tot["batch"] = tot.get("batch", 0.0) + b * b  # -> the batch size a validation row saw (losses grow with it)
        n += b
    model.train()
    if world > 1:
        keys = sorted(tot)
        t = torch.tensor([tot.get(k, 0.0) for k in keys] + [n], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        tot, n = dict(zip(keys, t[:-1].tolist())), int(t[-1])
    return {k: v / n for k, v in tot.items()} if n else None


from cxrtrain.runlog import plot_losses  # noqa: E402,F401  (kept importable from here)
