"""The run folder of ``cxrtrain run``: never reused by accident, logged to metrics.jsonl (the source of truth)
and, optionally, to TensorBoard and Weights & Biases; loss.png drawn from metrics.jsonl.

Run folder rules (``check_run_folder`` before any work, ``prepare_run_folder`` once the run can start):

* a folder that holds a run (``RUN_FILES``) is refused (exit 2) unless ``--resume`` or ``--overwrite``;
* ``--overwrite`` removes the previous run's files (and only those);
* ``--resume`` continues from ``last/``. A checkpoint swap cut by a kill (``last`` renamed to ``.old-last``,
  the new ``.tmp-last`` not yet renamed) is recovered from ``.old-last``; a run folder with no checkpoint at
  all is refused, never silently restarted. ``metrics.jsonl`` is cut back to the resumed step, so a resumed
  run's metrics read like one that never stopped.
"""

from __future__ import annotations

import errno
import json
import math
import shutil
from contextlib import contextmanager
from pathlib import Path

RUN_FILES = (
    "config.json",
    "metrics.jsonl",
    "last",
    "best",
    ".old-last",
    ".tmp-last",
    ".old-best",
    ".tmp-best",
    "loss.png",
    "eval",
    "fewshot",
    "export",
    "tensorboard",
    "wandb",
)
# keys of a step record that are losses (drawn on loss.png's parts panel); every other number is logged too
LOSS_PARTS = ("mvs", "icl", "tcl", "clip")


class UsageError(ValueError):
    """Options that cannot work with these inputs (the CLI exits 2): e.g. a batch larger than the data."""


class RunFolderError(UsageError):
    """The --out folder cannot be used as asked (exit 2)."""


class DiskFullError(RuntimeError):
    """Out of disk space while writing a run file (exit 1)."""


@contextmanager
def disk_guard(what: Path | str, out: Path):
    """Turn ENOSPC/EDQUOT while writing ``what`` into a DiskFullError with advice. torch.save reports a failed
    write as a RuntimeError ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing
    file data/0: file write failed"), without the errno: that is one line too, with the free space."""
    try:
        yield
    except RuntimeError as e:
        if "failed writing" not in str(e) and "file write failed" not in str(e):
            raise
        import shutil

        try:
            free = f"{shutil.disk_usage(out).free / 2**20:,.0f} MiB free"
        except OSError:
            free = "free space unknown"
        raise DiskFullError(
            f"writing {what} failed (torch.save: file write failed; {free} on the disk holding {out}): the disk is "
            f"probably full; free space and continue with --resume (last/ holds the last complete checkpoint, "
            f"if any)"
        ) from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            raise DiskFullError(
                f"disk full while writing {what} ({e.strerror}); free space on the disk holding "
                f"{out} and continue with --resume (last/ holds the last complete checkpoint, if "
                f"any)"
            ) from None
        raise


def run_files(out: Path) -> list[str]:
    out = Path(out)
    return [n for n in RUN_FILES if (out / n).exists()] if out.is_dir() else []


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse (RunFolderError) what must not start: an existing run without --resume/--overwrite, both flags,
    an --out that is a file, or --resume on a run with no checkpoint to resume from."""
    out = Path(out)
    if resume and overwrite:
        raise RunFolderError(
            "--resume and --overwrite exclude each other: --resume continues the run in --out, --overwrite replaces it"
        )
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; give a folder for the run")
    present = run_files(out)
    if present and not resume and not overwrite:
        raise RunFolderError(
            f"--out {out} already holds a run ({', '.join(present)}); pass --resume to continue "
            f"it, --overwrite to replace it, or choose another --out"
        )
    if resume and present and not _checkpoint_dir(out):
        raise RunFolderError(
            f"--resume: {out} holds a run ({', '.join(present)}) but no checkpoint to resume from "
            f"(no last/state.pt or .old-last/state.pt); pass --overwrite to start it again"
        )


def _checkpoint_dir(out: Path) -> Path | None:
    for name in ("last", ".old-last"):
        if (out / name / "state.pt").is_file() and (out / name / "model.safetensors").is_file():
            return out / name
    return None


def prepare_run_folder(out: Path, resume: bool, overwrite: bool, log=print) -> Path | None:
    """Create/clean ``out``; returns the checkpoint folder to resume from (None: a new run)."""
    out = Path(out)
    check_run_folder(out, resume, overwrite)
    if overwrite:
        for n in run_files(out):
            p = out / n
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        return None
    ck = _checkpoint_dir(out)
    if ck is None:
        log(f"--resume: {out} holds no run yet; starting a new one")
        return None
    if ck.name == ".old-last":  # killed between the two renames of save_checkpoint
        if (out / "last").exists():
            shutil.rmtree(out / "last")
        ck.replace(out / "last")
        log(
            f"--resume: a checkpoint swap in {out} was interrupted; recovered last/ from .old-last (the newer, "
            f"unconfirmed .tmp-last is discarded)"
        )
    for leftover in (".old-last", ".tmp-last", ".tmp-best"):
        if (out / leftover).exists():
            shutil.rmtree(out / leftover)
    if (out / ".old-best").exists() and not (out / "best").exists():
        (out / ".old-best").replace(out / "best")
    elif (out / ".old-best").exists():
        shutil.rmtree(out / ".old-best")
    return out / "last"


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the rows of metrics.jsonl up to ``step`` (a resumed run rewrites what came after); returns rows
    dropped. A torn last line (a kill mid-write) is dropped too."""
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if row.get("step", 0) <= step:
            keep.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_text("".join(x + "\n" for x in keep))
        tmp.replace(path)
    return dropped


