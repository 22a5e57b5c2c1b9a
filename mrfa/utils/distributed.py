"""Process-group plumbing for training and dataset-scale inference (not a paper box): one code path for 1 process
and torchrun.

``torchrun --nproc_per_node=N ...`` sets ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``; without them the run is a
single process. Backend: NCCL on CUDA, gloo on CPU (or as asked).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from mrfa.utils.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` processes, ``local_rank`` on its node, ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes checkpoints)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(device_name: Optional[str], *, backend: Optional[str] = None,
                     timeout: Optional[datetime.timedelta] = None) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; otherwise describe a single process.

    Args:
        device_name: ``'cpu'``, ``'cuda'`` or None (auto); on CUDA each rank takes its ``LOCAL_RANK``'s GPU.
        backend: the process-group backend (default: NCCL on CUDA, gloo on CPU).
        timeout: how long collective calls wait (default: torch's).
    """
    device = resolve_device(device_name)
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world <= 1:
        return DistInfo(0, 1, 0, device)
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} has no GPU (this node sees {torch.cuda.device_count()})")
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        kwargs = {"timeout": timeout} if timeout is not None else {}
        dist.init_process_group(backend=backend or ("nccl" if device.type == "cuda" else "gloo"), **kwargs)
    return DistInfo(rank, world, local, device)


def cleanup() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``'sum'``, ``'min'`` or ``'max'``); identity for a single process."""
    if dist.is_available() and dist.is_initialized():
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
    return tensor
