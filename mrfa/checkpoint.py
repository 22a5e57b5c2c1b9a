"""Checkpoints: our inference snapshots, our training states, and the official MRFA format.

* snapshot  ``{'format': 'mrfa-snapshot/1', 'config': {...}, 'model': state_dict, 'mrfa_version'}``
* training state ``{'format': 'mrfa-state/1', 'config', 'model', 'optimizer', ..., 'step', 'epoch', 'rng'}``
* official  ``{'model': DDP(MRFA).state_dict() ('module.' prefix), 'optimizer', 'epoch'}`` or a bare state_dict.

Everything is read with ``torch.load(weights_only=True)`` and written atomically (temp file + rename).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from . import __version__
from .config import ExperimentConfig, ModelConfig, config_from_dict, config_to_dict
from .official import is_official_state, official_to_ours, strip_module_prefix

SNAPSHOT_FORMAT = "mrfa-snapshot/1"
STATE_FORMAT = "mrfa-state/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the file."""


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict:
    """Load a checkpoint file safely (weights only); one clear error when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a dict of weights (got {type(obj).__name__})")
    return obj


def save_snapshot(path: str | Path, model: torch.nn.Module, config: ExperimentConfig, **extra: Any) -> None:
    """Inference snapshot: weights + the resolved config (enough to rebuild the model)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"format": SNAPSHOT_FORMAT, "mrfa_version": __version__, "config": config_to_dict(config),
                 "model": state, **extra}, path)


def infer_official_config(state: dict) -> ExperimentConfig:
    """Official checkpoints carry no config: read the variant from the key names (shapes checked on load)."""
    keys = strip_module_prefix(state).keys()
    model = ModelConfig()
    if any(k.startswith("encoder.predictor.") for k in keys):
        model.prior = "fomm"
    elif any(k.startswith("encoder.fg_encoder.") for k in keys):
        model.prior = "tpsm"
    model.background = any(k.startswith("bg_predictor.") for k in keys)
    model.refinement.prior_only = not any(k.startswith("decoder.corr_enc.") for k in keys)
    return ExperimentConfig(model=model)


def _describe_mismatch(path: Path, missing: list[str], unexpected: list[str], shapes: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:5])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:5])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (first: {'; '.join(shapes[:3])})")
    return f"{path} does not fit the MRFA model: " + ", ".join(parts)


def load_state_strict(model: torch.nn.Module, state: dict, path: Path) -> None:
    """Load ``state`` into ``model``; every key must match in name and shape (one clear error otherwise)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(_describe_mismatch(path, missing, unexpected, shapes))
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, *, config: Optional[ExperimentConfig] = None, map_location: Any = "cpu"):
    """Build an MRFA model from a checkpoint of ours or of the official code; returns it in eval mode.

    Args:
        path: snapshot, training state, official ``{'model': ...}`` file or bare official state_dict.
        config: the config to build with (required only for official checkpoints of non-default sizes;
            otherwise it comes from the file or is inferred from the official key names).

    Returns:
        the model (``model.config`` holds the ExperimentConfig it was built from).
    """
    from .builders import build_model

    path = Path(path)
    obj = read_checkpoint(path, map_location)
    fmt = obj.get("format")
    if fmt in (SNAPSHOT_FORMAT, STATE_FORMAT):
        cfg = config or config_from_dict(obj["config"], f"{path} (embedded config)")
        state = obj["model"]
    else:
        state = obj.get("model", obj) if isinstance(obj.get("model", obj), dict) else obj
        if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
            raise CheckpointError(f"{path} is not an MRFA checkpoint (no 'model' state_dict of tensors; "
                                  f"top-level keys: {list(obj)[:8]})")
        if not is_official_state(state):
            raise CheckpointError(f"{path} is not an MRFA checkpoint: none of its keys look like MRFA weights "
                                  f"(first keys: {list(state)[:5]})")
        state, unknown = official_to_ours(state)
        if unknown:
            raise CheckpointError(f"{path}: {len(unknown)} official keys have no counterpart in MRFA "
                                  f"(first: {', '.join(unknown[:5])})")
        cfg = config or infer_official_config(obj.get("model", obj))
    model = build_model(cfg)
    load_state_strict(model, state, path)
    model.eval()
    return model


def convert_official(src: str | Path, dst: str | Path, config: Optional[ExperimentConfig] = None) -> ExperimentConfig:
    """Convert an official checkpoint into our snapshot format; returns the config written."""
    model = load_checkpoint(src, config=config)
    save_snapshot(dst, model, model.config, converted_from=str(src))
    return model.config
