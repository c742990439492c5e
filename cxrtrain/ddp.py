"""Distributed data parallel: torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK), the device a rank trains on,
the process group (gloo on CPU, nccl on GPU), the DDP wrapper and the collectives the loop logs through."""

from __future__ import annotations

import os

import torch


def ddp_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for a single process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def pick_device(device: str, local_rank: int) -> torch.device:
    """``auto`` -> this rank's GPU if CUDA is available, else the CPU; a CUDA device without CUDA is a UsageError."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        from cxrtrain.runlog import UsageError

        raise UsageError(f"device={device} but CUDA is not available; use --set device=cpu")
    return torch.device(device)


def init_process_group(device: torch.device) -> None:
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def wrap(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
    )


def mean_over_ranks(values: dict[str, float], world: int) -> dict[str, float]:
    """Each rank's numbers averaged over the ranks (float64, in the dict's key order)."""
    vals = torch.tensor(list(values.values()), dtype=torch.float64)
    torch.distributed.all_reduce(vals)
    return dict(zip(values, (vals / world).tolist()))


def sum_over_ranks(totals: dict[str, float], n: int) -> tuple[dict[str, float], int]:
    """Weighted sums and their row count, summed over the ranks (keys in sorted order on every rank)."""
    keys = sorted(totals)
    t = torch.tensor([totals.get(k, 0.0) for k in keys] + [n], dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return dict(zip(keys, t[:-1].tolist())), int(t[-1])