def _clean(rec: dict) -> dict:
    """No NaN/inf in JSON: they become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rec.items()}


def check_loggers(cfg) -> None:
    """Fail before the run folder exists when an asked-for logger is not installed."""
    import importlib.util

    if cfg.log.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise RunFolderError(
            "log.tensorboard=true needs the tensorboard package: pip install "
            "'cxrkit[tensorboard]' (or pip install tensorboard)"
        )
    if cfg.log.wandb and importlib.util.find_spec("wandb") is None:
        raise RunFolderError("log.wandb needs the wandb package: pip install 'cxrkit[wandb]'")


class RunLog:
    """metrics.jsonl (always) + TensorBoard (``log.tensorboard``) + W&B (``log.wandb``); master rank only."""

    def __init__(self, out: Path, cfg, enabled: bool = True, log=print) -> None:
        self.out, self.enabled = Path(out), enabled
        self.f = None
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        self.f = open(self.out / "metrics.jsonl", "a")
        lc = cfg.log
        if lc.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RunFolderError(
                    "log.tensorboard=true needs the tensorboard package: pip install "
                    "'cxrkit[tensorboard]' (or pip install tensorboard)"
                ) from None
            self.tb = SummaryWriter(log_dir=str(self.out / "tensorboard"))
        if lc.wandb:
            try:
                import wandb
            except ImportError:
                raise RunFolderError("log.wandb needs the wandb package: pip install 'cxrkit[wandb]'") from None
            from dataclasses import asdict

            self.wandb = wandb.init(
                project=lc.wandb,
                dir=str(self.out),
                mode=lc.wandb_mode,
                config=asdict(cfg),
                name=self.out.name,
                resume="allow",
                id=_wandb_id(self.out),
            )
            log(
                f"W&B: project {lc.wandb}, run {self.wandb.id}"
                + (f" (offline: wandb sync {self.out / 'wandb'})" if lc.wandb_mode == "offline" else "")
            )

    def write(self, rec: dict, kind: str = "train") -> None:
        """One row of metrics.jsonl; every number also goes to TensorBoard/W&B as ``KIND/key``."""
        if not self.enabled:
            return
        rec = _clean(rec)
        with disk_guard(self.out / "metrics.jsonl", self.out):
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()
        nums = {
            k: v
            for k, v in rec.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "time") and v is not None
        }
        step = rec.get("step", 0)
        if self.tb is not None:
            for k, v in nums.items():
                self.tb.add_scalar(f"{kind}/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"{kind}/{k}": v for k, v in nums.items()}, step=step)

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _wandb_id(out: Path) -> str:
    """One W&B run id per run folder (kept in OUT/wandb/run_id), so --resume continues the same W&B run."""
    import secrets

    p = out / "wandb" / "run_id"
    if p.exists():
        return p.read_text().strip()
    p.parent.mkdir(parents=True, exist_ok=True)
    rid = secrets.token_hex(4)
    p.write_text(rid + "\n")
    return rid


def comparable_key(loss: str) -> str:
    """The loss term computed the same way on train and validate batches: the image-text term. (Validation
    feeds one un-augmented image twice, so cxr-clip's image-image term is near 0 there and the totals differ
    by construction.)"""
    return "clip" if loss == "clip" else "mvs"


def plot_losses(metrics: Path, png: Path, loss: str = "cxr-clip") -> None:
    """loss.png: top, the quantity both splits compute the same way (train per step, its epoch means, and
    validation per epoch); bottom, the train total and its parts (log scale where all positive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for x in Path(metrics).read_text().splitlines():
        try:
            rows.append(json.loads(x))
        except json.JSONDecodeError:
            continue
    steps = [r for r in rows if "loss" in r and r.get("loss") is not None]
    epochs = [r for r in rows if "val_loss" in r or "epoch_s" in r]
    key = comparable_key(loss)
    if steps and key not in steps[0]:
        key = "loss"
    name = {"mvs": "image-text loss (MVS)", "clip": "CLIP loss", "loss": "loss"}[key]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), dpi=100, sharex=True)
    if steps:
        ax1.plot(
            [r["step"] for r in steps],
            [r[key] for r in steps],
            lw=0.8,
            alpha=0.45,
            color="C0",
            label=f"train {name}, per step",
        )
    tm = [(r["step"], r[f"train_{key}"]) for r in epochs if r.get(f"train_{key}") is not None]
    if tm:
        ax1.plot(*zip(*tm), "s-", color="C0", label=f"train {name}, epoch mean")
    va = [(r["step"], r[f"val_{key}"]) for r in epochs if r.get(f"val_{key}") is not None]
    if va:
        ax1.plot(*zip(*va), "o-", color="C3", label=f"validation {name}")
    elif not any(r.get("val_loss") is not None for r in epochs):
        ax1.text(
            0.99,
            0.97,
            "no validate rows: no validation curve",
            transform=ax1.transAxes,
            ha="right",
            va="top",
            fontsize=8,
            color="0.4",
        )
    _chance_levels(ax1, epochs, key)
    ax1.set_ylabel(name)
    ax1.set_title(
        "train vs validation: the image-text term both compute (contrastive losses depend on batch size)"
        if key != "loss"
        else "train vs validation",
        fontsize=9,
    )
    ax1.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    _plot_parts(ax2, steps, loss)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("loss (train)")
    ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    tmp = Path(png).with_name(f".tmp-{Path(png).name}")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(png)


