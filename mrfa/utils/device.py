"""The one device vocabulary of mrfa: ``auto`` (or None), ``cpu``, ``cuda``, ``cuda:N``, or a torch.device."""
from __future__ import annotations

from typing import Optional, Union

import torch


def resolve_device(name: Optional[Union[str, torch.device]]) -> torch.device:
    """``"auto"`` / None -> cuda when available, else cpu; other names as torch spells them.

    Raises:
        ValueError: an unknown name, or a CUDA device this PyTorch build or machine does not have (one sentence).
    """
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {str(name)!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(name)!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r} was requested but CUDA is not available (no GPU, or a CPU-only "
                             "PyTorch build); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(name)!r} does not exist ({torch.cuda.device_count()} CUDA GPUs)")
    return dev
