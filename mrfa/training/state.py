"""Training-state checkpoints and RNG capture (not a paper box; the official code resumes weights only).

A training state (``mrfa-state/1``, written atomically by :func:`mrfa.checkpoint.atomic_save`) holds
everything the next optimiser step depends on, so ``--resume`` continues bit-exactly:

``{'format', 'mrfa_version', 'config', 'model', 'optimizers': {name: state}, 'schedulers': {name: state},
'scaler', 'discriminator', 'progress': {'step', 'epoch', 'batch_in_epoch', 'samples_in_epoch', 'world_size'},
'rng': {'per_rank': [...]}}``

``rng`` holds, for every rank (gathered on rank 0), the Python, NumPy and torch (CPU and every CUDA device)
global generators and the trainer's own generator of equivariance transforms. Everything is plain tensors /
numbers / strings, so the file loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from mrfa.checkpoint import STATE_FORMAT, CheckpointError, atomic_save, read_checkpoint
from mrfa.version import __version__

STATE_NAME = "training-state.pt"
SNAPSHOT_NAME = "snapshot.pt"


def capture_rng(transform_generator: Optional[torch.Generator]) -> dict[str, Any]:
    """Snapshot of every random generator a training step uses."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np.asarray(np_state["state"]["key"], dtype=np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "transform": None if transform_generator is None else transform_generator.get_state(),
    }
    return state


def restore_rng(state: dict[str, Any], transform_generator: Optional[torch.Generator]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only when the same number of devices is visible)."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": int(n["pos"])},
                         "has_gauss": int(n["has_gauss"]), "gauss": float(n["gauss"])})
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if transform_generator is not None and state.get("transform") is not None:
        transform_generator.set_state(state["transform"])


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants nested tuples (a state that went through a list-producing path is fixed)."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


def resolve_resume_path(path: str | Path) -> Path:
    """``--resume`` accepts a run folder (its ``training-state.pt``) or a state file.

    Raises:
        FileNotFoundError: neither exists.
    """
    path = Path(path)
    if path.is_dir():
        candidate = path / STATE_NAME
        if not candidate.is_file():
            raise FileNotFoundError(f"--resume folder {path} holds no {STATE_NAME}")
        return candidate
    if not path.is_file():
        raise FileNotFoundError(f"--resume path not found: {path}")
    return path


def read_state(path: str | Path) -> dict[str, Any]:
    """Read a training state; one clear error when the file is a snapshot or another format.

    Raises:
        CheckpointError: unreadable file or not an ``mrfa-state/1`` training state.
    """
    path = Path(path)
    obj = read_checkpoint(path)
    if obj.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a training state (format {obj.get('format')!r}, expected "
                              f"{STATE_FORMAT!r}); inference snapshots and official checkpoints hold no optimiser "
                              f"state and cannot be resumed")
    config, progress = obj.get("config"), obj.get("progress")
    missing = [k for k in ("model", "optimizers", "schedulers", "rng") if k not in obj]
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        missing.append("config.model")
    if not isinstance(progress, dict) or not {"step", "epoch"} <= set(progress):
        missing.append("progress")
    if missing:
        raise CheckpointError(f"{path} is a damaged training state (it lacks {', '.join(missing[:3])}); resume from "
                              "an intact one or start a new run")
    return obj


def write_state(path: str | Path, *, config: dict, model: torch.nn.Module, optimizers: dict, schedulers: dict,
                scaler: Optional[torch.amp.GradScaler], discriminator: Optional[torch.nn.Module],
                progress: dict[str, int], rng: dict[str, Any]) -> None:
    """Write a training state atomically (temp file + rename), tensors moved to the CPU."""
    def cpu(sd: dict) -> dict:
        return {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in sd.items()}

    atomic_save({
        "format": STATE_FORMAT, "mrfa_version": __version__, "config": config,
        "model": cpu(model.state_dict()),
        "optimizers": {k: v.state_dict() for k, v in optimizers.items()},
        "schedulers": {k: v.state_dict() for k, v in schedulers.items()},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "discriminator": None if discriminator is None else cpu(discriminator.state_dict()),
        "progress": dict(progress), "rng": rng,
    }, path, overwrite=True)  # the run's own state, rewritten at every save