def _chance_levels(ax1, epochs: list[dict], key: str) -> None:
    # a contrastive loss over a batch of B pairs starts at ln(B) (uniform similarities): draw that level for
    # each split, since a small validation batch has a lower floor than the train batch
    levels: dict[float, list[str]] = {}
    for k, who in (("train_batch", "train"), ("val_batch", "validation")):
        bs = sorted({round(r[k]) for r in epochs if r.get(k)})
        if bs and key != "loss":
            levels.setdefault(bs[-1], []).append(who)
    for b, who in levels.items():
        col = "0.4" if len(who) == 2 else ("C0" if who == ["train"] else "C3")
        ax1.axhline(
            math.log(b),
            color=col,
            ls="--",
            lw=0.8,
            alpha=0.8,
            label=f"chance level ln({b:g}), {' and '.join(who)} batches of {b:g}",
        )


def _plot_parts(ax2, steps: list[dict], loss: str) -> None:
    """The train total and its parts per step (log scale where all positive)."""
    parts = ["loss"] + [k for k in LOSS_PARTS if steps and k in steps[0] and k != "loss"]
    for i, k in enumerate(parts):
        label = "train total" if k == "loss" else f"train {k}"
        ax2.plot(
            [r["step"] for r in steps],
            [r[k] for r in steps],
            lw=1.4 if k == "loss" else 0.9,
            color=f"C{i}",
            label=label,
        )
    if loss == "cxr-clip" and "mvs" in parts:
        ax2.set_title("train total = mvs + icl_weight x icl + tcl_weight x tcl", fontsize=10)
    if steps and all(r[k] > 0 for r in steps for k in parts):
        ax2.set_yscale("log")


def progress_bar(iterable, total: int | None = None, desc: str = "", unit: str = "it", disable: bool | None = None):
    """A tqdm bar on stderr, hidden when stderr is not a terminal unless CXRKIT_PROGRESS=1 (the CLI's bars
    follow the same rule)."""
    import os
    import sys

    from tqdm.auto import tqdm

    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("CXRKIT_PROGRESS") == "1")
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)
