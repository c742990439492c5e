"""The training loop: nanoGPT-sized, open_clip-complete.

DDP is detected from torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK; gloo on CPU, nccl on GPU); the
master process logs and saves. Mixed precision: bf16 autocast on CPU and GPU, fp16 autocast with a grad
scaler on CUDA. Gradient accumulation and clipping; AdamW (no weight decay on norms, biases and the
temperature); linear warm-up then cosine decay, per step. Validation loss every epoch, early stopping with
patience. Checkpoints: ``OUT/last/`` and ``OUT/best/`` with ``model.safetensors``, ``state.pt`` (optimizer,
scheduler, scaler, RNG, data position, step, epoch, best validation loss; loadable with
``torch.load(weights_only=True)``) and ``config.json``. ``resume=True`` continues exactly from ``last/``.
SIGTERM (cluster preemption) finishes the current step, writes ``last/`` and exits.
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

from .config import TrainConfig, config_from_dict
from .data import StudyStream, count_rows, normalize
from .loss import compute_loss
from .model import CLIPModel, create_model, set_trainable


# -- checkpoints -----------------------------------------------------------------------------------
def save_checkpoint(path: Path, model: CLIPModel, cfg: TrainConfig, state: dict | None = None) -> None:
    """Write model.safetensors (+ state.pt) + config.json into ``path`` atomically (tmp dir + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp / "model.safetensors"))
    if state is not None:
        torch.save(state, tmp / "state.pt")
    (tmp / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=list) + "\n")
    model.save_towers(tmp / "towers")
    old = path.with_name(f".old-{path.name}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        import shutil

        shutil.rmtree(old)


def resolve_checkpoint(path: str | Path) -> Path:
    """A run dir (-> best/, else last/) or a checkpoint dir -> the checkpoint dir."""
    p = Path(path)
    if (p / "model.safetensors").exists():
        return p
    for sub in ("best", "last"):
        if (p / sub / "model.safetensors").exists():
            return p / sub
    raise FileNotFoundError(f"{p}: no model.safetensors here or in {p}/best or {p}/last; give a cxrtrain run "
                            f"folder or one of its checkpoint folders")


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[CLIPModel, dict]:
    """Rebuild the model from config.json (+ the saved tower configs in towers/, so neither the hub nor the
    original encoder directories are needed) and load its weights; returns (model in eval mode, config)."""
    from safetensors.torch import load_file

    ck = resolve_checkpoint(path)
    conf = json.loads((ck / "config.json").read_text())
    cfg = config_from_dict(conf)
    towers = ck / "towers"
    model = create_model(cfg.model, towers_dir=towers if (towers / "image" / "config.json").exists() else None)
    missing, unexpected = model.load_state_dict(load_file(str(ck / "model.safetensors"), device=map_location),
                                                strict=False)
    if unexpected or [k for k in missing if "position_ids" not in k]:
        raise ValueError(f"{ck}: weights do not match the model in config.json (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return model.eval(), conf


# -- helpers ---------------------------------------------------------------------------------------
def _ddp_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def _device(cfg: TrainConfig, local_rank: int) -> torch.device:
    if cfg.device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device} but CUDA is not available; use --set device=cpu")
    return torch.device(cfg.device)


def param_groups(model: torch.nn.Module, weight_decay: float, decay_all: bool = False) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if not decay_all and p.ndim < 2 or "norm" in name.lower() or name.endswith("logit_scale") or name.endswith(".bias"):
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
        out.append({k: (v[sl] if isinstance(v, torch.Tensor) else {kk: vv[sl] for kk, vv in v.items()}
                        if isinstance(v, dict) else v[sl]) for k, v in batch.items()})
    return out


def forward_loss(model, batch: dict, cfg: TrainConfig, rank: int, world: int) -> dict:
    raw = model.module if hasattr(model, "module") else model
    i1 = raw.encode_image(normalize(batch["images1"], cfg.model))
    i2 = raw.encode_image(normalize(batch["images2"], cfg.model)) if cfg.loss == "cxr-clip" else i1
    t1 = raw.encode_text(**batch["text1"])
    t2 = raw.encode_text(**batch["text2"]) if cfg.loss == "cxr-clip" else t1
    return compute_loss(cfg.loss, i1, i2, t1, t2, raw.scale(), cfg.icl_weight, cfg.tcl_weight, cfg.relax_threshold,
                        rank, world)


class _DDPForward(torch.nn.Module):
    """Wraps the model so DDP sees one forward() that runs every tower (gradient sync needs that)."""

    def __init__(self, model: CLIPModel, cfg: TrainConfig) -> None:
        super().__init__()
        self.module_ = model
        self.cfg = cfg

    def forward(self, batch: dict, rank: int, world: int) -> dict:
        return forward_loss(self.module_, batch, self.cfg, rank, world)


# -- the loop --------------------------------------------------------------------------------------
def train(roots: list[str], out: str | Path, cfg: TrainConfig, resume: bool = False, log=print) -> dict:
    """Train; returns a summary dict (steps, best validation loss, final losses)."""
    rank, world, local_rank = _ddp_env()
    ddp = world > 1
    device = _device(cfg, local_rank)
    if ddp and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    out = Path(out)
    if master:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    datasets = open_datasets(roots)
    unknown = sorted(set(cfg.dataset_weights) - {d.name for d in datasets})
    if unknown:
        raise ValueError(f"dataset_weights names {unknown}, not among the datasets found: "
                         f"{', '.join(d.name for d in datasets)}")
    # an epoch is the weighted number of train studies (dataset_weights scale each dataset's share)
    n_train = int(sum(count_rows([d], "train") * float(cfg.dataset_weights.get(d.name, 1.0)) for d in datasets))
    n_val = count_rows(datasets, "validate")
    if n_train < cfg.batch_size * world:
        raise ValueError(f"only {n_train} train studies with images under {roots}; batch_size {cfg.batch_size} x "
                         f"{world} ranks needs more (lower batch_size)")
    steps_per_epoch = max(1, n_train // (cfg.batch_size * world))
    total_steps = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else steps_per_epoch

    model = create_model(cfg.model).to(device)
    trainable, total = set_trainable(model, cfg.train_image_blocks, cfg.train_text_blocks)
    if master:
        log(f"datasets: {', '.join(f'{d.name} ({d.num_rows:,} rows)' for d in datasets)}; train {n_train:,}, "
            f"validate {n_val:,} studies; {steps_per_epoch} steps/epoch x {cfg.epochs} epochs; world {world}")
        log(f"model {cfg.model.preset}: trainable parameters {trainable:,} of {total:,} ({trainable / total:.1%})")
    runner = _DDPForward(model, cfg).to(device)
    if ddp:
        runner = torch.nn.parallel.DistributedDataParallel(
            runner, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    # fused AdamW: one kernel over all parameters (CPU and CUDA); the per-tensor loop was ~20% of a tiny step
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay, cfg.decay_norms_biases), lr=cfg.lr, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total_steps))
    use_scaler = cfg.precision == "fp16" and device.type == "cuda"
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("precision=fp16 needs CUDA; use bf16 on CPU")
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
    ctx = nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)

    step, epoch0, step_in_epoch, best_val, bad_epochs = 0, 0, 0, float("inf"), 0
    if resume and (out / "last" / "state.pt").exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(out / "last" / "model.safetensors"), device=str(device)))
        st = torch.load(out / "last" / "state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        scaler.load_state_dict(st["scaler"])
        step, epoch0, step_in_epoch = st["step"], st["epoch"], st["step_in_epoch"]
        best_val, bad_epochs = st["best_val"], st["bad_epochs"]
        torch.set_rng_state(st["rng_cpu"])
        if master:
            log(f"resumed from {out / 'last'} at step {step} (epoch {epoch0}, batch {step_in_epoch})")
    elif resume and master:
        log(f"--resume: no checkpoint in {out / 'last'}; starting from scratch")

    stop = {"flag": False}
    old_handler = None
    try:
        old_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    except ValueError:  # not the main thread
        pass

    def state() -> dict:
        return dict(optimizer=opt.state_dict(), scheduler=sched.state_dict(), scaler=scaler.state_dict(), step=step,
                    epoch=epoch, step_in_epoch=step_in_epoch, best_val=best_val, bad_epochs=bad_epochs,
                    rng_cpu=torch.get_rng_state())

    metrics_f = open(out / "metrics.jsonl", "a") if master else None
    train_ds = StudyStream(datasets, "train", cfg, model.tokenizer, cfg.batch_size // cfg.accum_steps, train=True,
                           rank=rank, world_size=world, seed=cfg.seed)
    history = []
    epoch = epoch0
    from cxrprep.cliutil import progress

    bar = progress(None, total=min(total_steps, cfg.max_steps or total_steps), desc="train", unit="step",
                   disable=None if master else True)
    bar.update(step)
    stopped_by = "epochs"
    for epoch in range(epoch0, cfg.epochs):
        train_ds.set_epoch(epoch, skip_batches=step_in_epoch * cfg.accum_steps)
        loader = iter(DataLoader(train_ds, batch_size=None, num_workers=cfg.num_workers,
                                 pin_memory=device.type == "cuda",
                                 persistent_workers=False, prefetch_factor=4 if cfg.num_workers else None,
                                 # its own generator: creating the iterator must not consume the global RNG
                                 # (dropout), or a resumed run would diverge from an uninterrupted one
                                 generator=torch.Generator().manual_seed(cfg.seed + epoch)))
        model.train()
        t_last = time.perf_counter()
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
                    parts[k] = parts.get(k, 0.0) + float(v.detach()) / cfg.accum_steps
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
            rec = dict(step=step, epoch=epoch, **{k: round(v, 6) for k, v in parts.items()},
                       lr=sched.get_last_lr()[0], temperature=float(1 / model.scale().detach()),
                       samples_per_s=cfg.batch_size * world / dt, data_wait=t_data / dt,
                       outside_fwd_bwd=1 - t_fb / dt)
            history.append(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{parts['loss']:.3f}", lr=f"{rec['lr']:.1e}", T=f"{rec['temperature']:.3f}",
                            sps=f"{rec['samples_per_s']:.0f}", wait=f"{rec['data_wait']:.0%}", refresh=False)
            if master:
                metrics_f.write(json.dumps(rec) + "\n")
                metrics_f.flush()
                if step % cfg.log_every == 0 or step == 1:
                    log(f"step {step} epoch {epoch} loss {parts['loss']:.4f} lr {rec['lr']:.2e} "
                        f"T {rec['temperature']:.4f} {rec['samples_per_s']:.1f} samples/s "
                        f"data wait {rec['data_wait']:.0%}")
            if stop["flag"] or (cfg.max_steps is not None and step >= cfg.max_steps):
                stopped_by = "SIGTERM" if stop["flag"] else "max_steps"
                break
        if stopped_by != "epochs":
            if master:
                save_checkpoint(out / "last", model, cfg, state())
                log(f"stopped by {stopped_by} at step {step}; checkpoint in {out / 'last'} (use --resume)")
            break
        step_in_epoch = 0
        val = validate(model, datasets, cfg, device, ctx, rank, world) if n_val >= 2 else None
        improved = val is not None and val < best_val
        if improved:
            best_val, bad_epochs = val, 0
        elif val is not None:
            bad_epochs += 1
        if master:
            metrics_f.write(json.dumps(dict(step=step, epoch=epoch, val_loss=val)) + "\n")
            metrics_f.flush()
            log(f"epoch {epoch} done: validation loss {val if val is None else round(val, 4)}"
                + (" (best)" if improved else ""))
            save_checkpoint(out / "last", model, cfg, dict(state(), epoch=epoch + 1, step_in_epoch=0))
            if improved or (val is None and epoch == cfg.epochs - 1):
                save_checkpoint(out / "best", model, cfg, None)
        if val is not None and bad_epochs >= cfg.patience:
            stopped_by = "early stopping"
            if master:
                log(f"early stopping: no validation improvement for {cfg.patience} epochs")
            break
    bar.close()
    if old_handler is not None:
        signal.signal(signal.SIGTERM, old_handler)
    if master:
        metrics_f.close()
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=list) + "\n")
        plot_losses(out / "metrics.jsonl", out / "loss.png")
    return dict(steps=step, best_val=best_val, stopped_by=stopped_by, history=history)


@torch.no_grad()
def validate(model: CLIPModel, datasets, cfg: TrainConfig, device, ctx, rank: int, world: int) -> float | None:
    """Mean loss over the validate split (eval transforms, no augmentation)."""
    model.eval()
    ds = StudyStream(datasets, "validate", cfg, model.tokenizer, cfg.batch_size, train=False, rank=rank,
                     world_size=world, seed=cfg.seed)
    tot, n = 0.0, 0
    for batch in ds:
        if batch["images1"].shape[0] < 2:
            continue
        batch = _to(batch, device)
        with ctx:
            res = forward_loss(model, batch, cfg, 0, 1)
        tot += float(res["loss"]) * batch["images1"].shape[0]
        n += batch["images1"].shape[0]
    model.train()
    if world > 1:
        t = torch.tensor([tot, n], dtype=torch.float64)
        torch.distributed.all_reduce(t)
        tot, n = float(t[0]), int(t[1])
    return tot / n if n else None


def plot_losses(metrics: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    tr = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    va = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if tr:
        ax.plot(*zip(*tr), label="train loss", lw=1)
    if va:
        ax.plot(*zip(*va), "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
